"""The one frame grid shared by labels, pitch and activations.

HuBERT / wav2vec 2.0 / WavLM front-ends are a stack of strided convolutions
with kernels (10, 3, 3, 3, 3, 2, 2) and strides (5, 2, 2, 2, 2, 2, 2): the
receptive field is 400 samples and the hop 320 samples (20 ms at 16 kHz).
Frame ``t`` covers samples ``[320 t, 320 t + 400)`` and is labelled by what is
heard at its centre, sample ``320 t + 200``.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
HOP = 320
RECEPTIVE_FIELD = 400


def conv_output_length(n_samples: int, kernels=(10, 3, 3, 3, 3, 2, 2), strides=(5, 2, 2, 2, 2, 2, 2)) -> int:
    """Number of frames the conv front-end emits for ``n_samples`` (same floor rounding as torch Conv1d)."""
    length = int(n_samples)
    for k, s in zip(kernels, strides):
        length = (length - k) // s + 1
        if length <= 0:
            return 0
    return length


def n_frames(n_samples: int) -> int:
    """Frames for an utterance of ``n_samples`` at 16 kHz on the shared grid."""
    return conv_output_length(n_samples)


def frame_centres(n: int, hop: int = HOP, receptive_field: int = RECEPTIVE_FIELD, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Centre times (seconds) of frames ``0..n-1``."""
    return (np.arange(n) * hop + receptive_field / 2) / sample_rate


def intervals_to_frames(ends: np.ndarray, labels: list, n: int, starts: np.ndarray | None = None, fill=None) -> list:
    """Label each of ``n`` frames by the interval containing its centre.

    ``ends`` are the interval end times (seconds, increasing); when ``starts`` is
    None the intervals are contiguous from 0. A centre falling exactly on a
    boundary belongs to the later interval. Frames past the last end get ``fill``.
    """
    ends = np.asarray(ends, dtype=float)
    centres = frame_centres(n)
    idx = np.searchsorted(ends, centres, side="right")
    out = []
    for t, i in enumerate(idx):
        if i >= len(labels) or (starts is not None and centres[t] < starts[i]):
            out.append(fill)
        else:
            out.append(labels[i])
    return out
