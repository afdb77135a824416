"""One frame per phone segment: the frames the property-neuron statistics are computed on.

Lin et al. (2024) count activations on the *middle frame* of every phone
segment, so that long phones do not outweigh short ones and frames near phone
boundaries (which mix two phones) are avoided.

Conventions
-----------
* A *segment* is a maximal run of consecutive label-table rows inside one
  utterance whose ``phone`` is identical and whose ``frame`` indices are
  consecutive (a gap in ``frame`` also ends a run). Frame labels carry no
  segment id, so two identical phones that touch (``S`` at the end of "THIS"
  and the start of "SONG") form one segment; pass ``boundary_cols=("utterance",
  "word")`` to split runs at word changes as well.
* With ``start`` and ``end`` the first and the **last** (inclusive) frame index
  of the run, the sampled frame is ``(start + end) // 2``: the exact centre of
  an odd-length run, the *earlier* of the two central frames of an even-length
  run (run 3..6 -> 4; a one-frame run samples itself). This is the convention
  of the authors' code (``get_monophone_mid``).
* Segments of ``sil`` and ``spn`` (parameter ``skip``) are dropped before
  anything else is computed.
* The pitch key is the ``pitch_group`` of the sampled (middle) frame. An
  unvoiced middle frame (empty string / NaN / None) gets ``""``: the segment is
  kept for the phone and phone x gender conditions and excluded only from the
  phone x pitch condition.
* Returned ``row`` values are 0-based *positions* in the label table, which is
  aligned 1:1 with the activation rows (see :func:`align_to_cache` when a cache
  index reorders rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SKIP_PHONES: tuple[str, ...] = ("sil", "spn")
"""Phones dropped from the neuron statistics (silence, spoken noise)."""

KEY_COLUMNS: tuple[str, ...] = ("phone", "phone_class", "speaker", "gender")
"""Label columns copied onto each sampled row when present."""


def _codes(values: pd.Series) -> np.ndarray:
    """Integer codes of a column (NaN gets its own code) so runs can be found by comparison."""
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return np.asarray(codes)


def phone_segments(
    labels: pd.DataFrame,
    boundary_cols: Sequence[str] = ("utterance",),
    phone_col: str = "phone",
    frame_col: str = "frame",
) -> pd.DataFrame:
    """Find the runs of identical phone labels (the segments) in a frame-level label table.

    Parameters
    ----------
    labels
        Label table, one row per frame, in utterance then frame order.
    boundary_cols
        Columns whose change also ends a run (the utterance by default).
    phone_col, frame_col
        Names of the phone and frame-index columns.

    Returns
    -------
    pandas.DataFrame
        One row per segment: ``start_row``, ``end_row`` (inclusive label-table
        positions), ``start_frame``, ``end_frame`` (inclusive), ``n_frames``,
        ``mid_frame`` = ``(start_frame + end_frame) // 2`` and ``mid_row`` (its
        label-table position), plus the phone and boundary columns.
    """
    n = len(labels)
    cols = [phone_col, *boundary_cols]
    missing = [c for c in [*cols, frame_col] if c not in labels.columns]
    if missing:
        raise ValueError(f"label table lacks column(s) {missing}; expected the columns of docs/formats.md")
    if n == 0:
        return pd.DataFrame(
            {c: pd.Series(dtype=object) for c in cols}
            | {k: pd.Series(dtype=np.int64) for k in ("start_row", "end_row", "start_frame", "end_frame", "n_frames", "mid_frame", "mid_row")}
        )
    frame = labels[frame_col].to_numpy(dtype=np.int64)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    new[1:] |= frame[1:] != frame[:-1] + 1
    for c in cols:
        code = _codes(labels[c])
        new[1:] |= code[1:] != code[:-1]
    start = np.flatnonzero(new)
    end = np.r_[start[1:] - 1, n - 1]
    start_frame, end_frame = frame[start], frame[end]
    mid_frame = (start_frame + end_frame) // 2
    mid_row = start + (mid_frame - start_frame)  # frames are consecutive inside a run
    out = labels.iloc[start][cols].reset_index(drop=True)
    out["start_row"] = start
    out["end_row"] = end
    out["start_frame"] = start_frame
    out["end_frame"] = end_frame
    out["n_frames"] = end - start + 1
    out["mid_frame"] = mid_frame
    out["mid_row"] = mid_row
    return out


def _pitch_keys(pitch: pd.DataFrame | pd.Series, labels: pd.DataFrame, pitch_col: str) -> np.ndarray:
    """Validate alignment of the pitch table and return its group column as clean strings ('' = unvoiced)."""
    if isinstance(pitch, pd.DataFrame):
        if pitch_col not in pitch.columns:
            raise ValueError(f"pitch table lacks column {pitch_col!r}; expected the pitch table of docs/formats.md")
        if len(pitch) != len(labels):
            raise ValueError(f"pitch table has {len(pitch)} rows but the label table {len(labels)}; they must be aligned 1:1")
        for c in ("utterance", "frame"):
            if c in pitch.columns and c in labels.columns:
                if not np.array_equal(pitch[c].to_numpy(), labels[c].to_numpy()):
                    raise ValueError(f"pitch table column {c!r} differs from the label table's: rows are not aligned (regenerate the pitch table for this split)")
        values = pitch[pitch_col]
    else:
        if len(pitch) != len(labels):
            raise ValueError(f"pitch series has {len(pitch)} rows but the label table {len(labels)}")
        values = pitch
    values = values.astype(object)
    return values.where(values.notna(), "").astype(str).to_numpy(dtype=object)


def sample_middle_frames(
    labels: pd.DataFrame,
    pitch: pd.DataFrame | pd.Series | None = None,
    skip: Sequence[str] = SKIP_PHONES,
    pitch_col: str = "pitch_group",
    boundary_cols: Sequence[str] = ("utterance",),
    phone_col: str = "phone",
) -> pd.DataFrame:
    """Sample the middle frame of every non-silence phone segment, with its condition keys.

    Parameters
    ----------
    labels
        Label table (docs/formats.md), rows aligned 1:1 with the activation rows.
    pitch
        Pitch table aligned with ``labels`` (or just its group column); None
        leaves ``pitch_group`` empty, i.e. no row enters the pitch condition.
    skip
        Phones whose segments are dropped (silence and spoken noise).
    pitch_col
        Pitch-table column used as pitch key (``pitch_group`` or
        ``pitch_group_gender``).
    boundary_cols, phone_col
        See :func:`phone_segments`.

    Returns
    -------
    pandas.DataFrame
        One row per kept segment, ordered by ``row``: ``row`` (activation row
        of the middle frame), ``utterance``, ``frame``, ``start_frame``,
        ``end_frame``, ``n_frames``, the label columns ``phone``,
        ``phone_class``, ``speaker``, ``gender`` (those present) and
        ``pitch_group`` (``""`` when the middle frame is unvoiced).
    """
    seg = phone_segments(labels, boundary_cols=boundary_cols, phone_col=phone_col)
    keep = ~seg[phone_col].isin(list(skip)).to_numpy()
    seg = seg[keep].reset_index(drop=True)
    rows = seg["mid_row"].to_numpy(dtype=np.int64)
    out = pd.DataFrame({"row": rows})
    if "utterance" in labels.columns:
        out["utterance"] = labels["utterance"].to_numpy()[rows]
    out["frame"] = seg["mid_frame"].to_numpy()
    out["start_frame"] = seg["start_frame"].to_numpy()
    out["end_frame"] = seg["end_frame"].to_numpy()
    out["n_frames"] = seg["n_frames"].to_numpy()
    for c in dict.fromkeys((phone_col, *KEY_COLUMNS)):
        if c in labels.columns:
            out[c] = labels[c].to_numpy()[rows]
    if pitch is None:
        out["pitch_group"] = ""
    else:
        out["pitch_group"] = _pitch_keys(pitch, labels, pitch_col)[rows]
    return out


def align_to_cache(table: pd.DataFrame, index: pd.DataFrame, row_col: str = "row") -> pd.DataFrame:
    """Reorder a label/pitch table so that its row i describes activation row i of a cache.

    The cache's ``index.parquet`` maps each activation row to a label-table
    row (column ``row``); when it is the identity this is a no-op copy.
    """
    rows = index[row_col].to_numpy(dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(table)):
        raise ValueError(f"cache index refers to label rows outside [0, {len(table)}): the cache was built from another label table; rebuild it")
    return table.iloc[rows].reset_index(drop=True)
