"""Unit tests of the embedded corpus: Festival driver, pseudo-speakers, corpus tree."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest

import parselmouth  # noqa: F401  (required: the pseudo-speaker transform)
import soundfile as sf

from speechdissect.phones import FESTIVAL_FOLD, fold_festival
from speechdissect.corpus import festival as fest
from speechdissect.corpus import synthesize as syn
from speechdissect.corpus.festival import (
    FestivalError,
    parse_segs,
    parse_words,
    read_alignment,
    render_sentences,
    write_segs,
    write_words,
)
from speechdissect.corpus.synthesize import (
    VOCABULARY,
    make_sentences,
    make_speakers,
    plan_corpus,
    read_speakers,
    read_utterances,
    synthesize_corpus,
    transform_wave,
)
from speechdissect.pitch import frame_f0

@pytest.fixture(scope="module")
def festival_installed() -> None:
    """Festival and sox are required (the default corpus is synthesized with them): missing is a failure, not a skip."""
    missing = [tool for tool in ("festival", "sox") if shutil.which(tool) is None]
    assert not missing, f"{missing} not installed: the synthetic corpus needs them (README: apt-get install festival ...)"


needs_festival = pytest.mark.usefixtures("festival_installed")
SENTENCES = ["the cat sat on the mat", "she likes green cheese"]


@pytest.fixture(scope="module")
def renders(tmp_path_factory, festival_installed) -> dict[str, list]:
    """Two short sentences with each voice: one Festival process per voice."""
    d = tmp_path_factory.mktemp("festival")
    return {v: render_sentences(SENTENCES, v, d, names=[f"{v}{i}" for i in range(2)]) for v in fest.VOICES}


@needs_festival
@pytest.mark.parametrize("voice", sorted(fest.VOICES))
def test_festival_renders_with_exact_segments(renders, voice, tmp_path):
    for text, r in zip(SENTENCES, renders[voice]):
        info = sf.info(str(r.wav_path))
        assert info.samplerate == fest.VOICES[voice].sample_rate == r.sample_rate
        duration = info.frames / info.samplerate
        assert r.segments[0].phone == "pau" and r.segments[-1].phone == "pau"
        assert abs(r.segments[-1].end - duration) < 0.05
        assert all(b.start == a.end for a, b in zip(r.segments, r.segments[1:]))
        assert all(s.end > s.start for s in r.segments)
        assert [w.word for w in r.words] == text.split()
        assert all(fold_festival(s.phone) != "spn" for s in r.segments)  # raises on an unknown phone
        # the files we write are Festival's utt.save.segs / utt.save.words format and read back
        write_segs(tmp_path / "u.segs", r.segments)
        write_words(tmp_path / "u.words", r.words)
        assert (tmp_path / "u.segs").read_text().startswith("#\n")
        assert [s.phone for s in parse_segs(tmp_path / "u.segs")] == [s.phone for s in r.segments]
        assert [w for _, w in parse_words(tmp_path / "u.words")] == text.split()
        segs, words = read_alignment(tmp_path / "u.segs", tmp_path / "u.words")
        np.testing.assert_allclose([w.start for w in words], [w.start for w in r.words], atol=1e-5)
        np.testing.assert_allclose([s.end for s in segs], [s.end for s in r.segments], atol=1e-5)


@needs_festival
def test_vocabulary_is_in_lexicon_and_covers_cmu39():
    """One Festival call looks every word up; all must be lexicon entries, together covering CMU-39."""
    script = "(voice_kal_diphone)\n" + "".join(
        f'(format t "SD %s %l\\n" "{w}" (lex.lookup_all "{w}"))\n' for w in VOCABULARY
    )
    out = fest._run_scheme(shutil.which("festival"), script, timeout=60).stdout
    lines = [l for l in out.splitlines() if l.startswith("SD ")]
    assert len(lines) == len(VOCABULARY) == len(set(VOCABULARY))
    missing = [l.split()[1] for l in lines if l.split(None, 2)[2].strip() in ("nil", "()")]
    assert not missing, f"not in the lexicon: {missing}"
    phones = set()
    for l in lines:
        for tok in l.replace("(", " ").replace(")", " ").split()[2:]:
            if tok in FESTIVAL_FOLD:
                phones.add(FESTIVAL_FOLD[tok])
    cmu39 = set("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split())
    assert cmu39 <= phones, f"uncovered phones: {sorted(cmu39 - phones)}"


@needs_festival
def test_pseudo_speaker_transform_keeps_length_and_moves_f0(renders):
    kal = renders["kal"][1]
    wave, sr = sf.read(str(kal.wav_path))
    base = np.median((f := frame_f0(wave, sr))[f > 0])
    up = transform_wave(wave, sr, pitch_median=2 * base, formant_ratio=1.15, bass_db=-3, treble_db=3, eq_gain_db=4)
    assert len(up) == len(wave) and up.dtype == np.float32
    assert abs(np.max(np.abs(up)) - 10 ** (-1 / 20)) < 1e-3  # peak at level_db
    f_up = frame_f0(up, 16_000)
    assert np.median(f_up[f_up > 0]) == pytest.approx(2 * base, rel=0.1)

    slt = renders["slt"][1]
    wave32, sr32 = sf.read(str(slt.wav_path))
    assert sr32 == 32_000
    n_out = int(np.ceil(slt.segments[-1].end * 16_000)) + 7
    down = transform_wave(wave32, sr32, pitch_median=110.0, formant_ratio=0.86, n_out=n_out)
    assert len(down) == n_out
    f_down = frame_f0(down, 16_000)
    assert 100 < np.median(f_down[f_down > 0]) < 120
    # timing is kept: speech starts and ends where it does in the untransformed (resampled) wave
    plain = transform_wave(wave32, sr32, n_out=n_out)

    def edges(y: np.ndarray) -> tuple[float, float]:
        env = np.convolve(y.astype(float) ** 2, np.ones(160) / 160, "same")
        on = np.nonzero(env > 1e-3 * env.max())[0]
        return on[0] / 16_000, on[-1] / 16_000

    np.testing.assert_allclose(edges(down), edges(plain), atol=0.01)
    assert edges(plain)[0] > slt.segments[0].end - 0.02  # nothing before Festival's first pause ends


@needs_festival
def test_seeded_transform_is_bit_identical(renders):
    """Praat's PSOLA draws random pulses: with a seed the same input gives the same samples."""
    kal = renders["kal"][0]
    wave, sr = sf.read(str(kal.wav_path))
    kw = dict(pitch_median=220.0, pitch_range=2.0, formant_ratio=1.15, treble_db=3)
    a = transform_wave(wave, sr, seed=syn.utterance_seed(0, "u1"), **kw)
    b = transform_wave(wave, sr, seed=syn.utterance_seed(0, "u1"), **kw)
    assert np.array_equal(a, b)
    c = transform_wave(wave, sr, seed=syn.utterance_seed(0, "u2"), **kw)
    assert not np.array_equal(a, c)  # the seed is what makes them equal
    assert syn.utterance_seed(0, "u1") == syn.utterance_seed(0, "u1") != syn.utterance_seed(1, "u1")


