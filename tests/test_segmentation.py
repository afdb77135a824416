"""Unit tests of kernel-Gram phoneme segmentation and its R-value scoring."""

from __future__ import annotations

import math

import numpy as np
import python_speech_features as psf  # the independent MFCC reference (test extra)
import pytest

from speechdissect import frames
from speechdissect.attention import segmentation as seg


def piecewise(lengths, dim=4, noise=0.01, seed=0):
    """Piecewise-constant features with small noise and the true segment starts."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3.0, size=(len(lengths), dim))
    x = np.concatenate([np.repeat(m[None], n, axis=0) for m, n in zip(means, lengths)])
    x = x + rng.normal(0, noise, size=x.shape)
    return x, np.cumsum(lengths)[:-1]


# --------------------------------------------------------------------------- scores


def test_r_value_perfect():
    s = seg.SegmentationScore.compute(np.array([3, 8, 12]), np.array([3, 8, 12]), tolerance=1)
    assert (s.hits, s.n_pred, s.n_ref) == (3, 3, 3)
    assert s.hit_rate == 1.0 and s.over_segmentation == 0.0
    assert s.r_value == pytest.approx(1.0)
    assert s.precision == s.recall == s.f1 == 1.0


def test_r_value_no_predictions():
    s = seg.SegmentationScore.compute(np.array([], dtype=int), np.array([3, 8]), tolerance=1)
    assert s.hit_rate == 0.0 and s.over_segmentation == -1.0
    # r1 = sqrt(1 + 1), r2 = (1 + 0 - 1)/sqrt2 = 0 -> R = 1 - sqrt2/2
    assert s.r_value == pytest.approx(1 - math.sqrt(2) / 2)
    assert s.f1 == 0.0 and math.isnan(s.precision)


def test_r_value_over_segmented():
    # every reference found, plus one extra boundary inside each of the 3 segments: HR = 1, OS = 1
    ref = np.array([10, 20, 30])
    pred = np.array([5, 10, 15, 20, 25, 30])
    s = seg.SegmentationScore.compute(pred, ref, tolerance=1)
    assert (s.hits, s.n_pred, s.n_ref) == (3, 6, 3)
    assert s.hit_rate == 1.0 and s.over_segmentation == 1.0
    # r1 = sqrt(0 + 1) = 1, r2 = (-1 + 1 - 1)/sqrt2 -> R = 1 - (1 + 1/sqrt2)/2
    assert s.r_value == pytest.approx(1 - (1 + 1 / math.sqrt(2)) / 2)
    assert s.precision == 0.5 and s.recall == 1.0 and s.f1 == pytest.approx(2 / 3)
    # over-segmenting costs R even though recall is perfect: fewer extras score higher
    fewer = seg.SegmentationScore.compute(np.array([5, 10, 20, 30]), ref, tolerance=1)
    assert 1.0 > fewer.r_value > s.r_value


def test_r_value_empty_boundary_lists():
    # no reference boundaries: every rate dividing by N_ref is undefined (NaN), not a fake 0 or 1
    s = seg.SegmentationScore.compute(np.array([], dtype=int), np.array([], dtype=int), tolerance=1)
    assert (s.hits, s.n_pred, s.n_ref) == (0, 0, 0)
    assert all(math.isnan(v) for v in (s.hit_rate, s.over_segmentation, s.r_value, s.precision, s.f1))
    s = seg.SegmentationScore.compute(np.array([4, 9]), np.array([], dtype=int), tolerance=1)
    assert s.hits == 0 and s.n_pred == 2 and s.precision == 0.0 and math.isnan(s.r_value)
    # an empty utterance adds nothing to the micro-average
    full = seg.SegmentationScore.compute(np.array([3, 8]), np.array([3, 8]), tolerance=1)
    assert seg.SegmentationScore.total([full, seg.SegmentationScore(0, 0, 0)]).r_value == pytest.approx(1.0)


def test_r_value_formula_general_case():
    s = seg.SegmentationScore(hits=3, n_pred=6, n_ref=4)
    hr, os_ = 0.75, 0.5
    r1 = math.sqrt((1 - hr) ** 2 + os_**2)
    r2 = (-os_ + hr - 1) / math.sqrt(2)
    assert s.r_value == pytest.approx(1 - (abs(r1) + abs(r2)) / 2)
    assert s.precision == 0.5 and s.recall == 0.75
    assert s.f1 == pytest.approx(2 * 0.5 * 0.75 / 1.25)


def test_one_to_one_hits():
    # two predictions within tolerance of one reference: one hit, one false alarm
    assert seg.match_boundaries(np.array([10, 11]), np.array([10]), tolerance=1) == 1
    s = seg.SegmentationScore.compute(np.array([10, 11]), np.array([10]), tolerance=1)
    assert (s.hits, s.n_pred, s.n_ref) == (1, 2, 1)
    assert s.over_segmentation == 1.0


def test_matching_is_maximum_not_greedy_by_distance():
    # refs 4, 6 and preds 5, 7 with tolerance 1: (5,4), (5,6) and (7,6) are all 1 apart, so a
    # greedy pass may pair 5 with 6 and strand 7; the maximum matching (5,4), (7,6) gives 2 hits.
    assert seg.match_boundaries(np.array([5, 7]), np.array([4, 6]), tolerance=1) == 2
    assert seg.match_boundaries(np.array([0, 20]), np.array([5]), tolerance=1) == 0


def test_seconds_tolerance_and_conversion():
    b = np.array([10, 25])
    t = seg.boundary_times(b)
    # boundary b lies half-way between the centres of frames b-1 and b
    c = frames.frame_centres(26)
    assert t[0] == pytest.approx((c[9] + c[10]) / 2)
    s = seg.SegmentationScore.compute(t, t + 0.019, tolerance=0.02)
    assert s.hits == 2
    s = seg.SegmentationScore.compute(t, t + 0.021, tolerance=0.02)
    assert s.hits == 0


def test_aggregation_sums_counts():
    a = seg.SegmentationScore(2, 2, 4)
    b = seg.SegmentationScore(1, 3, 1)
    tot = seg.SegmentationScore.total([a, b])
    assert (tot.hits, tot.n_pred, tot.n_ref) == (3, 5, 5)
    assert tot.hit_rate == pytest.approx(0.6)


def test_reference_boundaries_from_labels():
    labels = ["sil", "sil", "AA", "AA", "AA", "B", "sil"]
    assert seg.reference_boundaries(labels).tolist() == [2, 5, 6]
    assert seg.reference_boundaries(["AA"]).tolist() == []


# --------------------------------------------------------------------------- detection


def test_filter_gram_keeps_contiguous_run():
    K = np.array(
        [
            [1.0, 0.9, 0.1, 0.9],
            [0.9, 1.0, 0.9, 0.1],
            [0.1, 0.9, 1.0, 0.9],
            [0.9, 0.1, 0.9, 1.0],
        ]
    )
    Kf = seg.filter_gram(K, beta=1.0)  # eps = row mean = 0.725
    # row 0: run is [0, 1]; the 0.9 at column 3 is cut off by the 0.1 at column 2
    assert Kf[0].tolist() == [1.0, 0.9, 0.0, 0.0]
    assert Kf[1].tolist() == [0.9, 1.0, 0.9, 0.0]
    assert Kf[3].tolist() == [0.0, 0.0, 0.9, 1.0]


def test_filter_gram_matches_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).cumsum(0)
    K = seg.gram_matrix(x, alpha=2.0)
    beta = 1.3
    Kf = seg.filter_gram(K, beta)
    ref = np.zeros_like(K)
    for i in range(len(K)):
        eps = beta * K[i].mean()
        if K[i, i] <= eps:
            continue
        lo = i
        while lo - 1 >= 0 and K[i, lo - 1] > eps:
            lo -= 1
        hi = i
        while hi + 1 < len(K) and K[i, hi + 1] > eps:
            hi += 1
        ref[i, lo : hi + 1] = K[i, lo : hi + 1]
    assert np.array_equal(Kf, ref)


def test_anti_diagonal_score_matches_loop():
    rng = np.random.default_rng(1)
    M = rng.random((9, 9))
    S = seg.anti_diagonal_score(M, "frame")
    G = seg.anti_diagonal_score(M, "gap")
    T = 9
    for t in range(T):
        assert S[t] == pytest.approx(sum(M[t - k, t + k] for k in range(-T, T) if 0 <= t - k < T and 0 <= t + k < T))
    for b in range(1, T):
        assert G[b - 1] == pytest.approx(
            sum(M[b - 1 - k, b + k] for k in range(-T, T) if 0 <= b - 1 - k < T and 0 <= b + k < T)
        )


def test_local_minima_plateaus_and_edges():
    assert seg.local_minima(np.array([1, 3, 5, 3, 1, 1, 3, 5, 2, 4, 4])).tolist() == [5, 8]
    assert seg.local_minima(np.array([0, 1, 2])).tolist() == []  # edge minimum is not a boundary


@pytest.mark.parametrize("centre", ["frame", "gap"])
def test_detects_boundaries_of_piecewise_constant_features(centre):
    x, truth = piecewise([8, 12, 6, 10, 9], noise=0.01)
    b = seg.detect_boundaries(x, alpha=1.0, beta=1.0, centre=centre)
    assert b.tolist() == truth.tolist()


def test_tune_and_score_recover_segmentation():
    items = []
    for seed in range(4):
        x, truth = piecewise([7, 11, 5, 9], noise=0.05, seed=seed)
        items.append((x, truth))
    grid = seg.grid_scores([0.5, 1.0, 2.0], [0.5, 1.0, 1.5], items)
    assert len(grid) == 9 and {"alpha", "beta", "r_value", "f1"} <= set(grid.columns)
    a, b = seg.tune([0.5, 1.0, 2.0], [0.5, 1.0, 1.5], items)
    assert grid["r_value"].max() == pytest.approx(1.0)
    s = seg.score(items, a, b)
    assert s.r_value == pytest.approx(1.0)
    assert s.n_ref == 12


def test_score_in_seconds_matches_frames():
    x, truth = piecewise([8, 12, 6], noise=0.01)
    frame_items = [(x, truth)]
    second_items = [(x, seg.boundary_times(truth) + 0.004)]
    sf = seg.score(frame_items, 1.0, 1.0, unit="frame")
    ss = seg.score(second_items, 1.0, 1.0, unit="second")
    assert (sf.hits, sf.n_pred, sf.n_ref) == (ss.hits, ss.n_pred, ss.n_ref) == (2, 2, 2)


def test_alpha_grid_scales_with_features():
    x, truth = piecewise([8, 12], noise=0.01)
    g1 = seg.alpha_grid([(x, truth)], factors=(1.0,))
    g10 = seg.alpha_grid([(10 * x, truth)], factors=(1.0,))
    assert g10[0] == pytest.approx(10 * g1[0])


def test_attention_rows_as_features():
    # A block-diagonal attention map (each frame attends within its segment) has rows that
    # are constant inside a segment, so its boundaries are the block edges.
    lengths = [6, 9, 7]
    T = sum(lengths)
    A = np.zeros((T, T))
    start = 0
    for n in lengths:
        A[start : start + n, start : start + n] = 1.0 / n
        start += n
    b = seg.detect_boundaries(A, alpha=0.2, beta=1.0)
    assert b.tolist() == [6, 15]


def test_block_diagonal_attention_recovered_with_noise_and_scored():
    # Noisy block-diagonal maps (rows still sum to 1), tuned and scored as the workflow does.
    rng = np.random.default_rng(4)
    items = []
    for lengths in ([6, 9, 7], [5, 8, 4, 10], [12, 7]):
        T = sum(lengths)
        A = np.full((T, T), 0.02 / T)
        start = 0
        for n in lengths:
            A[start : start + n, start : start + n] += 0.98 / n
            start += n
        A *= rng.uniform(0.9, 1.1, size=A.shape)
        A /= A.sum(1, keepdims=True)
        items.append((A, np.cumsum(lengths)[:-1]))
    alphas = seg.alpha_grid(items, factors=(0.25, 0.5, 1.0))
    a, b = seg.tune(alphas, [0.6, 0.8, 1.0], items)
    s = seg.score(items, a, b)
    assert (s.hits, s.n_pred, s.n_ref) == (6, 6, 6) and s.r_value == pytest.approx(1.0)


def test_mfcc_features_on_frame_grid():
    rng = np.random.default_rng(0)
    for n in (400, 719, 720, 16000, 16123):
        f = seg.mfcc_features(rng.normal(size=n))
        assert f.shape == (frames.n_frames(n), 13)
        assert f.dtype == np.float32 and np.isfinite(f).all()
    f = seg.mfcc_features(rng.normal(size=8000), deltas=True)
    assert f.shape == (frames.n_frames(8000), 39)
    assert np.allclose(f.mean(0), 0, atol=1e-4)
    assert seg.mfcc_features(np.zeros(300)).shape == (0, 13)


def test_mfcc_matches_python_speech_features():
    rng = np.random.default_rng(1)
    wave = np.sin(np.arange(16000) * 2 * np.pi * 220 / 16000) + 0.1 * rng.normal(size=16000)
    ours = seg.mfcc_features(wave, cmvn=False, deltas=True)
    ref = psf.mfcc(wave, 16000, winlen=0.025, winstep=0.02, numcep=13, nfilt=26, nfft=512, winfunc=np.hamming)
    ref = ref[: frames.n_frames(wave.size)]
    d1 = psf.delta(ref, 2)
    ref = np.hstack([ref, d1, psf.delta(d1, 2)])
    # deltas at the last frames differ only if psf padded a partial frame; compare the interior
    assert np.allclose(ours[:-2], ref[:-2], rtol=1e-4, atol=1e-3)
    assert np.allclose(ours[:, :13], ref[:, :13], rtol=1e-4, atol=1e-3)
