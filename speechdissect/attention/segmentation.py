"""Phoneme boundary detection with kernel-Gram matrices, and its scoring.

Method (Bhati et al., 2018, as used on attention maps by Yang, Liu & Lee, 2020).
Given one vector per frame ``v_1..v_T`` — a row of an attention map, an MFCC
frame or a hidden state:

1. Gram matrix ``K[i, j] = exp(-||v_i - v_j|| / alpha)`` (Euclidean norm).
2. Row threshold ``eps_i = beta * mean_j K[i, j]``.
3. Filtering: in row ``i`` keep only the contiguous run of columns ``j`` that
   contains the diagonal ``j = i`` and on which ``K[i, j] > eps_i``; everything
   outside the run is set to 0 (``K_f``). A frame thus only "sees" the stretch
   of similar frames around it — its segment.
4. Score ``S[t] = sum_k K_f[t - k, t + k]`` over all integer ``k`` (negative
   ``k`` included) with both indices inside ``[0, T)``: the sum along the whole
   anti-diagonal ``i + j = 2t`` through ``(t, t)``. It counts how much similarity
   spans frame ``t`` symmetrically; it peaks in the middle of a segment and
   drops where pairs on either side of ``t`` belong to different segments.
5. Boundaries are the interior local minima of ``S``.

Reading of the conventions (documented decisions):

* A predicted or reference boundary is a frame index ``b`` meaning "a new
  segment starts at frame ``b``" (it lies between frames ``b - 1`` and ``b``).
  Utterance edges (``b = 0`` and ``b = T``) are never boundaries, neither in
  predictions nor in :func:`reference_boundaries`.
* Local minima: runs of exactly equal consecutive values are treated as one
  plateau; a plateau lower than both neighbouring runs is a minimum and yields
  ``b = first + width // 2`` (a 1-frame minimum at ``t`` gives ``b = t``; the
  2-frame plateau ``S[b-1] = S[b]`` that a clean cut produces gives ``b``).
  The first and last run (touching the utterance edges) are never minima.
* ``centre="gap"`` is an option that scores the odd anti-diagonals
  ``i + j = 2b - 1`` instead (pairs ``(b-1-k, b+k)``), i.e. the gap between
  frames; a cut then gives a strict minimum at ``b`` with no plateau. The
  default ``"frame"`` is the definition above.
* Scoring is one-to-one: each reference boundary and each prediction is used at
  most once. Hits are a maximum-cardinality matching of predictions to
  references within the tolerance, found with ``linear_sum_assignment`` (among
  maximum matchings the one with the smallest total distance), so two
  predictions near one reference count as one hit and one false alarm.
* Tolerance is inclusive: ``|pred - ref| <= tolerance``. In frame units the
  default 20 ms is one 20 ms frame.
* Aggregation over utterances sums hits, predictions and references first and
  computes the rates from the totals (micro average), so long utterances weigh
  in proportion to their number of boundaries.
* With ``N_ref = 0`` every rate that divides by it is NaN.

Rates: ``HR = hits / N_ref``; ``OS = N_pred / N_ref - 1``;
``r1 = sqrt((1 - HR)^2 + OS^2)``; ``r2 = (-OS + HR - 1) / sqrt(2)``;
``R = 1 - (|r1| + |r2|) / 2``; precision ``hits / N_pred``, recall ``HR``, F1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.fft import dct

from speechdissect import frames

__all__ = [
    "SegItem",
    "pairwise_distances",
    "gram_matrix",
    "filter_gram",
    "anti_diagonal_score",
    "local_minima",
    "detect_boundaries",
    "reference_boundaries",
    "boundary_times",
    "match_boundaries",
    "SegmentationScore",
    "score",
    "grid_scores",
    "tune",
    "alpha_grid",
    "mel_filterbank",
    "mfcc_features",
    "SUMMARY_COLUMNS",
    "segmentation_summary",
]

Centre = Literal["frame", "gap"]
Unit = Literal["frame", "second"]
#: One utterance for tuning/scoring: ``(features [T, d], reference boundaries)``.
#: References are frame indices (``unit="frame"``) or times in seconds (``unit="second"``).
SegItem = tuple[np.ndarray, np.ndarray]

FRAME_SECONDS = frames.HOP / frames.SAMPLE_RATE


# --------------------------------------------------------------------------- detection


def pairwise_distances(features: np.ndarray) -> np.ndarray:
    """Euclidean distances ``||v_i - v_j||`` between all frames of ``features [T, d]``.

    Kept separate from :func:`gram_matrix` so a grid search computes it once per
    utterance and reuses it for every ``alpha``. Uses the BLAS form
    ``|a|^2 + |b|^2 - 2 a.b`` (several times faster than ``cdist`` for
    attention rows, where ``d = T``), clipped at 0, with an exact zero diagonal.
    """
    v = np.asarray(features, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"features must be [T, d], got shape {v.shape}")
    sq = np.einsum("ij,ij->i", v, v)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def gram_matrix(features: np.ndarray | None = None, alpha: float = 1.0, *, distances: np.ndarray | None = None) -> np.ndarray:
    """Kernel-Gram matrix ``K[i, j] = exp(-||v_i - v_j|| / alpha)``.

    Pass ``distances`` (from :func:`pairwise_distances`) to skip recomputing them.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if distances is None:
        if features is None:
            raise ValueError("gram_matrix needs features or distances")
        distances = pairwise_distances(features)
    return np.exp(-np.asarray(distances, dtype=np.float64) / alpha)


