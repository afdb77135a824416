"""Activation probabilities of FFN neurons per phone and condition, streamed over a memory-mapped cache.

A neuron is *activated* at a frame when its absolute activation is among the
``tau`` largest of its layer at that frame (Lin et al., 2024, Sec. 3.2). The
activation probability of neuron ``j`` for a row (a phone, or a phone under a
condition) is the fraction of that row's sampled frames in which ``j`` is
activated. Only the sampled frames (one per phone segment, see
:mod:`speechdissect.neurons.sampling`) are read, in sorted row order and in
chunks, so memory stays flat however large the cache is.

Conventions
-----------
* ``tau = max(1, floor(fraction * d_ffn + 0.5))`` (round half up; 31 of 3072
  at 1 %). The chance level of a neuron is ``tau / d_ffn``.
* Ties at the ``tau``-th largest absolute value are broken towards the *lower
  neuron index*, so exactly ``tau`` neurons are activated in every frame and
  the result does not depend on chunking or on ``np.argpartition``'s order.
* NaN activations are never activated (treated as -1 after ``abs``).
* Activations are upcast to float32 chunk by chunk before ``abs``.
* Conditions: ``phone`` (one row per phone), ``phone_gender`` (phone x
  ``gender``), ``phone_pitch`` (phone x ``pitch_group``). A sampled frame whose
  condition key is empty (unvoiced pitch, unknown gender) is left out of that
  condition only.
* Rows are ordered by condition value (F, M, low, mid, high, then others
  alphabetically), then phone class (vowel, voiced, unvoiced, silence), then
  phone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

ACTIVE_FRACTION: float = 0.01
"""Share of a layer's neurons counted as activated in each frame (tau / d_ffn)."""

CONDITIONS: dict[str, str | None] = {
    "phone": None,
    "phone_gender": "gender",
    "phone_pitch": "pitch_group",
}
"""Condition name -> column of the sample table crossed with the phone (None: phone only)."""

VALUE_ORDER: tuple[str, ...] = ("F", "M", "low", "mid", "high")
CLASS_ORDER: tuple[str, ...] = ("vowel", "voiced", "unvoiced", "silence")
INDEX_COLUMNS: tuple[str, ...] = ("condition_type", "condition", "phone", "phone_class", "count")

ArrayLike = np.ndarray | str | PathLike


def n_active(d_ffn: int, fraction: float = ACTIVE_FRACTION) -> int:
    """Number of neurons activated per frame, ``tau = round(fraction * d_ffn)`` (half up, at least 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"active fraction must be in (0, 1], got {fraction}")
    return max(1, int(np.floor(fraction * d_ffn + 0.5)))


def chance_level(d_ffn: int, fraction: float = ACTIVE_FRACTION) -> float:
    """Activation probability of a neuron if every neuron were equally likely: ``tau / d_ffn``."""
    return n_active(d_ffn, fraction) / d_ffn


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest absolute values of each row, sorted ascending per row.

    Why: the activated set must be exactly ``k`` neurons and reproducible, so
    ties at the ``k``-th value go to the lower neuron index (``np.argpartition``
    alone picks an arbitrary tied neuron).

    Parameters
    ----------
    x
        ``[n, d]`` activations (any float dtype).
    k
        Neurons per row, ``1 <= k <= d``.

    Returns
    -------
    numpy.ndarray
        ``[n, k]`` int64 neuron indices.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D [frames, neurons] array, got shape {x.shape}")
    n, d = x.shape
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, {d}], got {k}")
    if n == 0:
        return np.empty((0, k), dtype=np.int64)
    a = np.abs(x, dtype=np.float32)
    nan = np.isnan(a)
    if nan.any():
        a[nan] = -1.0
    if k == d:
        return np.broadcast_to(np.arange(d, dtype=np.int64), (n, d)).copy()
    idx = np.argpartition(a, d - k, axis=1)[:, d - k :]
    kth = np.take_along_axis(a, idx, axis=1).min(axis=1)
    tied = (a >= kth[:, None]).sum(axis=1) > k
    if tied.any():
        sub, v = a[tied], kth[tied][:, None]
        gt = sub > v
        eq = sub == v
        need = k - gt.sum(axis=1, keepdims=True)
        sel = gt | (eq & (np.cumsum(eq, axis=1) <= need))
        idx[tied] = np.nonzero(sel)[1].reshape(-1, k)
    idx.sort(axis=1)
    return idx.astype(np.int64, copy=False)


def topk_mask(x: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``[n, d]`` mask of the activated neurons (see :func:`topk_indices`)."""
    x = np.asarray(x)
    idx = topk_indices(x, k)
    mask = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def _open(acts: ArrayLike) -> np.ndarray:
    """Accept an array or a path to a ``.npy`` file, which is memory-mapped read-only."""
    if isinstance(acts, (str, PathLike)):
        return np.load(acts, mmap_mode="r")
    return acts


