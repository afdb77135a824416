"""The embedded synthetic corpus: Festival voices, pseudo-speakers, exact timings.

Why: the workflow must run end to end without network or a forced aligner.
Festival knows where it put every phone and word, so labels are exact; three
installed voices (kal, ked: male diphone; slt: female HTS) become many
pseudo-speakers of both genders by changing F0, formants (vocal-tract
length), speaking rate, timbre and level.  A closed vocabulary of 96 common
words that covers all 39 CMU phones makes words repeat across speakers.

Layout written under ``out_dir`` (LibriSpeech-like, see docs/formats.md)::

    {split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt:04d}.flac   16 kHz mono PCM16
    {split}/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt         UTTID WORDS IN CAPS
    alignments/{uttid}.segs     Festival utt.save.segs format: '#', then 'END 100 PHONE'
    alignments/{uttid}.words    Festival utt.save.words format: '#', then 'END 100 word'
    speakers.tsv                one row per speaker (see below)
    utterances.tsv              utterance, speaker, chapter, split, n_samples, duration, text
    corpus.json                 parameters, counts and hours

Alignments: times in seconds from the start of the flac.  Segments are
contiguous from 0; phones are Festival radio phones with ``pau`` for silence
(``speechdissect.phones.fold_festival`` maps them to CMU-39).  The last ``pau`` is stretched to
the end of the audio, so the segments cover every sample.  ``.words`` has
only end times; ``festival.read_alignment`` recovers the starts.

Speakers: ids ``101``, ``102``, … with one chapter each (``{speaker}0``).
Genders alternate (M, F, M, …), so 12 speakers are 6 M + 6 F.  Male
speakers come from kal, ked and slt (slt lowered in F0 and formants), female
ones from slt, kal and ked (raised).  ``speakers.tsv`` columns: speaker,
gender, voice, pitch_cents (F0 target relative to the voice's own F0),
f0_target, f0_median (measured on the written audio), formant_ratio, rate,
eq_freq, eq_gain_db, bass_db, treble_db, level_db, heldout, split (the split
dirs holding the speaker, comma-joined), n_utterances.

Splits: every regular speaker has utterances in train, dev and test
(utterance-level split, default 70/10/20 %), so speaker-ID probes see the
same speakers in training and test.  ``n_heldout`` speakers (default 2:
1 M, 1 F, flagged ``heldout`` in speakers.tsv) have all their utterances in
``test`` only, for analyses that need unseen speakers.

How the pseudo-speakers keep timings exact: diphone voices get their F0
targets inside Festival (durations untouched); the HTS voice's F0 and every
formant shift use Praat's PSOLA "Change gender" (duration factor 1, timing
error < 2 ms), and timbre is a linear filter chain in sox (equalizer, bass,
treble, resampling to 16 kHz).  sox's ``pitch`` effect is NOT used: its WSOLA
moves events by 10–50 ms.  Each output is trimmed/padded to exactly
``round(n_in * 16000 / sr_in)`` samples (at least the last segment end).

Writing is atomic: the tree is built in ``.{name}.tmp-{pid}`` next to
``out_dir`` and renamed into place at the end.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from speechdissect.corpus.festival import (
    APT_HINT,
    VOICES,
    FestivalError,
    Rendering,
    Segment,
    check_festival,
    render_sentences,
    write_segs,
    write_words,
)
from speechdissect.frames import SAMPLE_RATE

__all__ = [
    "VOCABULARY",
    "DEFAULT_SPLITS",
    "SpeakerSpec",
    "make_speakers",
    "make_sentences",
    "plan_corpus",
    "transform_wave",
    "speaker_transform",
    "synthesize_corpus",
    "read_speakers",
    "read_utterances",
]

# 96 words, all in Festival's CMU lexicon with a single pronunciation; every
# CMU-39 phone occurs in at least 3 words (ZH: treasure, measure, usually, vision).
VOCABULARY: tuple[str, ...] = tuple(
    """
    the big small red green blue black white old young good happy quiet cold warm
    cat dog boy girl man woman child fish bird horse cow mother father teacher king queen
    home school town river road ship book chair table door window water milk bread cheese
    juice toy coin voice sees likes finds takes wants gives loves catches needs enjoys
    treasure measure usually vision and with near this thin three think song long morning
    noise brown look foot wood food moon shoe day rain make walk work yellow you yes lunch
    orange jump bridge large she
    """.split()
)

DEFAULT_SPLITS: dict[str, float] = {"train": 0.7, "dev": 0.1, "test": 0.2}

# Plausible speaking F0 medians (Hz) for the gender labels.
F0_RANGE = {"M": (95.0, 135.0), "F": (180.0, 235.0)}
# Formant (vocal-tract) ratio when the target gender differs from the voice's.
CROSS_FORMANT = {"M": (0.84, 0.89), "F": (1.12, 1.18)}
VOICE_CYCLE = {"M": ("kal", "ked", "slt"), "F": ("slt", "kal", "ked")}


@dataclass(frozen=True)
class SpeakerSpec:
    """One pseudo-speaker: a Festival voice plus the changes that make it someone else."""

    speaker: str
    gender: str
    voice: str
    f0_target: float
    formant_ratio: float
    rate: float
    eq_freq: float
    eq_gain_db: float
    bass_db: float
    treble_db: float
    level_db: float
    heldout: bool

    @property
    def chapter(self) -> str:
        return f"{self.speaker}0"

    @property
    def pitch_cents(self) -> float:
        """F0 target relative to the voice's own typical F0, in cents."""
        return 1200.0 * math.log2(self.f0_target / VOICES[self.voice].base_f0)


