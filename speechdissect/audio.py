"""Reading audio for the models: every path that feeds an upstream goes through :func:`load_wav`.

The frame grid (and so every label) assumes 16 kHz mono, so anything else is an
error that names the file and the fix rather than a silent resample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .frames import SAMPLE_RATE


def load_wav(src: Any) -> np.ndarray:
    """Mono 16 kHz float32 waveform in [-1, 1] from a path, a numpy array or a torch tensor.

    Raises
    ------
    ValueError
        Naming the file: ``corrupt audio: PATH (...)`` when it cannot be decoded, or a wrong
        sample rate / channel count with the fix.
    """
    if hasattr(src, "detach") and hasattr(src, "cpu"):  # torch.Tensor
        return src.detach().cpu().float().numpy().reshape(-1)
    if isinstance(src, np.ndarray):
        return np.asarray(src, dtype=np.float32).reshape(-1)
    import soundfile as sf

    try:
        data, sr = sf.read(str(src), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types; re-raised with the path
        raise ValueError(f"corrupt audio: {src} ({exc})") from exc
    if sr != SAMPLE_RATE:
        raise ValueError(f"{src}: sample rate {sr} Hz, expected {SAMPLE_RATE} Hz (resample the corpus)")
    if data.shape[1] != 1:
        raise ValueError(f"{src}: {data.shape[1]} channels, expected mono (downmix the corpus)")
    return np.ascontiguousarray(data[:, 0])