@needs_festival
def test_same_corpus_twice_is_bit_identical(tmp_path):
    """Two builds with the same seed (two workers, so chunk order may differ) give identical files."""
    kw = dict(n_speakers=2, utterances_per_speaker=2, words_per_sentence=(3, 4), seed=3, n_heldout=0,
              jobs=2, chunk_size=1, progress=False)
    synthesize_corpus(tmp_path / "a", **kw)
    synthesize_corpus(tmp_path / "b", **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()) == files
    assert sum(p.suffix == ".flac" for p in files) == 4
    for rel in files:
        if rel.name == "corpus.json":  # records the seconds taken
            continue
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_speakers_and_sentences_are_balanced_and_seeded():
    specs = make_speakers(12, seed=0)
    assert Counter(s.gender for s in specs) == {"M": 6, "F": 6}
    assert Counter((s.gender, s.heldout) for s in specs)[("M", True)] == 1
    assert Counter((s.gender, s.heldout) for s in specs)[("F", True)] == 1
    assert {s.voice for s in specs if s.gender == "M"} == {"kal", "ked", "slt"}
    for s in specs:
        lo, hi = syn.F0_RANGE[s.gender]
        assert lo <= s.f0_target <= hi
    assert make_speakers(12, seed=0) == specs and make_speakers(12, seed=1) != specs
    with pytest.raises(ValueError):
        make_speakers(4, n_heldout=3)

    sents = make_sentences(200, (4, 8), seed=3)
    assert sents == make_sentences(200, (4, 8), seed=3)
    counts = Counter(w for s in sents for w in s.split())
    assert set(counts) == set(VOCABULARY) and max(counts.values()) - min(counts.values()) <= 3
    for s in sents:
        words = s.split()
        assert 4 <= len(words) <= 8 and len(set(words)) == len(words)