def filter_gram(K: np.ndarray, beta: float) -> np.ndarray:
    """Keep, in each row, the contiguous run around the diagonal where ``K > eps_i``.

    ``eps_i = beta * mean_j K[i, j]``. Vectorised: the last failing column at
    or before ``i`` and the first failing column at or after ``i`` delimit the
    run, found with cumulative max/min over the failure positions. If the
    diagonal itself fails (only when ``beta`` is large) the row is all zero.
    """
    K = np.asarray(K, dtype=np.float64)
    T = K.shape[0]
    if K.shape != (T, T):
        raise ValueError(f"K must be square, got {K.shape}")
    if T == 0:
        return K.copy()
    eps = beta * K.mean(axis=1)
    ok = K > eps[:, None]
    cols = np.arange(T)
    diag = (cols, cols)
    last_fail = np.maximum.accumulate(np.where(ok, -1, cols[None, :]), axis=1)[diag]
    first_fail = np.minimum.accumulate(np.where(ok, T, cols[None, :])[:, ::-1], axis=1)[:, ::-1][diag]
    lo, hi = last_fail + 1, first_fail - 1  # inclusive run bounds; empty when lo > hi
    keep = (cols[None, :] >= lo[:, None]) & (cols[None, :] <= hi[:, None])
    return np.where(keep, K, 0.0)


def anti_diagonal_score(K_f: np.ndarray, centre: Centre = "frame") -> np.ndarray:
    """Sums of ``K_f`` along anti-diagonals.

    ``centre="frame"``: ``S[t] = sum_k K_f[t-k, t+k]``, the anti-diagonal
    ``i + j = 2t`` (length ``T``). ``centre="gap"``: ``S[b - 1] = sum_k
    K_f[b-1-k, b+k]``, the anti-diagonal ``i + j = 2b - 1`` between frames
    ``b - 1`` and ``b`` (length ``T - 1``, entry ``b - 1`` is gap ``b``).
    All anti-diagonals come from one ``bincount`` over ``i + j``.
    """
    T = K_f.shape[0]
    if T == 0:
        return np.zeros(0)
    idx = np.add.outer(np.arange(T), np.arange(T)).ravel()
    sums = np.bincount(idx, weights=np.asarray(K_f, dtype=np.float64).ravel(), minlength=2 * T - 1)
    if centre == "frame":
        return sums[0::2]
    if centre == "gap":
        return sums[1::2]
    raise ValueError(f"centre must be 'frame' or 'gap', got {centre!r}")


