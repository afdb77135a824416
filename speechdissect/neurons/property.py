"""Group neurons and property neurons (Lin et al., 2024, Sec. 3.2 and 4.1).

For a group ``g`` of rows of an activation-probability table (e.g. the vowel
phones, or the phone x male rows) a neuron is *meaningful* for row ``i`` when
its activation probability exceeds the chance level ``tau / d_ffn``. Its
*score* in ``g`` is the fraction of ``g``'s rows for which it is meaningful;
the *group neurons* of ``g`` are those with score >= ``sigma`` (0.8). The
*property neurons* of a property (phone type, gender, pitch) are the union over
its groups of the group neurons that are group neurons of no other group of
the same property.

Conventions
-----------
* ``p > baseline`` is strict; ``score >= sigma`` is inclusive (with a 1e-9
  tolerance so that e.g. 4/5 counts for sigma = 0.8), and a group neuron must
  be meaningful in at least one of the group's rows (``score > 0``): with a
  ``sigma`` at or below the tolerance, a neuron meaningful nowhere in a group,
  or any neuron of a group without rows, would otherwise count.
* The baseline defaults to ``tau / d_ffn`` with ``tau = round(fraction *
  d_ffn)`` (half up), the same ``tau`` the probabilities were computed with.
* Rows whose group is not one of the property's groups (e.g. a phone of class
  ``silence``) are ignored. A group with no rows has score 0 everywhere and so
  no group neurons (a warning is issued).
* Layers are whatever keys the caller uses (0-based encoder layers in the
  cache).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .probability import ACTIVE_FRACTION, chance_level

SIGMA: float = 0.8
"""Minimum share of a group's rows in which a neuron must be meaningful to be a group neuron."""

_TOL = 1e-9


@dataclass(frozen=True)
class PropertySpec:
    """Where a property's rows live and how they split into groups.

    Attributes
    ----------
    name
        Property name (``phone_type``, ``gender``, ``pitch``).
    condition
        Probability table (condition) whose rows are used.
    group_col
        Column of that table's row index holding the group of each row.
    groups
        The property's groups, in display order.
    """

    name: str
    condition: str
    group_col: str
    groups: tuple[str, ...]


PROPERTIES: dict[str, PropertySpec] = {
    "phone_type": PropertySpec("phone_type", "phone", "phone_class", ("vowel", "voiced", "unvoiced")),
    "gender": PropertySpec("gender", "phone_gender", "condition", ("M", "F")),
    "pitch": PropertySpec("pitch", "phone_pitch", "condition", ("low", "mid", "high")),
}
"""The three properties of the paper; add a :class:`PropertySpec` here to study another."""

GROUP_LABELS: dict[str, str] = {
    "vowel": "vowels",
    "voiced": "voiced consonants",
    "unvoiced": "unvoiced consonants",
    "M": "male",
    "F": "female",
    "low": "low pitch",
    "mid": "mid pitch",
    "high": "high pitch",
}
"""Display names of the groups for figures."""


def get_property(prop: str | PropertySpec) -> PropertySpec:
    """Look a property up by name (or pass a spec through)."""
    if isinstance(prop, PropertySpec):
        return prop
    try:
        return PROPERTIES[prop]
    except KeyError:
        raise ValueError(f"unknown property {prop!r}; known: {sorted(PROPERTIES)}") from None


@dataclass
class PropertyNeurons:
    """Group and property neurons of one property in one layer (boolean masks over ``d_ffn``).

    Attributes
    ----------
    name
        Property name.
    scores
        Group -> ``[d_ffn]`` share of the group's rows where the neuron is meaningful.
    group
        Group -> group-neuron mask (score >= sigma).
    unique
        Group -> property neurons contributed by that group (group neurons of
        no other group of the property).
    n_rows
        Group -> number of rows the score was computed over.
    """

    name: str
    scores: dict[str, np.ndarray]
    group: dict[str, np.ndarray]
    unique: dict[str, np.ndarray]
    n_rows: dict[str, int] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """All property neurons of this property (union over groups of ``unique``)."""
        return _union(self.unique.values(), self._d)

    @property
    def any_group(self) -> np.ndarray:
        """Neurons that are group neurons of at least one group."""
        return _union(self.group.values(), self._d)

    @property
    def _d(self) -> int:
        return len(next(iter(self.scores.values()))) if self.scores else 0

    def sets(self) -> dict[str, set[int]]:
        """Group -> set of property-neuron indices, plus ``'all'`` for the union."""
        out = {g: set(np.flatnonzero(m).tolist()) for g, m in self.unique.items()}
        out["all"] = set(np.flatnonzero(self.mask).tolist())
        return out


def _union(masks: Iterable[np.ndarray], d: int) -> np.ndarray:
    out = np.zeros(d, dtype=bool)
    for m in masks:
        out |= m
    return out


