"""Drive the Festival speech synthesizer in batch and read back exact timings.

Why Festival: a synthesizer knows where it put every phone, so the embedded
corpus gets exact phone and word boundaries without a forced aligner.  One
``festival -b script.scm`` process renders *many* sentences with one voice
(start-up costs ~0.7 s, a sentence 0.05–0.3 s), dumping for each sentence a
RIFF wave and the end time of every item of the ``Segment`` relation and the
start/end of every item of the ``Word`` relation.

Phones are Festival's ``radio`` phone set (lower-case ARPAbet plus ``ax``,
``pau`` for silence, and a few rare allophones); :func:`speechdissect.phones.fold_festival`
maps them to the 39 CMU phones.

The ``.segs`` / ``.words`` files are written in Festival's own
``utt.save.segs`` / ``utt.save.words`` format (a ``#`` line, then
``END 100 LABEL`` per item), so code that reads real Festival output reads
ours.  Words' start times are not in ``.words``; :func:`read_alignment`
recovers them from the segments (a word starts where the first non-pause
segment after the previous word starts).

Voices (Debian packages): ``kal`` = festvox-kallpc16k (US male diphone,
16 kHz), ``ked`` = festvox-kdlpc16k (US male diphone, 16 kHz), ``slt`` =
festvox-us-slt-hts (US female HTS, 32 kHz).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "VOICES",
    "VoiceInfo",
    "Segment",
    "Word",
    "Rendering",
    "FestivalError",
    "APT_HINT",
    "check_festival",
    "render_sentences",
    "write_segs",
    "write_words",
    "parse_segs",
    "parse_words",
    "read_alignment",
]

APT_HINT = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox"


@dataclass(frozen=True)
class VoiceInfo:
    """What the corpus builder needs to know about one Festival voice.

    ``base_f0`` / ``base_f0_std`` are the voice's typical F0 mean and spread
    (Hz): for diphone voices they are the intonation targets Festival uses,
    for the HTS voice the median measured on the closed vocabulary (kal
    and ked measure 105 Hz, slt 180 Hz).
    """

    key: str
    command: str  # Scheme function that selects the voice
    kind: str  # "diphone" (F0 targets settable) or "hts" (F0 from the model)
    sample_rate: int
    gender: str
    base_f0: float
    base_f0_std: float
    package: str


VOICES: dict[str, VoiceInfo] = {
    "kal": VoiceInfo("kal", "voice_kal_diphone", "diphone", 16_000, "M", 105.0, 14.0, "festvox-kallpc16k"),
    "ked": VoiceInfo("ked", "voice_ked_diphone", "diphone", 16_000, "M", 105.0, 15.0, "festvox-kdlpc16k"),
    "slt": VoiceInfo("slt", "voice_cmu_us_slt_arctic_hts", "hts", 32_000, "F", 180.0, 17.0, "festvox-us-slt-hts"),
}


@dataclass(frozen=True)
class Segment:
    """One phone (or ``pau``) with its start and end time in seconds."""

    phone: str
    start: float
    end: float


@dataclass(frozen=True)
class Word:
    """One word (lower case, as Festival names it) with start and end in seconds."""

    word: str
    start: float
    end: float


@dataclass
class Rendering:
    """One synthesized sentence: where its wave is and what Festival put where."""

    text: str
    wav_path: Path
    sample_rate: int
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)


class FestivalError(RuntimeError):
    """Festival is missing, a voice is missing, or a synthesis failed."""


_TEXT_RE = re.compile(r"^[a-z]+(?:'[a-z]+)?(?: [a-z]+(?:'[a-z]+)?)*$")


def check_festival(voices: Sequence[str] = tuple(VOICES)) -> str:
    """Path of the ``festival`` binary, after checking the requested voices are installed.

    Raises
    ------
    FestivalError
        Naming the apt packages to install.
    """
    exe = shutil.which("festival")
    if exe is None:
        raise FestivalError(f"festival not found on PATH; install it with `{APT_HINT}`")
    unknown = [v for v in voices if v not in VOICES]
    if unknown:
        raise FestivalError(f"unknown voice(s) {unknown}; known: {sorted(VOICES)}")
    proc = _run_scheme(exe, '(format t "SD_VOICES %l\\n" (voice.list))\n', timeout=60)
    listed = next((l.split(None, 1)[1] for l in proc.stdout.splitlines() if l.startswith("SD_VOICES")), "")
    installed = set(listed.strip("() ").split())
    missing = [v for v in voices if VOICES[v].command.removeprefix("voice_") not in installed]
    if missing:
        pkgs = " ".join(VOICES[v].package for v in missing)
        raise FestivalError(
            f"Festival voice(s) {missing} not installed (festival lists {sorted(installed)}); "
            f"install them with `apt-get install {pkgs}` (all voices: `{APT_HINT}`)"
        )
    return exe


def _run_scheme(exe: str, script: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        return subprocess.run([exe, "-b", path], capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(path)


def _scheme_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PRELUDE = r"""
(define (sd_dump utt fname)
  (let ((fd (fopen fname "w")))
    (mapcar (lambda (s) (format fd "S\t%s\t%f\n" (item.name s) (item.feat s "end")))
            (utt.relation.items utt 'Segment))
    (mapcar (lambda (w) (format fd "W\t%s\t%f\t%f\n" (item.name w) (item.feat w "word_start") (item.feat w "word_end")))
            (utt.relation.items utt 'Word))
    (fclose fd)))
(define (sd_render utt wav lab)
  (utt.synth utt)
  (utt.save.wave utt wav 'riff)
  (sd_dump utt lab)
  (format t "SD_DONE %s\n" wav))
"""


def render_sentences(
    sentences: Sequence[str],
    voice: str,
    out_dir: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    f0_mean: float | None = None,
    f0_std: float | None = None,
    rate: float = 1.0,
    progress: Callable[[int], None] | None = None,
    timeout_per_sentence: float = 30.0,
) -> list[Rendering]:
    """Synthesize many sentences with one Festival process.

    Parameters
    ----------
    sentences
        Lower-case words separated by single spaces (letters and inner
        apostrophes only, so that Festival's text normalisation cannot add or
        split words).
    voice
        Key of :data:`VOICES` (``kal``, ``ked``, ``slt``).
    out_dir
        Where ``{name}.wav`` (the voice's native rate) and ``{name}.lab`` go.
    names
        File stems, default ``s0000``, ``s0001``, …
    f0_mean, f0_std
        Intonation targets (Hz) for diphone voices; Festival generates the F0
        contour itself so durations and timings are untouched.  Not available
        for the HTS voice (shift it afterwards).
    rate
        Speaking rate (> 1 is faster): ``Duration_Stretch = 1/rate`` for
        diphone voices, hts_engine's ``-r`` for HTS.  Timings stay exact.
    progress
        Called with 1 after each finished sentence (e.g. ``tqdm.update``).

    Returns
    -------
    list of Rendering
        In the order of ``sentences``.

    Raises
    ------
    ValueError
        For text Festival might re-tokenise, or F0 targets on the HTS voice.
    FestivalError
        When festival or the voice is missing, or a sentence fails.
    """
    if voice not in VOICES:
        raise ValueError(f"unknown voice {voice!r}; known: {sorted(VOICES)}")
    info = VOICES[voice]
    for s in sentences:
        if not _TEXT_RE.match(s):
            raise ValueError(f"sentence {s!r}: use lower-case words separated by single spaces, no punctuation")
    if names is None:
        names = [f"s{i:04d}" for i in range(len(sentences))]
    if len(names) != len(sentences) or len(set(names)) != len(names):
        raise ValueError("names must be unique and as many as sentences")
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if info.kind != "diphone" and (f0_mean is not None or f0_std is not None):
        raise ValueError(f"voice {voice!r} ({info.kind}) takes its F0 from the model; f0_mean/f0_std only work for diphone voices")
    exe = shutil.which("festival")
    if exe is None:
        raise FestivalError(f"festival not found on PATH; install it with `{APT_HINT}`")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lines = [_PRELUDE, f"({info.command})"]
    if info.kind == "diphone":
        lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / rate:.6f})")
        if f0_mean is not None or f0_std is not None:
            mean = info.base_f0 if f0_mean is None else float(f0_mean)
            std = info.base_f0_std * mean / info.base_f0 if f0_std is None else float(f0_std)
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {mean:.3f}) (target_f0_std {std:.3f}) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
    else:
        lines.append(f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.6f}))))')
    for text, name in zip(sentences, names):
        wav, lab = out / f"{name}.wav", out / f"{name}.lab"
        lines.append(
            f"(sd_render (Utterance Text {_scheme_string(text)}) {_scheme_string(str(wav))} {_scheme_string(str(lab))})"
        )
    script_path = out / f"_{voice}_{os.getpid()}.scm"
    script_path.write_text("\n".join(lines) + "\n")

    done = 0
    stdout_tail: list[str] = []
    proc = subprocess.Popen(
        [exe, "-b", str(script_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("SD_DONE "):
                done += 1
                if progress is not None:
                    progress(1)
            else:
                stdout_tail = (stdout_tail + [line.rstrip()])[-20:]
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        proc.wait(timeout=timeout_per_sentence * max(1, len(sentences)))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        script_path.unlink(missing_ok=True)
    if done != len(sentences) or proc.returncode != 0:
        failed = sentences[done] if done < len(sentences) else "?"
        err = "\n".join([*stdout_tail, *[l for l in stderr.splitlines() if "ALSA" not in l][-20:]])
        hint = f" (is the voice installed? `apt-get install {info.package}`)" if done == 0 else ""
        raise FestivalError(
            f"festival ({info.command}) stopped after {done}/{len(sentences)} sentences, "
            f"at {failed!r}, exit code {proc.returncode}{hint}:\n{err}"
        )

    renderings = []
    for text, name in zip(sentences, names):
        segments, words = _parse_lab(out / f"{name}.lab")
        expected = text.split()
        if [w.word for w in words] != expected:
            raise FestivalError(f"festival tokenised {text!r} as {[w.word for w in words]}; adjust the vocabulary")
        renderings.append(Rendering(text, out / f"{name}.wav", info.sample_rate, segments, words))
    return renderings


def _parse_lab(path: Path) -> tuple[list[Segment], list[Word]]:
    segments: list[Segment] = []
    words: list[Word] = []
    start = 0.0
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if parts[0] == "S":
            end = float(parts[2])
            segments.append(Segment(parts[1], start, end))
            start = end
        elif parts[0] == "W":
            words.append(Word(parts[1], float(parts[2]), float(parts[3])))
    if not segments:
        raise FestivalError(f"no segments in {path}")
    return segments, words


def write_segs(path: str | os.PathLike, segments: Sequence[Segment]) -> None:
    """Write segments in Festival's ``utt.save.segs`` format (``END 100 PHONE``)."""
    Path(path).write_text("#\n" + "".join(f"{s.end:.6f} 100 {s.phone}\n" for s in segments))


def write_words(path: str | os.PathLike, words: Sequence[Word]) -> None:
    """Write words in Festival's ``utt.save.words`` format (``END 100 WORD``)."""
    Path(path).write_text("#\n" + "".join(f"{w.end:.6f} 100 {w.word}\n" for w in words))


def _parse_xlabel(path: str | os.PathLike) -> list[tuple[float, str]]:
    items = []
    body = False
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not body:
            body = line.strip() == "#"
            continue
        if not line.strip():
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise ValueError(f"{path}:{n}: expected 'END 100 LABEL', got {line!r}")
        items.append((float(parts[0]), parts[2].strip()))
    if not body:
        raise ValueError(f"{path}: no '#' header line (not a Festival segs/words file)")
    return items


def parse_segs(path: str | os.PathLike) -> list[Segment]:
    """Read a Festival ``.segs`` file; each segment starts where the previous one ends (the first at 0)."""
    out, start = [], 0.0
    for end, phone in _parse_xlabel(path):
        out.append(Segment(phone, start, end))
        start = end
    return out


def parse_words(path: str | os.PathLike) -> list[tuple[float, str]]:
    """Read a Festival ``.words`` file as ``(end, word)`` pairs (the format has no start times)."""
    return _parse_xlabel(path)


def read_alignment(segs_path: str | os.PathLike, words_path: str | os.PathLike, tol: float = 1e-5) -> tuple[list[Segment], list[Word]]:
    """Segments and words (with start times) of one utterance from its ``.segs`` and ``.words``.

    A word starts at the start of the first non-``pau`` segment that begins at
    or after the previous word's end, so pauses between words are not part of
    any word.
    """
    segments = parse_segs(segs_path)
    words: list[Word] = []
    prev_end = 0.0
    for end, name in parse_words(words_path):
        start = next((s.start for s in segments if s.start >= prev_end - tol and s.phone != "pau"), prev_end)
        words.append(Word(name, min(start, end), end))
        prev_end = end
    return segments, words
