"""Per-frame F0 on the shared 20 ms grid, and low / mid / high pitch groups.

The property-neuron study (Lin et al., 2024) groups voiced frames into three
pitch groups and looks for neurons that fire for one group.  F0 therefore has
to live on exactly the same frames as the labels and the activations
(:mod:`speechdissect.frames`): Praat's pitch tracker (through
praat-parselmouth) runs with its own frame times, and its contour is sampled
at the grid's frame centres (sample ``320 t + 200``).

Sampling rule: a grid frame is voiced when the Praat frame nearest to its
centre is voiced; its F0 is then the linear interpolation of the two Praat
frames around the centre (or the nearest one when only that one is voiced).
Unvoiced frames get F0 = 0 and an empty pitch group.

Typical use::

    f0 = {utt: frame_f0(path) for utt, path in files.items()}   # or f0_for_files(files)
    table, thresholds = pitch_table(labels, f0)                  # terciles of voiced frames
    table, thresholds = pitch_table(labels, f0, thresholds={"overall": (129.03, 179.78)})
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from speechdissect.frames import HOP, SAMPLE_RATE, frame_centres, n_frames

__all__ = [
    "PITCH_FLOOR",
    "PITCH_CEILING",
    "GROUPS",
    "frame_f0",
    "f0_for_files",
    "pitch_thresholds",
    "pitch_groups",
    "pitch_table",
]

PITCH_FLOOR = 60.0
PITCH_CEILING = 500.0
GROUPS = ("low", "mid", "high")


def _read_wave(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        wave, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        raise ValueError(f"corrupt or unreadable audio: {path} ({exc})") from exc
    return wave.mean(axis=1), int(sr)


def frame_f0(
    wave: np.ndarray | str | os.PathLike,
    sr: int | None = None,
    *,
    pitch_floor: float = PITCH_FLOOR,
    pitch_ceiling: float = PITCH_CEILING,
    time_step: float = 0.01,
) -> np.ndarray:
    """F0 (Hz) of every frame of the shared grid, 0 for unvoiced frames.

    Parameters
    ----------
    wave
        Mono samples, or the path of an audio file (read with soundfile).
    sr
        Sample rate of ``wave``; must be 16 000 because the grid is defined in
        16 kHz samples.  Ignored for paths (the file's own rate is checked).
    pitch_floor, pitch_ceiling
        Praat's search range (Hz).  The default 60–500 Hz covers both genders.
    time_step
        Praat's analysis step (s).  Half the 20 ms hop, so that every grid
        centre has a Praat frame within 5 ms.

    Returns
    -------
    np.ndarray
        float64 ``[n_frames(len(wave))]``.

    Raises
    ------
    ValueError
        If the sample rate is not 16 kHz (naming the file when given a path).
    """
    import parselmouth

    if isinstance(wave, (str, os.PathLike)):
        path = wave
        wave, file_sr = _read_wave(path)
        if file_sr != SAMPLE_RATE:
            raise ValueError(
                f"wrong sample rate: {path} is {file_sr} Hz, the frame grid needs {SAMPLE_RATE} Hz "
                f"(resample it first, e.g. `sox in.wav -r {SAMPLE_RATE} out.flac`)"
            )
    else:
        if sr is None or int(sr) != SAMPLE_RATE:
            raise ValueError(
                f"wrong sample rate: got sr={sr}, the frame grid needs {SAMPLE_RATE} Hz (resample first)"
            )
        wave = np.asarray(wave, dtype=np.float64)
        if wave.ndim != 1:
            raise ValueError(f"expected a mono 1-D wave, got shape {wave.shape}")

    n = n_frames(len(wave))
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    # Praat needs at least 3 periods of the floor in one window.
    if len(wave) / SAMPLE_RATE < 3.0 / pitch_floor + time_step:
        return out
    pitch = parselmouth.Sound(wave, sampling_frequency=SAMPLE_RATE).to_pitch(
        time_step=time_step, pitch_floor=pitch_floor, pitch_ceiling=pitch_ceiling
    )
    return _sample_contour(pitch.xs(), pitch.selected_array["frequency"], frame_centres(n), time_step)


def _sample_contour(times: np.ndarray, freq: np.ndarray, centres: np.ndarray, time_step: float) -> np.ndarray:
    """Sample a Praat contour (0 = unvoiced) at ``centres`` with the nearest-voicing rule."""
    out = np.zeros(len(centres), dtype=np.float64)
    if len(times) == 0:
        return out
    freq = np.nan_to_num(np.asarray(freq, dtype=np.float64), nan=0.0)
    j = np.clip(np.searchsorted(times, centres), 1, max(len(times) - 1, 1))  # times[j-1] <= c < times[j]
    if len(times) == 1:
        ok = np.abs(centres - times[0]) <= time_step
        out[ok & (freq[0] > 0)] = freq[0]
        return out
    left, right = j - 1, j
    nearest = np.where(np.abs(centres - times[left]) <= np.abs(times[right] - centres), left, right)
    within = np.abs(centres - times[nearest]) <= time_step  # outside Praat's range: unvoiced
    voiced = within & (freq[nearest] > 0)
    both = voiced & (freq[left] > 0) & (freq[right] > 0)
    w = np.clip((centres - times[left]) / (times[right] - times[left]), 0.0, 1.0)
    out[voiced] = freq[nearest][voiced]
    out[both] = ((1 - w) * freq[left] + w * freq[right])[both]
    return out


def f0_for_files(files: Mapping[str, str | os.PathLike], *, progress: bool = True, **kwargs) -> dict[str, np.ndarray]:
    """:func:`frame_f0` for many files (``{utterance: path}``), with a progress bar.

    Keyword arguments go to :func:`frame_f0`.
    """
    from tqdm.auto import tqdm

    return {
        utt: frame_f0(path, **kwargs)
        for utt, path in tqdm(files.items(), desc="F0", unit="utt", disable=not progress)
    }


def pitch_thresholds(f0_values: np.ndarray | Sequence[float], quantiles: Sequence[float] = (1 / 3, 2 / 3)) -> tuple[float, float]:
    """Low/mid and mid/high boundaries (Hz): quantiles of the voiced values.

    Unvoiced entries (0, negative or NaN) are ignored, so the default gives
    terciles of the voiced frames: each group holds a third of them.

    Raises
    ------
    ValueError
        If there is no voiced value, or the quantiles are not two increasing numbers in (0, 1).
    """
    q = [float(x) for x in quantiles]
    if len(q) != 2 or not (0.0 < q[0] < q[1] < 1.0):
        raise ValueError(f"quantiles must be two increasing numbers in (0, 1), got {tuple(quantiles)}")
    v = np.asarray(f0_values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        raise ValueError("no voiced frames (F0 > 0): cannot compute pitch thresholds")
    lo, hi = np.quantile(v, q)
    return float(lo), float(hi)


def pitch_groups(f0: np.ndarray | Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Pitch group of every frame: ``low`` (< t1), ``mid`` (t1 ≤ f0 < t2), ``high`` (≥ t2), ``''`` unvoiced.

    Returns an object array of str, so that it drops into a DataFrame column.
    """
    lo, hi = (float(t) for t in thresholds)
    if not lo <= hi:
        raise ValueError(f"thresholds must be increasing, got {tuple(thresholds)}")
    f = np.nan_to_num(np.asarray(f0, dtype=np.float64), nan=0.0)
    out = np.full(f.shape, "", dtype=object)
    voiced = f > 0
    out[voiced & (f < lo)] = "low"
    out[voiced & (f >= lo) & (f < hi)] = "mid"
    out[voiced & (f >= hi)] = "high"
    return out


def pitch_table(
    labels: pd.DataFrame,
    f0: Mapping[str, np.ndarray],
    thresholds: Mapping | None = None,
    quantiles: Sequence[float] = (1 / 3, 2 / 3),
) -> tuple[pd.DataFrame, dict]:
    """The pitch table of docs/formats.md for a label table, plus its thresholds.

    Parameters
    ----------
    labels
        Label table with at least ``utterance``, ``frame`` and ``gender``.
    f0
        ``{utterance: per-frame F0}`` as returned by :func:`frame_f0`.
    thresholds
        ``None`` to compute quantiles of the voiced frames of *this* table
        (overall and within each gender).  Or fixed thresholds, e.g. from the
        train split or from the paper: ``{"overall": (129.03, 179.78)}``,
        optionally with ``"by_gender": {"M": (lo, hi), "F": (lo, hi)}``; a
        gender missing from ``by_gender`` gets quantiles of its own frames.
    quantiles
        Quantiles used for computed thresholds (terciles by default).

    Returns
    -------
    table
        Same rows and order as ``labels``: ``utterance``, ``frame``, ``f0``,
        ``pitch_group`` (overall thresholds) and ``pitch_group_gender``
        (thresholds of the frame's gender).
    thresholds
        ``{"fixed": [...], "quantiles": [q1, q2], "overall": [lo, hi],
        "by_gender": {g: [lo, hi]}}``, JSON-serialisable; ``fixed`` lists which
        thresholds were given (``"overall"`` and/or genders) rather than computed.

    Raises
    ------
    ValueError
        If a column is missing, or an utterance has no F0 or fewer F0 frames than labelled frames.
    """
    missing = {"utterance", "frame", "gender"} - set(labels.columns)
    if missing:
        raise ValueError(f"label table lacks column(s) {sorted(missing)}")
    utts = labels["utterance"].to_numpy()
    frames = labels["frame"].to_numpy(dtype=np.int64)
    values = np.zeros(len(labels), dtype=np.float64)
    codes, uniques = pd.factorize(utts)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    for k, utt in enumerate(uniques):
        rows = order[bounds[k] : bounds[k + 1]]
        if utt not in f0:
            raise ValueError(f"no F0 for utterance {utt!r}")
        contour = np.asarray(f0[utt], dtype=np.float64)
        fr = frames[rows]
        if fr.size and (fr.max() >= len(contour) or fr.min() < 0):
            raise ValueError(
                f"utterance {utt!r}: label frame {int(fr.max())} but only {len(contour)} F0 frames "
                f"(label table and audio disagree on the {HOP}-sample grid)"
            )
        values[rows] = contour[fr]

    gender = labels["gender"].astype(str).to_numpy()
    given = dict(thresholds or {})
    if given.get("overall") is not None:
        overall = tuple(float(t) for t in given["overall"])
        fixed = ["overall"]
    else:
        overall = pitch_thresholds(values, quantiles)
        fixed = []
    by_gender: dict[str, tuple[float, float]] = {}
    fixed_gender = dict(given.get("by_gender") or {})
    group_gender = np.full(len(labels), "", dtype=object)
    for g in sorted(set(gender)):
        mask = gender == g
        if g in fixed_gender:
            by_gender[g] = tuple(float(t) for t in fixed_gender[g])
            fixed.append(g)
        else:
            voiced = values[mask] > 0
            if not voiced.any():
                continue  # no voiced frame of this gender: every group stays ''
            by_gender[g] = pitch_thresholds(values[mask], quantiles)
        group_gender[mask] = pitch_groups(values[mask], by_gender[g])

    table = pd.DataFrame(
        {
            "utterance": labels["utterance"].to_numpy(),
            "frame": frames.astype(np.int32),
            "f0": values.astype(np.float32),
            "pitch_group": pitch_groups(values, overall),
            "pitch_group_gender": group_gender,
        }
    )
    info = {
        "fixed": fixed,
        "quantiles": [float(q) for q in quantiles],
        "overall": [overall[0], overall[1]],
        "by_gender": {g: [t[0], t[1]] for g, t in by_gender.items()},
    }
    return table, info