def activation_counts(
    acts: ArrayLike,
    rows: np.ndarray,
    codes: Mapping[str, np.ndarray],
    n_groups: Mapping[str, int],
    k: int,
    chunk_size: int = 1024,
    progress: bool = True,
    desc: str = "activation counts",
) -> dict[str, np.ndarray]:
    """Count, per group, how often each neuron is activated, in one streaming pass over ``rows``.

    Why: one read of the (large) layer serves every grouping; rows are read
    in sorted order so that a memory map touches each page at most once.

    Parameters
    ----------
    acts
        ``[n_frames, d_ffn]`` array or memory map (or path to a ``.npy``).
    rows
        Activation rows to read (any order, duplicates allowed).
    codes
        Grouping name -> ``[len(rows)]`` int group code per row, -1 = excluded.
    n_groups
        Grouping name -> number of groups.
    k
        Activated neurons per frame.
    chunk_size
        Rows gathered per read; peak extra memory is about ``20 * d_ffn``
        bytes per row (float32 copy, top-k workspace), ~60 MB at 1024 x 3072.
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        Grouping name -> ``[n_groups, d_ffn]`` int64 counts.
    """
    acts = _open(acts)
    d = acts.shape[1]
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= acts.shape[0]):
        raise ValueError(f"sampled rows outside [0, {acts.shape[0]}): label table and activation cache are not aligned")
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    sorted_codes = {name: np.asarray(c, dtype=np.int64)[order] for name, c in codes.items()}
    counts = {name: np.zeros(n_groups[name] * d, dtype=np.int64) for name in codes}
    chunk_size = max(1, int(chunk_size))
    with tqdm(total=len(rows), desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for lo in range(0, len(rows), chunk_size):
            hi = min(lo + chunk_size, len(rows))
            chunk = np.asarray(acts[rows[lo:hi]])
            idx = topk_indices(chunk, k)
            for name, c in sorted_codes.items():
                cc = c[lo:hi]
                ok = cc >= 0
                if not ok.any():
                    continue
                flat = (cc[ok, None] * d + idx[ok]).ravel()
                counts[name] += np.bincount(flat, minlength=n_groups[name] * d)
            bar.update(hi - lo)
    return {name: c.reshape(n_groups[name], d) for name, c in counts.items()}


def _value_key(v: str) -> tuple[int, str]:
    return (VALUE_ORDER.index(v) if v in VALUE_ORDER else len(VALUE_ORDER), v)


def _class_key(v: str) -> tuple[int, str]:
    return (CLASS_ORDER.index(v) if v in CLASS_ORDER else len(CLASS_ORDER), v)


def _clean(values: pd.Series) -> np.ndarray:
    """Strings with missing values as ''."""
    return values.astype(object).where(values.notna(), "").astype(str).to_numpy(dtype=object)


_BY_NAME = object()


def condition_groups(sample: pd.DataFrame, condition: str, column: str | None | object = _BY_NAME) -> tuple[np.ndarray, pd.DataFrame]:
    """Assign each sampled frame to its row (phone, or phone x condition value).

    Parameters
    ----------
    sample
        Output of :func:`~speechdissect.neurons.sampling.sample_middle_frames`.
    condition
        Condition name; its column is ``column`` or ``CONDITIONS[condition]``.
    column
        Sample column crossed with the phone (None: phone only); by default
        looked up in :data:`CONDITIONS`.

    Returns
    -------
    codes, index
        ``[len(sample)]`` row code per frame (-1 = excluded because the
        condition value is empty) and the row index with columns
        ``condition_type, condition, phone, phone_class, count``.
    """
    if column is _BY_NAME:
        if condition not in CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; known: {sorted(CONDITIONS)} (or pass its column)")
        column = CONDITIONS[condition]
    phone = _clean(sample["phone"])
    value = np.full(len(sample), "", dtype=object) if column is None else _clean(sample[column])
    if "phone_class" in sample.columns:
        pclass = _clean(sample["phone_class"])
    else:
        pclass = np.full(len(sample), "", dtype=object)
    valid = phone != ""
    if column is not None:
        valid &= value != ""
    phone_class = {}
    for p, c in zip(phone, pclass):
        phone_class.setdefault(p, c)
    keys = sorted(
        {(v, p) for v, p, ok in zip(value, phone, valid) if ok},
        key=lambda vp: (_value_key(vp[0]), _class_key(phone_class[vp[1]]), vp[1]),
    )
    lookup = {key: i for i, key in enumerate(keys)}
    codes = np.array([lookup[(v, p)] if ok else -1 for v, p, ok in zip(value, phone, valid)], dtype=np.int64)
    count = np.bincount(codes[codes >= 0], minlength=len(keys))
    index = pd.DataFrame(
        {
            "condition_type": condition,
            "condition": [v for v, _ in keys],
            "phone": [p for _, p in keys],
            "phone_class": [phone_class[p] for _, p in keys],
            "count": count.astype(np.int64),
        },
        columns=list(INDEX_COLUMNS),
    )
    return codes, index


def activation_probabilities(
    acts: ArrayLike,
    sample: pd.DataFrame,
    conditions: Sequence[str] | Mapping[str, str | None] = tuple(CONDITIONS),
    fraction: float = ACTIVE_FRACTION,
    k: int | None = None,
    chunk_size: int = 1024,
    min_count: int = 1,
    progress: bool = True,
) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """Activation probabilities of one layer for several conditions in a single pass.

    Parameters
    ----------
    acts
        ``[n_frames, d_ffn]`` activations of one layer (array, memory map or
        path to a ``.npy``), row i = label-table row i.
    sample
        Sampled frames (:func:`~speechdissect.neurons.sampling.sample_middle_frames`).
    conditions
        Condition names (see :data:`CONDITIONS`) or name -> sample column.
    fraction
        Share of neurons activated per frame; ``tau = round(fraction * d_ffn)``.
    k
        Override ``tau`` directly.
    chunk_size
        Rows read per chunk.
    min_count
        Rows with fewer sampled frames are dropped (their probabilities are noisy).
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        Condition -> ``(probabilities [n_rows, d_ffn] float32, row index)``.
    """
    acts = _open(acts)
    d = acts.shape[1]
    tau = n_active(d, fraction) if k is None else int(k)
    if isinstance(conditions, Mapping):
        spec = dict(conditions)
    else:
        unknown = [c for c in conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; known: {sorted(CONDITIONS)} (or pass a name -> column mapping)")
        spec = {c: CONDITIONS[c] for c in conditions}
    codes, indices = {}, {}
    for c, col in spec.items():
        codes[c], indices[c] = condition_groups(sample, c, col)
    counts = activation_counts(
        acts, sample["row"].to_numpy(), codes, {c: len(indices[c]) for c in spec}, tau,
        chunk_size=chunk_size, progress=progress,
    )
    out = {}
    for c in spec:
        index = indices[c]
        n = index["count"].to_numpy(dtype=np.float64)
        probs = (counts[c] / np.maximum(n, 1)[:, None]).astype(np.float32)
        keep = n >= min_count
        out[c] = (probs[keep], index[keep].reset_index(drop=True))
    return out


def activation_probability(
    acts: ArrayLike,
    sample: pd.DataFrame,
    condition: str = "phone",
    **kwargs,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Activation probabilities of one layer for one condition (see :func:`activation_probabilities`)."""
    return activation_probabilities(acts, sample, conditions=(condition,), **kwargs)[condition]


def layer_probabilities(
    layers: Mapping[int, ArrayLike],
    sample: pd.DataFrame,
    progress: bool = True,
    **kwargs,
) -> dict[int, dict[str, tuple[np.ndarray, pd.DataFrame]]]:
    """Run :func:`activation_probabilities` for every layer (layer -> array or ``.npy`` path)."""
    return {
        layer: activation_probabilities(acts, sample, progress=progress, **kwargs)
        for layer, acts in tqdm(layers.items(), desc="layers", disable=not progress)
    }


def to_long(
    probs: np.ndarray,
    index: pd.DataFrame,
    layer: int | None = None,
    neurons: np.ndarray | None = None,
) -> pd.DataFrame:
    """Tidy table: one row per (row, neuron) with the row index columns and ``p``.

    Why: tidy tables feed seaborn and parquet/TSV outputs directly.

    Parameters
    ----------
    probs, index
        Output of :func:`activation_probability`.
    layer
        Adds a ``layer`` column when given.
    neurons
        Restrict to these neuron indices (or boolean mask).
    """
    probs = np.asarray(probs)
    cols = np.arange(probs.shape[1])
    if neurons is not None:
        neurons = np.asarray(neurons)
        cols = np.flatnonzero(neurons) if neurons.dtype == bool else neurons.astype(np.int64)
    sub = probs[:, cols]
    n_rows, n_cols = sub.shape
    out = index.loc[np.repeat(np.arange(n_rows), n_cols)].reset_index(drop=True)
    out["neuron"] = np.tile(cols, n_rows).astype(np.int64)
    out["p"] = sub.ravel().astype(np.float32)
    if layer is not None:
        out.insert(0, "layer", int(layer))
    return out


def from_long(table: pd.DataFrame, d_ffn: int | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Inverse of :func:`to_long` for one layer: back to ``(probabilities, row index)``.

    Neurons absent from the table get probability 0; ``d_ffn`` defaults to
    the largest neuron index + 1.
    """
    keys = [c for c in INDEX_COLUMNS if c in table.columns]
    index = table[keys].drop_duplicates().reset_index(drop=True)
    row_of = {tuple(r): i for i, r in enumerate(index.itertuples(index=False, name=None))}
    d = int(table["neuron"].max()) + 1 if d_ffn is None else int(d_ffn)
    probs = np.zeros((len(index), d), dtype=np.float32)
    r = np.array([row_of[tuple(t)] for t in table[keys].itertuples(index=False, name=None)], dtype=np.int64)
    probs[r, table["neuron"].to_numpy(dtype=np.int64)] = table["p"].to_numpy(dtype=np.float32)
    return probs, index