def local_minima(S: np.ndarray) -> np.ndarray:
    """Interior local minima of ``S`` with plateaus collapsed (see module notes).

    Returns the index ``first + width // 2`` of every plateau strictly lower than
    the runs on both sides; plateaus touching either end are excluded.
    """
    S = np.asarray(S, dtype=np.float64)
    if S.size < 3:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, S[1:] != S[:-1]])
    widths = np.diff(np.r_[starts, S.size])
    vals = S[starts]
    if vals.size < 3:
        return np.zeros(0, dtype=np.int64)
    is_min = (vals[1:-1] < vals[:-2]) & (vals[1:-1] < vals[2:])
    run = np.flatnonzero(is_min) + 1
    return (starts[run] + widths[run] // 2).astype(np.int64)


def _boundaries_from_K(K: np.ndarray, beta: float, centre: Centre) -> np.ndarray:
    S = anti_diagonal_score(filter_gram(K, beta), centre)
    b = local_minima(S)
    return b + 1 if centre == "gap" else b


def detect_boundaries(
    features: np.ndarray,
    alpha: float,
    beta: float,
    *,
    centre: Centre = "frame",
    distances: np.ndarray | None = None,
) -> np.ndarray:
    """Predicted boundary frames ``b`` (segment starts) for one utterance.

    Parameters
    ----------
    features
        ``[T, d]`` frame vectors: attention-map rows, MFCCs or hidden states.
    alpha
        Kernel width, in the units of the feature distances (see :func:`alpha_grid`).
    beta
        Threshold factor on the mean row similarity; larger ``beta`` keeps
        shorter runs, hence more boundaries.
    centre
        ``"frame"`` (anti-diagonals through ``(t, t)``, the default) or ``"gap"``.
    distances
        Precomputed :func:`pairwise_distances` of ``features``.
    """
    if distances is None:
        distances = pairwise_distances(features)
    return _boundaries_from_K(gram_matrix(alpha=alpha, distances=distances), beta, centre)


# --------------------------------------------------------------------------- references


def reference_boundaries(labels: Sequence) -> np.ndarray:
    """Frames ``b >= 1`` where the label changes (``labels[b] != labels[b - 1]``).

    Turns a per-frame phone column of the label table into frame-unit
    references; utterance edges are not boundaries.
    """
    lab = np.asarray(labels, dtype=object)
    if lab.size < 2:
        return np.zeros(0, dtype=np.int64)
    return (np.flatnonzero(lab[1:] != lab[:-1]) + 1).astype(np.int64)


def boundary_times(b: np.ndarray) -> np.ndarray:
    """Seconds of frame-boundary indices on the shared 20 ms grid.

    Boundary ``b`` lies between frames ``b - 1`` and ``b``; its time is the
    midpoint of their centres, ``(320 b + 40) / 16000`` s (see ``speechdissect.frames``).
    """
    b = np.asarray(b, dtype=np.float64)
    return (b * frames.HOP + (frames.RECEPTIVE_FIELD - frames.HOP) / 2) / frames.SAMPLE_RATE


# --------------------------------------------------------------------------- scoring


def match_boundaries(pred: np.ndarray, ref: np.ndarray, tolerance: float) -> int:
    """Number of one-to-one hits between predicted and reference boundaries.

    ``pred`` and ``ref`` must be in the same unit as ``tolerance``. A pair is
    admissible when ``|p - r| <= tolerance``; hits are the size of a maximum
    matching over admissible pairs (via ``linear_sum_assignment`` with a cost
    that prefers more pairs first and shorter distances second).
    """
    p = np.unique(np.asarray(pred, dtype=np.float64))
    r = np.asarray(ref, dtype=np.float64)
    if p.size == 0 or r.size == 0:
        return 0
    d = np.abs(p[:, None] - r[None, :])
    ok = d <= tolerance + 1e-9
    if not ok.any():
        return 0
    # Cost: an admissible pair costs its distance, an inadmissible one more than any
    # complete set of admissible pairs, so the optimum maximises the number of hits.
    big = (tolerance + 1.0) * (min(p.size, r.size) + 1)
    cost = np.where(ok, d, big)
    rows, cols = linear_sum_assignment(cost)
    return int(ok[rows, cols].sum())


@dataclass(frozen=True)
class SegmentationScore:
    """Boundary counts and the rates derived from them (micro-averaged when summed)."""

    hits: int
    n_pred: int
    n_ref: int

    @property
    def hit_rate(self) -> float:
        """``HR = hits / N_ref`` (= recall)."""
        return self.hits / self.n_ref if self.n_ref else math.nan

    @property
    def over_segmentation(self) -> float:
        """``OS = N_pred / N_ref - 1``."""
        return self.n_pred / self.n_ref - 1.0 if self.n_ref else math.nan

    @property
    def precision(self) -> float:
        return self.hits / self.n_pred if self.n_pred else math.nan

    @property
    def recall(self) -> float:
        return self.hit_rate

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r):
            return 0.0 if self.n_ref and not self.n_pred else math.nan
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def r_value(self) -> float:
        """R-value (Räsänen et al., 2009): 1 for a perfect segmentation, penalises over-segmentation."""
        hr, os_ = self.hit_rate, self.over_segmentation
        if math.isnan(hr):
            return math.nan
        r1 = math.sqrt((1.0 - hr) ** 2 + os_**2)
        r2 = (-os_ + hr - 1.0) / math.sqrt(2.0)
        return 1.0 - (abs(r1) + abs(r2)) / 2.0

    def __add__(self, other: "SegmentationScore") -> "SegmentationScore":
        return SegmentationScore(self.hits + other.hits, self.n_pred + other.n_pred, self.n_ref + other.n_ref)

    @classmethod
    def compute(cls, pred: np.ndarray, ref: np.ndarray, tolerance: float) -> "SegmentationScore":
        """Score one utterance (``pred``, ``ref`` and ``tolerance`` in one unit)."""
        return cls(match_boundaries(pred, ref, tolerance), int(np.unique(np.asarray(pred)).size), int(np.asarray(ref).size))

    @classmethod
    def total(cls, scores: Iterable["SegmentationScore"]) -> "SegmentationScore":
        """Micro-average: sum the counts of many utterances."""
        out = cls(0, 0, 0)
        for s in scores:
            out = out + s
        return out

    def as_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        for k in ("hit_rate", "over_segmentation", "precision", "recall", "f1", "r_value"):
            d[k] = getattr(self, k)
        return d


