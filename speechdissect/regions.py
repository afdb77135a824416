"""Points and labels for layer-wise convexity: phone frames, word and speaker regions.

The convexity study (Dorszewski et al., 2024) asks, per layer, how convex the
regions of a property are. Phones are frame-level (a class-balanced sample of
frames); words and speakers are segment-level (the mean of a word occurrence's
or an utterance's frames), so each point is one spoken unit.

Means are accumulated chunk by chunk over the cache, so memory stays bounded
by (segments × dim), not frames × dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SKIP_PHONES = ("sil", "spn")
SILENT_WORD = "<sil>"
PROPERTIES = ("phone", "word", "speaker")


def segment_ids(labels: pd.DataFrame, unit: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Per label row, the id of its segment (-1 outside any); one row per segment with its label.

    ``unit='word'``: a run of one word inside an utterance (``<sil>`` excluded).
    ``unit='speaker'``: a whole utterance, labelled by its speaker.
    """
    utt = labels["utterance"].to_numpy()
    if unit == "speaker":
        change = np.r_[True, utt[1:] != utt[:-1]]
        ids = np.cumsum(change) - 1
        seg = pd.DataFrame({"utterance": utt[change], "label": labels["speaker"].to_numpy()[change]})
        return ids, seg
    if unit == "word":
        word = labels["word"].to_numpy()
        change = np.r_[True, (utt[1:] != utt[:-1]) | (word[1:] != word[:-1])]
        run = np.cumsum(change) - 1
        spoken_runs = word[change] != SILENT_WORD
        new_id = np.full(spoken_runs.size, -1)
        new_id[spoken_runs] = np.arange(spoken_runs.sum())
        ids = new_id[run]
        seg = pd.DataFrame({"utterance": utt[change][spoken_runs], "label": word[change][spoken_runs]})
        return ids, seg
    raise ValueError(f"unknown segment unit {unit!r}: expected 'word' or 'speaker'")


def segment_means(chunks, ids: np.ndarray, n_segments: int, dim: int) -> np.ndarray:
    """Mean vector of each segment from ``(rows, values)`` chunks (rows a slice, ids per row, contiguous runs)."""
    sums = np.zeros((n_segments, dim), dtype=np.float64)
    counts = np.bincount(ids[ids >= 0], minlength=n_segments).astype(np.float64)
    for rows, values in chunks:
        seg = ids[rows]
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        partial = np.add.reduceat(values.astype(np.float64, copy=False), starts, axis=0)
        keep = seg[starts] >= 0
        np.add.at(sums, seg[starts][keep], partial[keep])
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def balanced_sample(labels: np.ndarray, per_class: int, rng: np.random.Generator, min_count: int = 2) -> np.ndarray:
    """Indices of at most ``per_class`` items of every class with at least ``min_count`` items (sorted)."""
    out = []
    for value in pd.unique(labels):
        idx = np.flatnonzero(labels == value)
        if idx.size < min_count:
            continue
        out.append(rng.choice(idx, size=min(per_class, idx.size), replace=False))
    return np.sort(np.concatenate(out)) if out else np.array([], dtype=np.int64)


def phone_points(cache, labels: pd.DataFrame, layer: int, per_class: int, seed: int,
                 kind: str = "hidden", skip: Sequence[str] = SKIP_PHONES) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced sample of frames of one layer and their phone labels."""
    phones = labels["phone"].to_numpy()
    speech = np.flatnonzero(~np.isin(phones, list(skip)))
    pick = speech[balanced_sample(phones[speech], per_class, np.random.default_rng(seed))]
    feats = np.concatenate([v for _, v in cache.iter_chunks(kind, layer, rows=pick)]) if pick.size else np.zeros((0, 0))
    return feats, phones[pick]


def unit_points(cache, labels: pd.DataFrame, layer: int, unit: str, kind: str = "hidden") -> tuple[np.ndarray, np.ndarray]:
    """Mean representation of every word occurrence or utterance in one layer, and its label."""
    ids, seg = segment_ids(labels, unit)
    dim = cache.layer(kind, layer).shape[1]
    means = segment_means(cache.iter_chunks(kind, layer), ids, len(seg), dim)
    return means, seg["label"].to_numpy()