def make_speakers(n_speakers: int = 12, seed: int = 0, n_heldout: int = 2) -> list[SpeakerSpec]:
    """Pseudo-speaker settings, alternating M/F, spread over the plausible F0 range of each gender.

    Held-out speakers are the last ones of each gender, alternating M, F, M, …
    At least one regular speaker of each gender is kept.
    """
    if n_speakers < 2:
        raise ValueError(f"n_speakers must be >= 2 (both genders), got {n_speakers}")
    rng = np.random.default_rng([seed, 1])
    genders = ["M" if i % 2 == 0 else "F" for i in range(n_speakers)]
    by_gender = {g: [i for i, x in enumerate(genders) if x == g] for g in ("M", "F")}
    max_heldout = sum(len(v) - 1 for v in by_gender.values())
    if not 0 <= n_heldout <= max_heldout:
        raise ValueError(f"n_heldout must be in [0, {max_heldout}] for {n_speakers} speakers, got {n_heldout}")
    heldout: set[int] = set()
    pools = {g: list(reversed(v)) for g, v in by_gender.items()}
    g = "M"
    while len(heldout) < n_heldout:
        if len(pools[g]) > 1:
            heldout.add(pools[g].pop(0))
        g = "F" if g == "M" else "M"

    specs: list[SpeakerSpec | None] = [None] * n_speakers
    for g, idx in by_gender.items():
        lo, hi = F0_RANGE[g]
        targets = np.linspace(lo, hi, len(idx)) if len(idx) > 1 else np.array([(lo + hi) / 2])
        targets = rng.permutation(targets)
        for j, i in enumerate(idx):
            voice = VOICE_CYCLE[g][j % 3]
            if VOICES[voice].gender == g:
                formant = float(rng.uniform(0.96, 1.04))
            else:
                formant = float(rng.uniform(*CROSS_FORMANT[g]))
            specs[i] = SpeakerSpec(
                speaker=str(101 + i),
                gender=g,
                voice=voice,
                f0_target=round(float(targets[j]), 1),
                formant_ratio=round(formant, 3),
                rate=round(float(rng.uniform(0.9, 1.12)), 3),
                eq_freq=round(float(np.exp(rng.uniform(np.log(400), np.log(3500)))), 0),
                eq_gain_db=round(float(rng.uniform(-6, 6)), 1),
                bass_db=round(float(rng.uniform(-4, 4)), 1),
                treble_db=round(float(rng.uniform(-4, 4)), 1),
                level_db=round(float(rng.uniform(-6, -1)), 1),
                heldout=i in heldout,
            )
    return [s for s in specs if s is not None]