def _tolerance_in(unit: Unit, tolerance: float) -> float:
    if unit == "frame":
        return tolerance / FRAME_SECONDS
    if unit == "second":
        return tolerance
    raise ValueError(f"unit must be 'frame' or 'second', got {unit!r}")


def _score_item(pred_frames: np.ndarray, ref: np.ndarray, tol: float, unit: Unit) -> SegmentationScore:
    pred = boundary_times(pred_frames) if unit == "second" else pred_frames
    return SegmentationScore.compute(pred, np.asarray(ref), tol)


def score(
    test_items: Iterable[SegItem],
    alpha: float,
    beta: float,
    *,
    tolerance: float = 0.02,
    unit: Unit = "frame",
    centre: Centre = "frame",
) -> SegmentationScore:
    """Detect boundaries on every item and return the summed (micro-averaged) score.

    Parameters
    ----------
    test_items
        ``(features [T, d], reference boundaries)`` pairs.
    tolerance
        Seconds (20 ms default); converted to frames when ``unit="frame"``.
    unit
        Unit of the reference boundaries: frame indices (as from
        :func:`reference_boundaries`) or seconds (predictions are then placed
        with :func:`boundary_times`).
    """
    tol = _tolerance_in(unit, tolerance)
    return SegmentationScore.total(
        _score_item(detect_boundaries(f, alpha, beta, centre=centre), ref, tol, unit) for f, ref in test_items
    )


def grid_scores(
    alpha_grid: Sequence[float],
    beta_grid: Sequence[float],
    items: Iterable[SegItem],
    *,
    tolerance: float = 0.02,
    unit: Unit = "frame",
    centre: Centre = "frame",
) -> pd.DataFrame:
    """Micro-averaged scores of every ``(alpha, beta)`` pair, one row each, in grid order.

    Distances are computed once per item and the Gram matrix once per ``alpha``.
    Columns: ``alpha, beta, hits, n_pred, n_ref, hit_rate, over_segmentation,
    precision, recall, f1, r_value``.
    """
    alphas, betas = list(alpha_grid), list(beta_grid)
    if not alphas or not betas:
        raise ValueError("alpha_grid and beta_grid must be non-empty")
    tol = _tolerance_in(unit, tolerance)
    totals = {(a, b): SegmentationScore(0, 0, 0) for a, b in itertools.product(alphas, betas)}
    for features, ref in items:
        dist = pairwise_distances(features)
        for a in alphas:
            K = gram_matrix(alpha=a, distances=dist)
            for b in betas:
                totals[(a, b)] = totals[(a, b)] + _score_item(_boundaries_from_K(K, b, centre), ref, tol, unit)
    rows = [{"alpha": a, "beta": b, **s.as_dict()} for (a, b), s in totals.items()]
    return pd.DataFrame(rows)