def test_plan_splits_regular_and_heldout_speakers():
    specs = make_speakers(6, seed=0, n_heldout=2)
    plan = plan_corpus(specs, utterances_per_speaker=10, seed=0)
    assert plan["utterance"].is_unique
    for s in specs:
        splits = Counter(plan.loc[plan["speaker"] == s.speaker, "split"])
        if s.heldout:
            assert splits == {"test": 10}
        else:
            assert splits == {"train": 7, "dev": 1, "test": 2}


@needs_festival
def test_tiny_corpus_tree(tmp_path):
    out = tmp_path / "corpora" / "synthetic"
    meta = synthesize_corpus(out, n_speakers=4, utterances_per_speaker=2, words_per_sentence=(3, 4), seed=1, jobs=2, progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["synthetic"]  # no temp dir left
    assert meta["n_utterances"] == 8 and meta["speakers_per_gender"] == {"M": 2, "F": 2}
    assert json.loads((out / "corpus.json").read_text())["n_utterances"] == 8

    spk = read_speakers(out)
    assert list(spk.columns[:5]) == ["speaker", "gender", "voice", "pitch_cents", "f0_target"]
    assert spk["heldout"].sum() == 2 and set(spk.loc[spk["heldout"], "split"]) == {"test"}
    for _, row in spk.iterrows():  # measured F0 near the target, so the gender label is plausible
        assert row["f0_median"] == pytest.approx(row["f0_target"], rel=0.12)

    utts = read_utterances(out)
    assert len(utts) == 8
    trans: dict[str, str] = {}
    for f in out.glob("*/*/*/*.trans.txt"):
        split, speaker, chapter = f.parts[-4:-1]
        assert f.name == f"{speaker}-{chapter}.trans.txt"
        for line in f.read_text().splitlines():
            uid, text = line.split(" ", 1)
            assert uid.startswith(f"{speaker}-{chapter}-") and (f.parent / f"{uid}.flac").exists()
            trans[uid] = text
    assert sorted(trans) == sorted(utts["utterance"])
    for _, u in utts.iterrows():
        info = sf.info(u["path"])
        assert info.samplerate == 16_000 and info.channels == 1 and info.subtype == "PCM_16"
        assert info.frames == u["n_samples"]
        segs, words = read_alignment(u["segs"], u["words"])
        assert " ".join(w.word.upper() for w in words) == trans[u["utterance"]] == u["text"].upper()
        assert segs[-1].end == pytest.approx(info.frames / 16_000, abs=1e-5)  # segments cover the audio
        assert all(w.start < w.end for w in words)

    with pytest.raises(FileExistsError):
        synthesize_corpus(out, n_speakers=2, utterances_per_speaker=1, n_heldout=0, progress=False)


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(syn, "check_festival", lambda voices: "festival")
    monkeypatch.setattr(syn.shutil, "which", lambda name: "/usr/bin/" + name)

    def boom(job):
        raise FestivalError("synthetic failure")

    monkeypatch.setattr(syn, "_render_chunk", boom)
    with pytest.raises(FestivalError, match="synthetic failure"):
        synthesize_corpus(tmp_path / "c", n_speakers=2, utterances_per_speaker=1, n_heldout=0, jobs=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_festival_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(fest.shutil, "which", lambda name: None)
    with pytest.raises(FestivalError, match="apt-get install festival festvox-kallpc16k"):
        fest.check_festival()
    with pytest.raises(FestivalError, match="apt-get install"):
        render_sentences(["the cat"], "kal", tmp_path)
    with pytest.raises(ValueError, match="no punctuation"):
        render_sentences(["the cat."], "kal", tmp_path)
    with pytest.raises(ValueError, match="diphone"):
        render_sentences(["the cat"], "slt", tmp_path, f0_mean=120)
