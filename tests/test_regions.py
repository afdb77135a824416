"""speechdissect.regions: the points every convexity score is computed on, checked by hand on a
10-frame label table (two utterances) and a cache that streams in 2-row chunks, so segments
straddle chunk boundaries."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechdissect.regions import balanced_sample, phone_points, segment_ids, segment_means, unit_points

# u1: sil  K(CAT) AE(CAT) sil  D(DOG) AO(DOG) | u2: D(DOG) AO(DOG) sil spn
LABELS = pd.DataFrame({
    "utterance": ["u1"] * 6 + ["u2"] * 4,
    "frame": [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
    "phone": ["sil", "K", "AE", "sil", "D", "AO", "D", "AO", "sil", "spn"],
    "word": ["<sil>", "CAT", "CAT", "<sil>", "DOG", "DOG", "DOG", "DOG", "<sil>", "<sil>"],
    "speaker": ["101"] * 6 + ["102"] * 4,
})
X = np.arange(20, dtype=np.float32).reshape(10, 2) ** 1.5   # row i: distinct values, not affine in i


class FakeCache:
    """The two methods of ActivationCache the regions use, over in-memory layers, 2 rows per chunk."""

    def __init__(self, layers: dict[int, np.ndarray], chunk_rows: int = 2):
        self.layers, self.chunk_rows = layers, chunk_rows
        self.calls: list[tuple[str, int]] = []

    def layer(self, kind, l):
        return self.layers[l]

    def iter_chunks(self, kind, l, rows=None):
        self.calls.append((kind, l))
        data = self.layers[l]
        idx = np.arange(len(data)) if rows is None else np.asarray(rows)
        for start in range(0, len(idx), self.chunk_rows):
            part = idx[start:start + self.chunk_rows]
            sel = slice(int(part[0]), int(part[-1]) + 1) if rows is None else part
            yield sel, data[part].astype(np.float32)


def test_word_segments_are_runs_within_an_utterance_without_silence():
    ids, seg = segment_ids(LABELS, "word")
    # DOG at the end of u1 and DOG at the start of u2 are two occurrences, not one
    assert ids.tolist() == [-1, 0, 0, -1, 1, 1, 2, 2, -1, -1]
    assert seg["label"].tolist() == ["CAT", "DOG", "DOG"] and seg["utterance"].tolist() == ["u1", "u1", "u2"]


def test_speaker_segments_are_whole_utterances():
    ids, seg = segment_ids(LABELS, "speaker")
    assert ids.tolist() == [0] * 6 + [1] * 4
    assert seg.to_dict("list") == {"utterance": ["u1", "u2"], "label": ["101", "102"]}


def test_unknown_unit_is_an_error():
    with pytest.raises(ValueError, match="unknown segment unit 'phone'"):
        segment_ids(LABELS, "phone")


def test_segment_means_across_chunk_boundaries():
    ids, seg = segment_ids(LABELS, "word")
    cache = FakeCache({0: X})
    means = segment_means(cache.iter_chunks("hidden", 0), ids, len(seg), 2)
    want = np.stack([X[1:3].mean(0), X[4:6].mean(0), X[6:8].mean(0)])   # rows 1-2 span chunks [0,1] and [2,3]
    np.testing.assert_allclose(means, want, rtol=1e-6)
    assert means.dtype == np.float32


def test_unit_points_words_and_speakers():
    cache = FakeCache({0: X, 1: -X})
    words, names = unit_points(cache, LABELS, 1, "word")
    np.testing.assert_allclose(words, -np.stack([X[1:3].mean(0), X[4:6].mean(0), X[6:8].mean(0)]), rtol=1e-6)
    assert names.tolist() == ["CAT", "DOG", "DOG"]
    speakers, names = unit_points(cache, LABELS, 0, "speaker")
    # an utterance's point is the mean of all its frames, silences included
    np.testing.assert_allclose(speakers, np.stack([X[:6].mean(0), X[6:].mean(0)]), rtol=1e-6)
    assert names.tolist() == ["101", "102"] and cache.calls[-1] == ("hidden", 0)


def test_balanced_sample_caps_each_class_and_drops_singletons():
    labels = np.array(["a", "b", "a", "c", "a", "c", "a", "c", "a"])
    pick = balanced_sample(labels, 2, np.random.default_rng(0))
    assert (np.diff(pick) > 0).all()   # sorted, no repeats
    assert sorted(labels[pick].tolist()) == ["a", "a", "c", "c"]   # "b" has one item: no class of its own
    assert balanced_sample(labels, 2, np.random.default_rng(0)).tolist() == pick.tolist()   # seeded
    everything = balanced_sample(labels, 10, np.random.default_rng(1))
    assert everything.tolist() == [0, 2, 3, 4, 5, 6, 7, 8]
    assert balanced_sample(labels, 2, np.random.default_rng(0), min_count=6).size == 0
    empty = balanced_sample(np.array([], dtype=str), 2, np.random.default_rng(0))
    assert empty.size == 0 and empty.dtype == np.int64


def test_phone_points_skip_silence_and_single_frame_phones():
    cache = FakeCache({0: X})
    feats, phones = phone_points(cache, LABELS, 0, per_class=5, seed=0)
    # speech frames 1 K, 2 AE, 4 D, 5 AO, 6 D, 7 AO; K and AE occur once: dropped
    assert phones.tolist() == ["D", "AO", "D", "AO"]
    np.testing.assert_array_equal(feats, X[[4, 5, 6, 7]])
    feats, phones = phone_points(cache, LABELS, 0, per_class=1, seed=3)
    assert sorted(phones.tolist()) == ["AO", "D"] and len(feats) == 2
    assert all(any((f == X[i]).all() for i in (4, 5, 6, 7)) for f in feats)
    # a different seed may draw other frames, the same seed the same ones
    a, _ = phone_points(cache, LABELS, 0, per_class=1, seed=3)
    np.testing.assert_array_equal(a, feats)


def test_phone_points_of_a_table_without_speech():
    silent = LABELS.assign(phone="sil")
    feats, phones = phone_points(FakeCache({0: X}), silent, 0, per_class=5, seed=0)
    assert feats.shape[0] == 0 and phones.size == 0