def tune(
    alpha_grid: Sequence[float],
    beta_grid: Sequence[float],
    dev_items: Iterable[SegItem],
    *,
    tolerance: float = 0.02,
    unit: Unit = "frame",
    centre: Centre = "frame",
) -> tuple[float, float]:
    """Best ``(alpha, beta)`` by micro-averaged R-value on the dev items.

    Ties (equal R) go to the first pair in grid order (``alpha`` outer loop,
    ``beta`` inner), so pass grids in the order you prefer. NaN R-values (no
    reference boundaries) never win; if all are NaN a ValueError is raised.
    """
    table = grid_scores(alpha_grid, beta_grid, dev_items, tolerance=tolerance, unit=unit, centre=centre)
    r = table["r_value"].to_numpy(dtype=np.float64)
    if np.isnan(r).all():
        raise ValueError("no reference boundaries in the dev items; cannot tune alpha/beta")
    best = int(np.nanargmax(r))  # first maximum in grid order
    return float(table["alpha"].iloc[best]), float(table["beta"].iloc[best])


def alpha_grid(items: Iterable[SegItem] | Iterable[np.ndarray], factors: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> list[float]:
    """Kernel widths scaled to the features: ``factor x`` median off-diagonal distance.

    Attention rows, MFCCs and hidden states have distances orders of magnitude
    apart, so a fixed ``alpha`` grid cannot serve all three; scaling by the
    median distance of the (dev) items makes one set of factors portable.
    """
    meds = []
    for it in items:
        f = it[0] if isinstance(it, tuple) else it
        d = pairwise_distances(f)
        iu = np.triu_indices(d.shape[0], k=1)
        if iu[0].size:
            meds.append(np.median(d[iu]))
    if not meds:
        raise ValueError("alpha_grid needs at least one item with two or more frames")
    scale = float(np.median(meds)) or 1.0
    return [float(f) * scale for f in factors]


# --------------------------------------------------------------------------- MFCC baseline


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int = 26, n_fft: int = 512, sample_rate: int = frames.SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters ``[n_filters, n_fft // 2 + 1]`` (python_speech_features layout)."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((n_fft + 1) * _mel_to_hz(mels) / sample_rate).astype(np.int64)
    k = np.arange(n_fft // 2 + 1)[None, :]
    left, centre, right = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    up = (k - left) / np.maximum(centre - left, 1)
    down = (right - k) / np.maximum(right - centre, 1)
    return np.where((k >= left) & (k < centre), up, 0.0) + np.where((k >= centre) & (k < right), down, 0.0)


def _delta(feat: np.ndarray, N: int = 2) -> np.ndarray:
    """Regression deltas over +-N frames with edge padding (python_speech_features ``delta``)."""
    T = feat.shape[0]
    padded = np.pad(feat, ((N, N), (0, 0)), mode="edge")
    num = sum(n * (padded[N + n : N + n + T] - padded[N - n : N - n + T]) for n in range(1, N + 1))
    return num / (2 * sum(n * n for n in range(1, N + 1)))


def mfcc_features(
    wave: np.ndarray,
    sample_rate: int = frames.SAMPLE_RATE,
    *,
    n_ceps: int = 13,
    n_filters: int = 26,
    n_fft: int = 512,
    deltas: bool = False,
    cmvn: bool = True,
) -> np.ndarray:
    """MFCCs on the shared 20 ms grid: row ``t`` is computed from samples ``[320 t, 320 t + 400)``.

    Same window (400 samples) and hop (320) as the transformer front-end, so
    row ``t`` aligns with frame ``t`` of the attention maps and the label table
    and the baseline is scored on identical frames. Implemented in numpy/scipy
    with the ``python_speech_features`` recipe (pre-emphasis 0.97, Hamming
    window, ``n_fft``-point power spectrum, ``n_filters`` mel filters, log,
    orthonormal DCT-II, liftering 22, c0 replaced by the log frame energy) so no
    extra dependency is needed; a test checks it against that package when it
    is installed. ``deltas`` appends first and second derivatives; ``cmvn``
    normalises each coefficient to zero mean and unit variance over the
    utterance so that the kernel distances are not dominated by c0.

    Returns ``[frames.n_frames(len(wave)), n_ceps * (3 if deltas else 1)]`` float32.
    """
    if sample_rate != frames.SAMPLE_RATE:
        raise ValueError(f"expected {frames.SAMPLE_RATE} Hz audio (the shared frame grid), got {sample_rate} Hz; resample first")
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"wave must be mono [n_samples], got shape {x.shape}")
    width = n_ceps * (3 if deltas else 1)
    T = frames.n_frames(x.size)
    if T == 0:
        return np.zeros((0, width), dtype=np.float32)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    starts = np.arange(T) * frames.HOP
    if starts[-1] + frames.RECEPTIVE_FIELD > x.size:  # cannot happen for the conv grid; guard anyway
        x = np.pad(x, (0, starts[-1] + frames.RECEPTIVE_FIELD - x.size))
    segs = x[starts[:, None] + np.arange(frames.RECEPTIVE_FIELD)[None, :]] * np.hamming(frames.RECEPTIVE_FIELD)
    power = np.abs(np.fft.rfft(segs, n_fft)) ** 2 / n_fft
    tiny = np.finfo(np.float64).eps
    energy = np.maximum(power.sum(axis=1), tiny)
    fbank = np.maximum(power @ mel_filterbank(n_filters, n_fft, sample_rate).T, tiny)
    ceps = dct(np.log(fbank), type=2, axis=1, norm="ortho")[:, :n_ceps]
    ceps *= 1.0 + (22 / 2.0) * np.sin(np.pi * np.arange(n_ceps) / 22)
    ceps[:, 0] = np.log(energy)
    if deltas:
        d1 = _delta(ceps)
        ceps = np.hstack([ceps, d1, _delta(d1)])
    if cmvn:
        sd = ceps.std(axis=0)
        ceps = (ceps - ceps.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return ceps.astype(np.float32)


# --------------------------------------------------------------------------- summary across upstreams

#: Columns of :func:`segmentation_summary`.
SUMMARY_COLUMNS = ["upstream", "feature", "layer", "head", "alpha", "beta", "hit_rate", "over_segmentation",
                   "precision", "recall", "f1", "r_value", "tune_r_value", "hits", "n_pred", "n_ref"]
_SUMMARY_FEATURES = {"attention": "attention (best head)", "hidden": "hidden state (best layer)", "mfcc": "MFCC"}


def segmentation_summary(tables: "dict[str, pd.DataFrame]") -> pd.DataFrame:
    """Best attention head, best hidden state and MFCC per upstream, chosen on the tuning split.

    Parameters
    ----------
    tables
        upstream -> its segmentation table (one row per feature, with
        ``feature``, ``layer``, ``head``, ``tune_r_value`` (R on the tuning
        split) and the report-split scores ``hit_rate, over_segmentation,
        precision, recall, f1, r_value, hits, n_pred, n_ref``, ``alpha``, ``beta``).

    Returns
    -------
    One row per (upstream, feature kind), kinds in the order attention, hidden,
    MFCC; ``feature`` is a readable label ("attention (best head)", ...). The
    head / layer of a kind is the one with the highest R on the tuning split
    (first on ties), so the report split is never used for the choice.
    """
    rows = []
    for upstream, table in tables.items():
        for kind, label in _SUMMARY_FEATURES.items():
            t = table[table["feature"] == kind]
            if t.empty:
                continue
            best = t.loc[t["tune_r_value"].astype(float).fillna(-np.inf).idxmax()]
            row = {"upstream": upstream, "feature": label}
            for col in SUMMARY_COLUMNS[2:]:
                v = best.get(col, np.nan)
                row[col] = None if (col in ("layer", "head") and pd.isna(v)) else v
            rows.append(row)
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("layer", "head"):
        out[col] = out[col].astype("Int64")
    return out
