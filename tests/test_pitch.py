"""Unit tests of speechdissect.pitch: F0 on the shared grid, thresholds, groups, the pitch table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import parselmouth  # noqa: F401  (required: F0 extraction)

from speechdissect.frames import frame_centres, n_frames
from speechdissect.pitch import _sample_contour, frame_f0, pitch_groups, pitch_table, pitch_thresholds

SR = 16_000


def pulse_train(f0: float, dur: float, sr: int = SR) -> np.ndarray:
    """A crude voiced sound: decaying resonances excited at exactly ``f0``."""
    n = int(dur * sr)
    exc = np.zeros(n)
    exc[(np.arange(0, dur, 1 / f0) * sr).astype(int)] = 1.0
    t = np.arange(int(0.01 * sr)) / sr
    ir = np.exp(-t * 300) * np.sin(2 * np.pi * 700 * t) + 0.5 * np.exp(-t * 400) * np.sin(2 * np.pi * 1200 * t)
    return np.convolve(exc, ir)[:n]


@pytest.fixture(scope="module")
def two_pitches() -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """0.3 s silence, 1 s at 120 Hz, 0.3 s silence, 0.8 s at 220 Hz (sine), 0.3 s silence."""
    rng = np.random.default_rng(0)
    parts, spans, t = [], [], 0.0
    for kind, f0, dur in [("sil", 0, 0.3), ("pulse", 120.0, 1.0), ("sil", 0, 0.3), ("sine", 220.0, 0.8), ("sil", 0, 0.3)]:
        if kind == "sil":
            x = 1e-4 * rng.standard_normal(int(dur * SR))
        elif kind == "pulse":
            x = pulse_train(f0, dur)
        else:
            x = 0.5 * np.sin(2 * np.pi * f0 * np.arange(int(dur * SR)) / SR)
        parts.append(x)
        spans.append((t, t + dur, f0))
        t += dur
    return np.concatenate(parts), spans


def test_frame_f0_matches_known_pitch_on_the_grid(two_pitches):
    wave, spans = two_pitches
    f0 = frame_f0(wave, SR)
    assert f0.shape == (n_frames(len(wave)),)
    centres = frame_centres(len(f0))
    for start, end, target in spans:
        inner = (centres > start + 0.06) & (centres < end - 0.06)  # away from onsets/offsets
        assert inner.sum() > 5
        if target == 0:
            assert np.all(f0[inner] == 0), f"unvoiced frames in {start:.2f}-{end:.2f} s should be 0"
        else:
            assert np.all(np.abs(f0[inner] - target) < 3.0), (target, f0[inner])


def test_frame_f0_from_file_and_wrong_rate_names_file(tmp_path, two_pitches):
    import soundfile as sf

    wave, _ = two_pitches
    good = tmp_path / "good.flac"
    sf.write(good, wave.astype(np.float32) * 0.5, SR, subtype="PCM_16")
    assert len(frame_f0(good)) == n_frames(len(wave))
    bad = tmp_path / "spk-1-0001.wav"
    sf.write(bad, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match=r"spk-1-0001\.wav.*8000 Hz"):
        frame_f0(bad)
    with pytest.raises(ValueError, match="16000"):
        frame_f0(wave, 22050)
    with pytest.raises(ValueError, match="16000"):
        frame_f0(wave)  # an array needs its rate


def test_frame_f0_short_and_empty_waves():
    assert frame_f0(np.zeros(100), SR).shape == (0,)
    assert np.all(frame_f0(np.zeros(1200), SR) == 0)


def test_sample_contour_nearest_voicing_and_interpolation():
    times = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    freq = np.array([0.0, 100.0, 110.0, 0.0, 200.0])
    centres = np.array([0.012, 0.025, 0.034, 0.036, 0.0485, 0.08])
    out = _sample_contour(times, freq, centres, 0.01)
    # 0.012: nearest 0.01 unvoiced -> 0; 0.025: between two voiced -> 105;
    # 0.034: nearest 0.03 voiced, right neighbour unvoiced -> 110; 0.036: nearest 0.04 unvoiced -> 0
    # 0.0485: nearest 0.05 voiced, left unvoiced -> 200; 0.08: beyond the contour -> 0
    np.testing.assert_allclose(out, [0.0, 105.0, 110.0, 0.0, 200.0, 0.0])


def test_pitch_thresholds_are_voiced_quantiles():
    lo, hi = pitch_thresholds([0, 100, 200, 300, 0, np.nan, -1])
    assert lo == pytest.approx(100 + 200 / 3)
    assert hi == pytest.approx(100 + 400 / 3)
    assert pitch_thresholds([100, 200, 300, 400, 500], quantiles=(0.25, 0.75)) == (200.0, 400.0)
    with pytest.raises(ValueError, match="no voiced"):
        pitch_thresholds([0, 0, np.nan])
    with pytest.raises(ValueError, match="quantiles"):
        pitch_thresholds([100, 200], quantiles=(0.7, 0.3))


def test_pitch_groups_boundaries():
    g = pitch_groups([0, 129.0, 129.03, 150, 179.78, 250, np.nan], (129.03, 179.78))
    assert list(g) == ["", "low", "mid", "mid", "high", "high", ""]
    with pytest.raises(ValueError):
        pitch_groups([100], (200, 100))


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "utterance": ["a"] * 4 + ["b"] * 3,
            "frame": [0, 1, 2, 3, 0, 1, 2],
            "gender": ["M"] * 4 + ["F"] * 3,
            "phone": ["sil", "AA", "AA", "sil", "IY", "IY", "S"],
        }
    )


def test_pitch_table_terciles_overall_and_within_gender():
    f0 = {"a": np.array([0.0, 100.0, 120.0, 0.0]), "b": np.array([200.0, 260.0, 0.0])}
    table, th = pitch_table(_labels(), f0)
    assert list(table.columns) == ["utterance", "frame", "f0", "pitch_group", "pitch_group_gender"]
    assert list(table["utterance"]) == list(_labels()["utterance"])
    np.testing.assert_allclose(table["f0"], [0, 100, 120, 0, 200, 260, 0])
    # voiced: 100 120 200 260 -> terciles at positions 1 and 2 (numpy linear): 120, 200
    assert th["overall"] == pytest.approx([120.0, 200.0])
    assert list(table["pitch_group"]) == ["", "low", "mid", "", "high", "high", ""]
    assert th["by_gender"]["M"] == pytest.approx([100 + 20 / 3, 100 + 40 / 3])
    assert list(table["pitch_group_gender"]) == ["", "low", "high", "", "low", "high", ""]
    assert th["fixed"] == []


def test_pitch_table_fixed_thresholds_and_errors():
    f0 = {"a": np.array([0.0, 100.0, 150.0, 200.0]), "b": np.array([120.0, 170.0, 0.0])}
    table, th = pitch_table(_labels(), f0, thresholds={"overall": (129.03, 179.78), "by_gender": {"M": (110, 160)}})
    assert list(table["pitch_group"]) == ["", "low", "mid", "high", "low", "mid", ""]
    assert list(table["pitch_group_gender"])[:4] == ["", "low", "mid", "high"]
    assert th["overall"] == [129.03, 179.78] and th["fixed"] == ["overall", "M"]
    assert "F" in th["by_gender"]  # computed from F's own frames
    with pytest.raises(ValueError, match="no F0 for utterance 'b'"):
        pitch_table(_labels(), {"a": f0["a"]})
    with pytest.raises(ValueError, match="utterance 'b'.*frame 2"):
        pitch_table(_labels(), {"a": f0["a"], "b": np.array([1.0, 2.0])})
    with pytest.raises(ValueError, match="gender"):
        pitch_table(_labels().drop(columns="gender"), f0)