def make_sentences(
    n: int,
    words_per_sentence: tuple[int, int] = (4, 8),
    seed: int = 0,
    vocabulary: Sequence[str] = VOCABULARY,
) -> list[str]:
    """``n`` sentences of random length drawn from a shuffled deck of the vocabulary.

    Dealing from a deck (reshuffled when empty) keeps word counts nearly equal,
    so every word recurs across speakers; no word repeats within a sentence.
    """
    lo, hi = words_per_sentence
    if not 1 <= lo <= hi:
        raise ValueError(f"words_per_sentence must be (min, max) with 1 <= min <= max, got {words_per_sentence}")
    vocab = list(dict.fromkeys(vocabulary))
    if hi > len(vocab):
        raise ValueError(f"sentences of {hi} words need at least {hi} distinct vocabulary words")
    rng = np.random.default_rng([seed, 2])
    deck: list[str] = []
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        words: list[str] = []
        while len(words) < k:
            if not deck:
                deck = [vocab[i] for i in rng.permutation(len(vocab))]
            w = deck.pop()
            if w in words:
                deck.insert(0, w)  # use it in a later sentence
                continue
            words.append(w)
        out.append(" ".join(words))
    return out


def _split_counts(n: int, splits: Mapping[str, float]) -> dict[str, int]:
    names = list(splits)
    w = np.array([splits[s] for s in names], dtype=float)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0, got {dict(splits)}")
    w = w / w.sum()
    raw = w * n
    counts = np.floor(raw).astype(int)
    # every split with a positive fraction gets at least one utterance when possible
    for i in np.argsort(-w):
        if counts.sum() < n and counts[i] == 0 and w[i] > 0:
            counts[i] = 1
    for i in np.argsort(-(raw - np.floor(raw))):
        if counts.sum() >= n:
            break
        counts[i] += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    return dict(zip(names, counts.tolist()))


def plan_corpus(
    speakers: Sequence[SpeakerSpec],
    utterances_per_speaker: int = 40,
    words_per_sentence: tuple[int, int] = (4, 8),
    seed: int = 0,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    heldout_split: str = "test",
    vocabulary: Sequence[str] = VOCABULARY,
) -> pd.DataFrame:
    """One row per utterance to synthesize: utterance, speaker, chapter, index, split, text."""
    if utterances_per_speaker < 1:
        raise ValueError(f"utterances_per_speaker must be >= 1, got {utterances_per_speaker}")
    if heldout_split not in splits:
        raise ValueError(f"heldout_split {heldout_split!r} is not one of the splits {list(splits)}")
    sentences = make_sentences(len(speakers) * utterances_per_speaker, words_per_sentence, seed, vocabulary)
    rng = np.random.default_rng([seed, 3])
    counts = _split_counts(utterances_per_speaker, splits)
    rows = []
    for s_i, spec in enumerate(speakers):
        if spec.heldout:
            assign = [heldout_split] * utterances_per_speaker
        else:
            assign = [name for name, c in counts.items() for _ in range(c)]
            assign = [assign[i] for i in rng.permutation(len(assign))]
        for u in range(utterances_per_speaker):
            rows.append(
                {
                    "utterance": f"{spec.speaker}-{spec.chapter}-{u:04d}",
                    "speaker": spec.speaker,
                    "chapter": spec.chapter,
                    "index": u,
                    "split": assign[u],
                    "text": sentences[s_i * utterances_per_speaker + u],
                }
            )
    return pd.DataFrame(rows)