def meaningful(probs: np.ndarray, baseline: float) -> np.ndarray:
    """``[n_rows, d_ffn]`` mask of neurons more likely than chance to fire for each row (``p > baseline``)."""
    return np.asarray(probs) > baseline


def group_scores(
    probs: np.ndarray,
    index: pd.DataFrame,
    prop: str | PropertySpec,
    baseline: float | None = None,
    fraction: float = ACTIVE_FRACTION,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Score of every neuron in every group of a property: share of the group's rows where it is meaningful.

    Parameters
    ----------
    probs, index
        Probability table of the property's condition and its row index.
    prop
        Property name or spec.
    baseline
        Chance level; default ``tau / d_ffn`` from ``fraction``.
    fraction
        Active fraction used to compute ``tau``.

    Returns
    -------
    scores, n_rows
        Group -> ``[d_ffn]`` float32 scores; group -> row count.
    """
    spec = get_property(prop)
    probs = np.asarray(probs)
    if len(index) != probs.shape[0]:
        raise ValueError(f"row index has {len(index)} rows but the probability table {probs.shape[0]}")
    if spec.group_col not in index.columns:
        raise ValueError(f"row index lacks column {spec.group_col!r} needed by property {spec.name!r}")
    d = probs.shape[1]
    base = chance_level(d, fraction) if baseline is None else float(baseline)
    labels = index[spec.group_col].astype(str).to_numpy()
    scores, n_rows = {}, {}
    for g in spec.groups:
        rows = labels == g
        n = int(rows.sum())
        n_rows[g] = n
        if n == 0:
            warnings.warn(f"property {spec.name!r}: group {g!r} has no rows in the {spec.condition!r} table; it gets no group neurons", stacklevel=2)
            scores[g] = np.zeros(d, dtype=np.float32)
        else:
            scores[g] = (meaningful(probs[rows], base).sum(axis=0) / n).astype(np.float32)
    return scores, n_rows


def unique_neurons(group: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per group, its group neurons that are group neurons of no other group (of the same property)."""
    out = {}
    for g, m in group.items():
        others = [o for h, o in group.items() if h != g]
        out[g] = m & ~_union(others, len(m))
    return out


def property_neurons(
    probs: np.ndarray,
    index: pd.DataFrame,
    prop: str | PropertySpec,
    sigma: float = SIGMA,
    baseline: float | None = None,
    fraction: float = ACTIVE_FRACTION,
) -> PropertyNeurons:
    """Group and property neurons of one property in one layer.

    Parameters
    ----------
    probs, index
        Probability table of the property's condition (``PROPERTIES[prop].condition``).
    prop
        Property name or spec.
    sigma
        Group-neuron threshold on the score.
    baseline, fraction
        See :func:`group_scores`.
    """
    spec = get_property(prop)
    scores, n_rows = group_scores(probs, index, spec, baseline=baseline, fraction=fraction)
    group = {g: (s > 0) & (s >= sigma - _TOL) for g, s in scores.items()}
    return PropertyNeurons(spec.name, scores, group, unique_neurons(group), n_rows)


def find_property_neurons(
    tables: Mapping[str, tuple[np.ndarray, pd.DataFrame]],
    properties: Sequence[str | PropertySpec] = tuple(PROPERTIES),
    sigma: float = SIGMA,
    baseline: float | None = None,
    fraction: float = ACTIVE_FRACTION,
) -> dict[str, PropertyNeurons]:
    """All properties of one layer from its probability tables (condition -> ``(probs, index)``)."""
    out = {}
    for p in properties:
        spec = get_property(p)
        if spec.condition not in tables:
            raise ValueError(f"property {spec.name!r} needs the {spec.condition!r} probability table; compute it with conditions including {spec.condition!r}")
        probs, index = tables[spec.condition]
        out[spec.name] = property_neurons(probs, index, spec, sigma=sigma, baseline=baseline, fraction=fraction)
    return out


def layer_property_neurons(
    layer_tables: Mapping[int, Mapping[str, tuple[np.ndarray, pd.DataFrame]]],
    **kwargs,
) -> dict[int, dict[str, PropertyNeurons]]:
    """:func:`find_property_neurons` for every layer (layer -> condition -> ``(probs, index)``)."""
    return {layer: find_property_neurons(tables, **kwargs) for layer, tables in layer_tables.items()}


def property_masks(
    results: Mapping[int, Mapping[str, PropertyNeurons]],
    properties: str | Sequence[str],
    group: str | None = None,
) -> dict[int, np.ndarray]:
    """Layer -> mask of the property neurons of one or several properties (union).

    Why: the input of model editing (remove the gender neurons) and of
    protected pruning (protect all property neurons).

    Parameters
    ----------
    results
        Output of :func:`layer_property_neurons`.
    properties
        Property name(s).
    group
        Only the property neurons contributed by this group (e.g. ``'F'``).
    """
    props = [properties] if isinstance(properties, str) else list(properties)
    out = {}
    for layer, res in results.items():
        masks = []
        for p in props:
            if p not in res:
                raise ValueError(f"layer {layer} has no results for property {p!r}; have {sorted(res)}")
            masks.append(res[p].unique[group] if group is not None else res[p].mask)
        out[layer] = _union(masks, len(masks[0]) if masks else 0)
    return out


def neuron_table(results: Mapping[int, Mapping[str, PropertyNeurons]]) -> pd.DataFrame:
    """Tidy list of every group neuron: layer, property, group, neuron, score, is_property.

    Why: the per-neuron record behind the counts, written as a TSV output.
    """
    recs = []
    for layer, res in results.items():
        for name, pn in res.items():
            for g, m in pn.group.items():
                for j in np.flatnonzero(m):
                    recs.append((layer, name, g, int(j), float(pn.scores[g][j]), bool(pn.unique[g][j])))
    return pd.DataFrame.from_records(recs, columns=["layer", "property", "group", "neuron", "score", "is_property"])


def to_json(results: Mapping[int, Mapping[str, PropertyNeurons]]) -> dict:
    """JSON-ready ``{layer: {property: {"group": {g: [...]}, "property": {g: [...]}, "all": [...]}}}``."""
    out: dict = {}
    for layer, res in results.items():
        out[str(layer)] = {
            name: {
                "group": {g: np.flatnonzero(m).tolist() for g, m in pn.group.items()},
                "property": {g: np.flatnonzero(m).tolist() for g, m in pn.unique.items()},
                "all": np.flatnonzero(pn.mask).tolist(),
                "n_rows": dict(pn.n_rows),
            }
            for name, pn in res.items()
        }
    return out


def masks_from_json(data: Mapping, d_ffn: int | Mapping[int, int], properties: str | Sequence[str], group: str | None = None) -> dict[int, np.ndarray]:
    """Rebuild layer -> boolean mask of property neurons from :func:`to_json` output."""
    props = [properties] if isinstance(properties, str) else list(properties)
    out = {}
    for layer, res in data.items():
        d = d_ffn[int(layer)] if isinstance(d_ffn, Mapping) else int(d_ffn)
        m = np.zeros(d, dtype=bool)
        for p in props:
            m[np.asarray(res[p]["property"][group] if group is not None else res[p]["all"], dtype=np.int64)] = True
        out[int(layer)] = m
    return out


def summary_counts(results: Mapping[int, Mapping[str, PropertyNeurons]]) -> pd.DataFrame:
    """Counts per layer: group neurons and property neurons per group, and property totals.

    Returns
    -------
    pandas.DataFrame
        Columns ``layer, property, group, n_rows, n_group_neurons,
        n_property_neurons``; ``group == 'all'`` rows give the union over the
        property's groups.
    """
    recs = []
    for layer, res in results.items():
        for name, pn in res.items():
            for g in pn.group:
                recs.append((layer, name, g, pn.n_rows.get(g, 0), int(pn.group[g].sum()), int(pn.unique[g].sum())))
            recs.append((layer, name, "all", sum(pn.n_rows.values()), int(pn.any_group.sum()), int(pn.mask.sum())))
    return pd.DataFrame.from_records(recs, columns=["layer", "property", "group", "n_rows", "n_group_neurons", "n_property_neurons"])


def overlap_table(masks: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Pairwise overlaps of named neuron sets: sizes, intersection, union and Jaccard index.

    Jaccard is NaN when both sets are empty.
    """
    recs = []
    for (a, ma), (b, mb) in itertools.combinations(masks.items(), 2):
        inter = int(np.sum(ma & mb))
        union = int(np.sum(ma | mb))
        recs.append((a, b, int(ma.sum()), int(mb.sum()), inter, union, inter / union if union else float("nan")))
    return pd.DataFrame.from_records(recs, columns=["a", "b", "n_a", "n_b", "intersection", "union", "jaccard"])


def summary_overlaps(results: Mapping[int, Mapping[str, PropertyNeurons]], level: str = "property") -> pd.DataFrame:
    """Pairwise overlaps per layer between properties' neuron sets (``level='property'``) or between all
    group-neuron sets across properties (``level='group'``, named ``property:group``)."""
    if level not in ("property", "group"):
        raise ValueError(f"level must be 'property' or 'group', got {level!r}")
    frames = []
    for layer, res in results.items():
        if level == "property":
            masks = {name: pn.mask for name, pn in res.items()}
        else:
            masks = {f"{name}:{g}": m for name, pn in res.items() for g, m in pn.group.items()}
        t = overlap_table(masks)
        t.insert(0, "layer", layer)
        frames.append(t)
    if not frames:
        return pd.DataFrame(columns=["layer", "a", "b", "n_a", "n_b", "intersection", "union", "jaccard"])
    return pd.concat(frames, ignore_index=True)
