"""Audio loading, MFCC targets on the shared 20 ms grid and k-means helpers.

Used by the upstream trainers: HuBERT's first iteration predicts k-means
clusters of MFCC features (13 MFCC + deltas + delta-deltas), computed here on
exactly the frame grid of :mod:`speechdissect.frames` (25 ms window, 20 ms
hop, no padding at the edges: frame ``t`` covers samples ``[320 t, 320 t + 400)``),
so cluster label ``t`` is the target of the transformer's output frame ``t``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .. import frames
from ..audio import load_wav

__all__ = [
    "load_wav",
    "load_wavs",
    "mfcc_grid",
    "fit_kmeans",
    "assign_clusters",
    "stack_context",
]


def load_wavs(paths: Iterable[str | Path], min_samples: int = frames.RECEPTIVE_FIELD * 4) -> list[np.ndarray]:
    """Load every file; raise naming the first one shorter than ``min_samples``."""
    out = []
    for p in paths:
        w = load_wav(p)
        if len(w) < min_samples:
            raise ValueError(f"{p}: only {len(w)} samples (< {min_samples}); drop it from the training list")
        out.append(w)
    return out


def mfcc_grid(wav: np.ndarray | torch.Tensor, n_mfcc: int = 13, deltas: bool = True) -> np.ndarray:
    """MFCC (+ deltas + delta-deltas) on the shared 20 ms grid, ``[n_frames, d]`` float32.

    Kaldi-compatible MFCC (torchaudio.compliance.kaldi.mfcc, no dither,
    ``snip_edges=True``), 25 ms window and 20 ms hop, so row ``t`` describes
    samples ``[320 t, 320 t + 400)``, centred on sample ``320 t + 200``, and
    the row count equals :func:`speechdissect.frames.n_frames`.
    """
    import torchaudio

    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).view(1, -1)
    n_expected = frames.n_frames(x.shape[1])
    feats = torchaudio.compliance.kaldi.mfcc(
        x * 32768.0,  # kaldi works on the int16 scale; only changes c0
        sample_frequency=frames.SAMPLE_RATE,
        frame_length=1000.0 * frames.RECEPTIVE_FIELD / frames.SAMPLE_RATE,
        frame_shift=1000.0 * frames.HOP / frames.SAMPLE_RATE,
        num_ceps=n_mfcc,
        dither=0.0,
        snip_edges=True,
    )  # (T, n_mfcc)
    if deltas:
        f = feats.T.unsqueeze(0)
        d1 = torchaudio.functional.compute_deltas(f)
        d2 = torchaudio.functional.compute_deltas(d1)
        feats = torch.cat([f, d1, d2], dim=1)[0].T
    if feats.shape[0] != n_expected:  # pragma: no cover - guards the grid contract
        raise RuntimeError(f"MFCC gave {feats.shape[0]} frames, grid expects {n_expected}")
    return feats.numpy().astype(np.float32)


def stack_context(feats: np.ndarray, context: int) -> np.ndarray:
    """Frame ``t`` with its ``context`` neighbours on each side concatenated (edges repeated): ``[T, (2c+1) d]``.

    K-means of stacked frames gives targets closer to phones than single frames (a phone spans
    several 20 ms frames), at no training cost.
    """
    if context <= 0:
        return feats
    padded = np.pad(feats, ((context, context), (0, 0)), mode="edge")
    n = len(feats)
    return np.concatenate([padded[k: k + n] for k in range(2 * context + 1)], axis=1)


def fit_kmeans(
    features: Sequence[np.ndarray],
    n_clusters: int,
    seed: int,
    max_frames: int = 200_000,
    batch_size: int = 4096,
    max_iter: int = 100,
):
    """Fit scikit-learn ``MiniBatchKMeans`` on (at most ``max_frames``) stacked frames.

    Features are standardised (mean/std over the fitting frames) first; the
    returned dict holds ``kmeans``, ``mean``, ``std`` for :func:`assign_clusters`.
    """
    from sklearn.cluster import MiniBatchKMeans

    X = np.concatenate([np.asarray(f, dtype=np.float32) for f in features], axis=0)
    rng = np.random.default_rng(seed)
    if len(X) > max_frames:
        X = X[np.sort(rng.choice(len(X), max_frames, replace=False))]
    if len(X) < n_clusters:
        raise ValueError(f"only {len(X)} frames to fit {n_clusters} clusters: use fewer clusters or more audio")
    mean = X.mean(0)
    std = X.std(0) + 1e-5
    km = MiniBatchKMeans(
        n_clusters=n_clusters,
        random_state=seed,
        batch_size=batch_size,
        max_iter=max_iter,
        n_init=3,
        reassignment_ratio=0.0,
    )
    km.fit((X - mean) / std)
    return {"kmeans": km, "mean": mean, "std": std}


def assign_clusters(km: dict, feats: np.ndarray) -> np.ndarray:
    """Cluster index per frame (int64) for features from :func:`mfcc_grid`."""
    return km["kmeans"].predict((np.asarray(feats, dtype=np.float32) - km["mean"]) / km["std"]).astype(np.int64)