def transform_wave(
    wave: np.ndarray,
    sr: int,
    *,
    pitch_median: float | None = None,
    pitch_range: float = 1.0,
    formant_ratio: float = 1.0,
    eq_freq: float = 1000.0,
    eq_gain_db: float = 0.0,
    bass_db: float = 0.0,
    treble_db: float = 0.0,
    level_db: float = -1.0,
    out_sr: int = SAMPLE_RATE,
    n_out: int | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Turn one voice into another without moving any event in time.

    Parameters
    ----------
    wave, sr
        Mono input and its sample rate.
    pitch_median
        New F0 median (Hz) via Praat PSOLA; None keeps the F0.
    pitch_range
        Praat's pitch range factor (deviations from the median are scaled by it).
    formant_ratio
        Formant shift (> 1 shorter vocal tract, e.g. 1.15 male → female).
    eq_freq, eq_gain_db, bass_db, treble_db
        sox ``equalizer`` (1 octave wide), ``bass`` and ``treble`` gains.
    level_db
        Peak level of the output (dBFS).
    out_sr
        Output sample rate (sox ``rate -v``).
    n_out
        Exact output length; default ``round(len(wave) * out_sr / sr)``.
    seed
        Seed of Praat's random generator for this call (PSOLA draws random pulses in
        unvoiced stretches): the same seed gives a bit-identical output. None leaves
        Praat's generator as it is (not reproducible).

    Returns
    -------
    np.ndarray
        float32 ``[n_out]`` at ``out_sr``, peak at ``level_db``.
    """
    x = np.asarray(wave, dtype=np.float64)
    if n_out is None:
        n_out = int(round(len(x) * out_sr / sr))
    if pitch_median is not None or abs(formant_ratio - 1.0) > 1e-6:
        import parselmouth
        from parselmouth.praat import call

        snd = parselmouth.Sound(x, sampling_frequency=sr)
        new_median = 0.0 if pitch_median is None else float(pitch_median)
        if seed is not None:
            parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({int(seed)})")
        try:
            out = call(snd, "Change gender", 60, 600, float(formant_ratio), new_median, float(pitch_range), 1.0)
        finally:
            if seed is not None:
                parselmouth.praat.run("random_initializeSafelyAndUnpredictably ()")
        x = out.values[0].astype(np.float64)
    x = _sox_filter(x, sr, out_sr, eq_freq, eq_gain_db, bass_db, treble_db)
    if len(x) >= n_out:
        x = x[:n_out]
    else:
        x = np.concatenate([x, np.zeros(n_out - len(x))])
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0:
        x = x * (10 ** (level_db / 20) / peak)
    return x.astype(np.float32)


def _sox_filter(x: np.ndarray, sr: int, out_sr: int, eq_freq: float, eq_gain_db: float, bass_db: float, treble_db: float) -> np.ndarray:
    sox = shutil.which("sox")
    if sox is None:
        raise FestivalError(f"sox not found on PATH; install it with `{APT_HINT}`")
    raw = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-L"]
    effects = []
    if out_sr != sr:
        effects += ["rate", "-v", str(out_sr)]
    if eq_gain_db:
        effects += ["equalizer", f"{eq_freq:g}", "1.0o", f"{eq_gain_db:g}"]
    if bass_db:
        effects += ["bass", f"{bass_db:g}"]
    if treble_db:
        effects += ["treble", f"{treble_db:g}"]
    if not effects:
        return x
    cmd = [sox, "-V1", "-D", *raw, "-r", str(sr), "-", *raw, "-r", str(out_sr), "-", *effects]
    # keep headroom so that boosts cannot clip inside sox; the level is set afterwards
    peak = float(np.max(np.abs(x))) or 1.0
    data = (x / peak * 0.25).astype("<f4").tobytes()
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sox failed ({' '.join(cmd)}): {proc.stderr.decode(errors='replace')}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float64)


def utterance_seed(seed: int, utterance: str) -> int:
    """A per-utterance seed from the corpus seed and the utterance id (independent of worker and order)."""
    return zlib.crc32(f"{int(seed)}:{utterance}".encode()) & 0x7FFFFFFF


def speaker_transform(wave: np.ndarray, sr: int, spec: SpeakerSpec, n_out: int | None = None,
                      seed: int | None = None) -> np.ndarray:
    """:func:`transform_wave` with a pseudo-speaker's settings (the F0 of diphone voices is set in Festival)."""
    info = VOICES[spec.voice]
    pitch = None
    if info.kind != "diphone":
        pitch = spec.f0_target
    return transform_wave(
        wave,
        sr,
        pitch_median=pitch,
        pitch_range=spec.f0_target / info.base_f0 if pitch is not None else 1.0,
        formant_ratio=spec.formant_ratio,
        eq_freq=spec.eq_freq,
        eq_gain_db=spec.eq_gain_db,
        bass_db=spec.bass_db,
        treble_db=spec.treble_db,
        level_db=spec.level_db,
        n_out=n_out,
        seed=seed,
    )


