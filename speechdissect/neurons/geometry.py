"""Layer-wise MDS maps and silhouette scores of the phone rows' neuron vectors.

Each row of a probability table (a phone, or a phone under a gender / pitch
condition) is a point. As in Lin et al. (2024), its coordinates are by default
the *binary* vector ``1[p > baseline]`` (the neuron is more likely than chance,
``baseline = tau / d_ffn``, to fire for the row) over the neurons of a neuron
set (all neurons, or e.g. the property neurons) that pass the baseline in at
least one of the mapped rows. ``representation='probability'`` uses the
activation probabilities themselves over the whole neuron set instead. The
points are shown with MDS, coloured by group, and the silhouette score
measures how well the groups separate.

Conventions
-----------
* Distances are Euclidean between the row vectors; metric MDS (SMACOF) runs
  on those precomputed distances with ``random_state=seed``, ``init='random'``
  and ``n_init`` restarts, on one thread: the same inputs give the same map.
* The MDS map is then put in a canonical pose (centred, rotated onto its
  principal axes, each axis flipped so that the first row's coordinate is
  >= 0) so that maps of different layers are drawn comparably. Pose does not
  change distances or silhouettes.
* Two silhouettes are reported: ``silhouette_mds`` on the 2-D MDS points (the
  paper's score) and ``silhouette_vectors`` in the space of the row vectors
  themselves (binary or probability). They are NaN when undefined (fewer than
  2 groups, every row its own group, or no neuron left).
* ``n_neurons`` is the number of coordinates (binary: neurons of the set above
  chance in some row), ``n_set`` the size of the neuron set.
* Rows whose group is not one of the property's groups (e.g. silence) are
  left out before anything is computed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.manifold import MDS
from sklearn.metrics import pairwise_distances, silhouette_score
from tqdm.auto import tqdm

from .property import PROPERTIES, PropertySpec, get_property, meaningful

REPRESENTATIONS: tuple[str, ...] = ("binary", "probability")
"""Row vectors the maps are made of: ``1[p > baseline]`` (the paper's) or ``p``."""


def restrict(probs: np.ndarray, neurons: np.ndarray | None) -> np.ndarray:
    """Columns of ``probs`` for a neuron set (boolean mask or indices; None = all)."""
    probs = np.asarray(probs, dtype=np.float64)
    if neurons is None:
        return probs
    neurons = np.asarray(neurons)
    cols = np.flatnonzero(neurons) if neurons.dtype == bool else neurons.astype(np.int64)
    return probs[:, cols]


def row_vectors(
    probs: np.ndarray,
    neurons: np.ndarray | None = None,
    representation: str = "binary",
    baseline: float | None = None,
) -> np.ndarray:
    """The rows' coordinates: binary ``1[p > baseline]`` over the set's neurons above chance in any row, or ``p``.

    Parameters
    ----------
    probs
        ``[n_rows, d_ffn]`` activation probabilities.
    neurons
        Neuron set (boolean mask or indices); None = all neurons.
    representation
        ``'binary'`` (default, Lin et al.) or ``'probability'``.
    baseline
        Chance level ``tau / d_ffn``; required for ``'binary'``.

    Returns
    -------
    numpy.ndarray
        ``[n_rows, n_coordinates]`` float64.
    """
    x = restrict(probs, neurons)
    if representation == "probability":
        return x
    if representation != "binary":
        raise ValueError(f"unknown representation {representation!r}; choose from {REPRESENTATIONS}")
    if baseline is None:
        raise ValueError("the binary representation needs baseline= (the chance level tau / d_ffn)")
    b = meaningful(x, baseline)
    return b[:, b.any(axis=0)].astype(np.float64)


def _mds_kwargs(n_components: int, seed: int, n_init: int, max_iter: int) -> dict:
    """Constructor arguments for precomputed metric MDS across scikit-learn versions (1.8 renamed them)."""
    params = inspect.signature(MDS.__init__).parameters
    kw = dict(n_components=n_components, n_init=n_init, max_iter=max_iter, random_state=seed, n_jobs=1)
    if "metric_mds" in params:
        kw.update(metric_mds=True, metric="precomputed")
    else:
        kw.update(metric=True, dissimilarity="precomputed")
    if "init" in params:
        kw["init"] = "random"
    if "normalized_stress" in params:
        kw["normalized_stress"] = False
    return kw


def _canonical(y: np.ndarray) -> np.ndarray:
    """Centre, rotate onto principal axes and fix signs (first row >= 0) so poses are comparable."""
    y = y - y.mean(axis=0, keepdims=True)
    if len(y) > 1:
        _, _, vt = np.linalg.svd(y, full_matrices=False)
        y = y @ vt.T
    for j in range(y.shape[1]):
        nz = np.flatnonzero(np.abs(y[:, j]) > 1e-12)
        if nz.size and y[nz[0], j] < 0:
            y[:, j] = -y[:, j]
    return y


def mds_embedding(
    probs: np.ndarray,
    neurons: np.ndarray | None = None,
    n_components: int = 2,
    seed: int = 0,
    n_init: int = 4,
    max_iter: int = 300,
) -> tuple[np.ndarray, float]:
    """Metric MDS map of row vectors (Euclidean distances), optionally restricted to a neuron set.

    Parameters
    ----------
    probs
        ``[n_rows, n_features]`` row vectors (see :func:`row_vectors`).
    neurons
        Column subset (boolean mask or indices); None = all columns.
    n_components
        Map dimensions.
    seed, n_init, max_iter
        SMACOF settings (``random_state``, restarts, iterations).

    Returns
    -------
    coords, stress
        ``[n_rows, n_components]`` canonical-pose coordinates (NaN for an
        empty neuron set or fewer than 2 rows) and the raw stress.
    """
    x = restrict(probs, neurons)
    n = x.shape[0]
    if x.shape[1] == 0 or n < 2:
        return np.full((n, n_components), np.nan), float("nan")
    dist = pairwise_distances(x, metric="euclidean")
    if not np.any(dist > 0):
        return np.zeros((n, n_components)), 0.0
    mds = MDS(**_mds_kwargs(n_components, seed, n_init, max_iter))
    y = mds.fit_transform(dist)
    return _canonical(np.asarray(y, dtype=np.float64)), float(mds.stress_)


def silhouette(x: np.ndarray, labels: Sequence, metric: str = "euclidean") -> float:
    """Silhouette score of ``labels`` in space ``x``; NaN when it is undefined."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if x.ndim != 2 or x.shape[1] == 0 or not 2 <= n_labels <= len(labels) - 1 or not np.all(np.isfinite(x)):
        return float("nan")
    return float(silhouette_score(x, labels, metric=metric))


def row_groups(index: pd.DataFrame, prop: str | PropertySpec) -> np.ndarray:
    """Group of every row of a property's probability table (``None`` for rows outside its groups)."""
    spec = get_property(prop)
    g = index[spec.group_col].astype(str).to_numpy(dtype=object)
    return np.where(np.isin(g, list(spec.groups)), g, None)


def layer_geometry(
    probs: np.ndarray,
    index: pd.DataFrame,
    prop: str | PropertySpec = "phone_type",
    neurons: np.ndarray | None = None,
    seed: int = 0,
    n_components: int = 2,
    n_init: int = 4,
    max_iter: int = 300,
    representation: str = "binary",
    baseline: float | None = None,
) -> tuple[pd.DataFrame, dict]:
    """MDS map and silhouettes of one property's rows in one layer.

    Parameters
    ----------
    probs, index
        Probability table of the property's condition (``PROPERTIES[prop].condition``).
    prop
        Property whose groups colour the rows and define the silhouette.
    neurons
        Neuron set (mask or indices); None = all neurons.
    seed, n_components, n_init, max_iter
        MDS settings (see :func:`mds_embedding`).
    representation, baseline
        Row vectors (see :func:`row_vectors`); ``baseline`` (= ``tau / d_ffn``)
        is required for the default ``'binary'``.

    Returns
    -------
    coords, scores
        The kept rows of ``index`` plus ``group`` and ``mds_1..mds_n``;
        a dict with ``representation, n_rows, n_set, n_neurons, stress,
        silhouette_mds, silhouette_vectors``.
    """
    spec = get_property(prop)
    groups = row_groups(index, spec)
    keep = np.array([g is not None for g in groups], dtype=bool)
    p = np.asarray(probs)[keep]
    labels = groups[keep].astype(str)
    n_set = restrict(p[:1], neurons).shape[1]
    x = row_vectors(p, neurons, representation=representation, baseline=baseline)
    coords, stress = mds_embedding(x, n_components=n_components, seed=seed, n_init=n_init, max_iter=max_iter)
    out = index[keep].reset_index(drop=True)
    out["group"] = labels
    for j in range(n_components):
        out[f"mds_{j + 1}"] = coords[:, j]
    scores = {
        "representation": representation,
        "n_rows": int(keep.sum()),
        "n_set": int(n_set),
        "n_neurons": int(x.shape[1]),
        "stress": stress,
        "silhouette_mds": silhouette(coords, labels),
        "silhouette_vectors": silhouette(x, labels),
    }
    return out, scores


def geometry_tables(
    layer_tables: Mapping[int, Mapping[str, tuple[np.ndarray, pd.DataFrame]]],
    properties: Sequence[str | PropertySpec] = tuple(PROPERTIES),
    neuron_sets: Mapping[str, Mapping[int, np.ndarray] | None] | None = None,
    seed: int = 0,
    progress: bool = True,
    **kwargs,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MDS coordinates and silhouettes for every layer x property x neuron set.

    Parameters
    ----------
    layer_tables
        Layer -> condition -> ``(probs, index)`` (see
        :func:`~speechdissect.neurons.probability.layer_probabilities`).
    properties
        Properties to map.
    neuron_sets
        Name -> (layer -> neuron mask), or name -> None for all neurons.
        Default ``{"all": None}``.
    seed
        MDS seed.
    progress
        Show a tqdm bar over layers.
    **kwargs
        Passed to :func:`layer_geometry` (``n_components``, ``n_init``, ``max_iter``,
        ``representation``, ``baseline``).

    Returns
    -------
    coords, scores
        Tidy tables with ``layer, property, neuron_set`` leading columns.
    """
    neuron_sets = {"all": None} if neuron_sets is None else neuron_sets
    coord_frames, recs = [], []
    for layer, tables in tqdm(layer_tables.items(), desc="MDS per layer", disable=not progress):
        for p in properties:
            spec = get_property(p)
            if spec.condition not in tables:
                raise ValueError(f"property {spec.name!r} needs the {spec.condition!r} probability table of layer {layer}")
            probs, index = tables[spec.condition]
            for set_name, by_layer in neuron_sets.items():
                neurons = None if by_layer is None else by_layer[layer]
                coords, scores = layer_geometry(probs, index, spec, neurons=neurons, seed=seed, **kwargs)
                lead = {"layer": layer, "property": spec.name, "neuron_set": set_name}
                coords = pd.concat([pd.DataFrame(lead, index=coords.index), coords], axis=1)
                coord_frames.append(coords)
                recs.append(lead | scores)
    coords = pd.concat(coord_frames, ignore_index=True) if coord_frames else pd.DataFrame()
    return coords, pd.DataFrame.from_records(recs)