# ----------------------------------------------------------------------------- workers

_COUNTER = None  # multiprocessing.Value shared with the workers, for the progress bar


def _init_worker(counter) -> None:
    global _COUNTER
    _COUNTER = counter


def _tick() -> None:
    if _COUNTER is not None:
        with _COUNTER.get_lock():
            _COUNTER.value += 1


def _render_chunk(job: tuple[dict, list[dict], str, str, int]) -> list[dict]:
    """Synthesize one speaker's chunk of utterances into the (temporary) corpus tree."""
    import soundfile as sf

    from speechdissect.pitch import frame_f0

    spec_d, utts, root_s, work_s, seed = job
    spec = SpeakerSpec(**spec_d)
    info = VOICES[spec.voice]
    root, work = Path(root_s), Path(work_s)
    work.mkdir(parents=True, exist_ok=True)
    kwargs = {"rate": spec.rate}
    if info.kind == "diphone":
        kwargs["f0_mean"] = spec.f0_target
    renders = render_sentences([u["text"] for u in utts], spec.voice, work, names=[u["utterance"] for u in utts], **kwargs)
    out = []
    for u, r in zip(utts, renders):
        out.append(_finish_utterance(u, r, spec, root, sf, frame_f0, utterance_seed(seed, u["utterance"])))
        r.wav_path.unlink(missing_ok=True)
        r.wav_path.with_suffix(".lab").unlink(missing_ok=True)
        _tick()
    return out


def _finish_utterance(u: dict, r: Rendering, spec: SpeakerSpec, root: Path, sf, frame_f0, seed: int) -> dict:
    wave, sr = sf.read(str(r.wav_path), dtype="float64", always_2d=True)
    wave = wave.mean(axis=1)
    last_end = r.segments[-1].end
    n_out = max(int(round(len(wave) * SAMPLE_RATE / sr)), int(math.ceil(last_end * SAMPLE_RATE - 1e-6)))
    y = speaker_transform(wave, sr, spec, n_out=n_out, seed=seed)
    segments = list(r.segments)
    if segments[-1].phone == "pau":  # the final pause covers the tail of the wave
        segments[-1] = Segment("pau", segments[-1].start, n_out / SAMPLE_RATE)
    d = root / u["split"] / spec.speaker / spec.chapter
    d.mkdir(parents=True, exist_ok=True)
    sf.write(str(d / f"{u['utterance']}.flac"), y, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    write_segs(root / "alignments" / f"{u['utterance']}.segs", segments)
    write_words(root / "alignments" / f"{u['utterance']}.words", r.words)
    f0 = frame_f0(y, SAMPLE_RATE)
    voiced = f0[f0 > 0]
    return {
        "utterance": u["utterance"],
        "n_samples": n_out,
        "duration": n_out / SAMPLE_RATE,
        "f0_median": float(np.median(voiced)) if voiced.size else float("nan"),
        "f0_voiced": voiced.astype(np.float32),
    }


# ----------------------------------------------------------------------------- driver


def synthesize_corpus(
    out_dir: str | os.PathLike,
    n_speakers: int = 12,
    utterances_per_speaker: int = 40,
    words_per_sentence: tuple[int, int] = (4, 8),
    seed: int = 0,
    splits: Mapping[str, float] = DEFAULT_SPLITS,
    n_heldout: int = 2,
    heldout_split: str = "test",
    jobs: int = 2,
    vocabulary: Sequence[str] = VOCABULARY,
    chunk_size: int = 20,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build the synthetic LibriSpeech-style corpus (layout in the module docstring).

    Parameters
    ----------
    out_dir
        Corpus root to create, e.g. ``resources/corpora/synthetic``.
    n_speakers
        Pseudo-speakers, alternating M/F (>= 2).
    utterances_per_speaker
        Sentences per speaker.
    words_per_sentence
        (min, max) words per sentence, inclusive.
    seed
        Seeds speakers, sentences, splits and (per utterance, see :func:`utterance_seed`)
        Praat's PSOLA: the same arguments give a bit-identical corpus.
    splits
        Split name → fraction of each regular speaker's utterances.
    n_heldout, heldout_split
        Speakers (alternating M, F) whose utterances all go to ``heldout_split``.
    jobs
        Worker processes (each runs its own Festival).
    vocabulary
        Words to draw sentences from (lower case, in Festival's lexicon).
    chunk_size
        Utterances per Festival process (start-up costs ~0.7 s).
    overwrite
        Replace an existing ``out_dir``; otherwise it is an error.
    progress
        Show a tqdm bar.

    Returns
    -------
    dict
        The contents of ``corpus.json`` (parameters, counts, hours, seconds taken).

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists and ``overwrite`` is False.
    FestivalError
        If festival, a voice or sox is missing (with the apt-get command).
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; remove it or pass overwrite=True")
    speakers = make_speakers(n_speakers, seed, n_heldout)
    check_festival(sorted({s.voice for s in speakers}))
    if shutil.which("sox") is None:
        raise FestivalError(f"sox not found on PATH; install it with `{APT_HINT}`")
    plan = plan_corpus(speakers, utterances_per_speaker, tuple(words_per_sentence), seed, splits, heldout_split, vocabulary)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "alignments").mkdir(parents=True)
    try:
        jobs_list = []
        for spec in speakers:
            rows = plan[plan["speaker"] == spec.speaker].to_dict("records")
            for c in range(0, len(rows), max(1, chunk_size)):
                work = tmp / "_work" / f"{spec.speaker}-{c // max(1, chunk_size)}"
                jobs_list.append((asdict(spec), rows[c : c + chunk_size], str(tmp), str(work), seed))
        # slt chunks are the slowest: start them first so the two workers finish together
        jobs_list.sort(key=lambda j: VOICES[j[0]["voice"]].kind != "hts")
        results = _run_jobs(jobs_list, len(plan), jobs, progress, tqdm)
        shutil.rmtree(tmp / "_work", ignore_errors=True)

        done = pd.DataFrame([{k: v for k, v in r.items() if k != "f0_voiced"} for r in results])
        utts = plan.merge(done, on="utterance", how="left")
        if utts["n_samples"].isna().any():
            raise RuntimeError("some utterances were not synthesized: " + ", ".join(utts.loc[utts["n_samples"].isna(), "utterance"][:5]))
        voiced = {}
        for r in results:
            voiced.setdefault(r["utterance"].split("-")[0], []).append(r["f0_voiced"])
        _write_trans(tmp, utts)
        utts[["utterance", "speaker", "chapter", "split", "n_samples", "duration", "text"]].to_csv(
            tmp / "utterances.tsv", sep="\t", index=False
        )
        spk = _speaker_table(speakers, utts, voiced)
        spk.to_csv(tmp / "speakers.tsv", sep="\t", index=False)
        meta = {
            "name": out.name,
            "generator": "speechdissect.corpus.synthesize_corpus",
            "params": {
                "n_speakers": n_speakers,
                "utterances_per_speaker": utterances_per_speaker,
                "words_per_sentence": list(words_per_sentence),
                "seed": seed,
                "splits": dict(splits),
                "n_heldout": n_heldout,
                "heldout_split": heldout_split,
                "vocabulary_size": len(set(vocabulary)),
            },
            "sample_rate": SAMPLE_RATE,
            "n_utterances": int(len(utts)),
            "hours": round(float(utts["duration"].sum()) / 3600, 4),
            "speakers_per_gender": {g: int((spk["gender"] == g).sum()) for g in ("M", "F")},
            "utterances_per_split": {s: int((utts["split"] == s).sum()) for s in splits},
            "hours_per_split": {s: round(float(utts.loc[utts["split"] == s, "duration"].sum()) / 3600, 4) for s in splits},
            "seconds_taken": round(time.time() - t0, 1),
        }
        (tmp / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _run_jobs(jobs_list: list, total: int, jobs: int, progress: bool, tqdm) -> list[dict]:
    results: list[dict] = []
    if jobs <= 1 or len(jobs_list) <= 1:
        with tqdm(total=total, desc="synthesize", unit="utt", disable=not progress) as bar:
            for job in jobs_list:
                part = _render_chunk(job)
                results += part
                bar.update(len(part))
        return results
    # fork: no re-import of the caller's __main__ (Snakemake script files are not guarded);
    # the pool is forked before tqdm starts its monitor thread.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    counter = ctx.Value("i", 0)
    with ctx.Pool(processes=min(jobs, len(jobs_list)), initializer=_init_worker, initargs=(counter,)) as pool:
        with tqdm(total=total, desc="synthesize", unit="utt", disable=not progress) as bar:
            pending = [pool.apply_async(_render_chunk, (job,)) for job in jobs_list]
            while pending:
                time.sleep(0.2)
                bar.update(counter.value - bar.n)
                still = []
                for p in pending:
                    if p.ready():
                        results += p.get()  # re-raises a worker's error
                    else:
                        still.append(p)
                pending = still
            bar.update(counter.value - bar.n)
    return results


def _write_trans(root: Path, utts: pd.DataFrame) -> None:
    for (split, speaker, chapter), g in utts.groupby(["split", "speaker", "chapter"], sort=True):
        lines = [f"{u} {t.upper()}\n" for u, t in sorted(zip(g["utterance"], g["text"]))]
        (root / split / speaker / chapter / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))


def _speaker_table(speakers: Sequence[SpeakerSpec], utts: pd.DataFrame, voiced: Mapping[str, list]) -> pd.DataFrame:
    rows = []
    for s in speakers:
        mine = utts[utts["speaker"] == s.speaker]
        present = [x for x in ("train", "dev", "test") if x in set(mine["split"])] + sorted(
            set(mine["split"]) - {"train", "dev", "test"}
        )
        v = np.concatenate(voiced.get(s.speaker, [np.zeros(0)]))
        d = asdict(s)
        rows.append(
            {
                "speaker": s.speaker,
                "gender": s.gender,
                "voice": s.voice,
                "pitch_cents": round(s.pitch_cents, 1),
                "f0_target": s.f0_target,
                "f0_median": round(float(np.median(v)), 1) if v.size else float("nan"),
                **{k: d[k] for k in ("formant_ratio", "rate", "eq_freq", "eq_gain_db", "bass_db", "treble_db", "level_db")},
                "heldout": s.heldout,
                "split": ",".join(present),
                "n_utterances": int(len(mine)),
            }
        )
    return pd.DataFrame(rows)


def read_speakers(corpus_dir: str | os.PathLike) -> pd.DataFrame:
    """``speakers.tsv`` of a synthetic corpus, with speaker ids as strings."""
    path = Path(corpus_dir) / "speakers.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {corpus_dir} a corpus built by synthesize_corpus?")
    return pd.read_csv(path, sep="\t", dtype={"speaker": str})


def read_utterances(corpus_dir: str | os.PathLike) -> pd.DataFrame:
    """``utterances.tsv`` of a synthetic corpus plus the flac / segs / words paths of each utterance."""
    root = Path(corpus_dir)
    path = root / "utterances.tsv"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {corpus_dir} a corpus built by synthesize_corpus?")
    df = pd.read_csv(path, sep="\t", dtype={"speaker": str, "chapter": str, "utterance": str})
    df["path"] = [str(root / s / sp / ch / f"{u}.flac") for s, sp, ch, u in zip(df["split"], df["speaker"], df["chapter"], df["utterance"])]
    df["segs"] = [str(root / "alignments" / f"{u}.segs") for u in df["utterance"]]
    df["words"] = [str(root / "alignments" / f"{u}.words") for u in df["utterance"]]
    return df
