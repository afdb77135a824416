"""Read phone/word alignments (Festival segs/words, MFA TextGrids) into one structure.

Two sources exist: the synthetic corpus knows exact phone and word times from
Festival (``utt.save.segs`` / ``utt.save.words``), real LibriSpeech uses Montreal
Forced Aligner TextGrids. Both become an :class:`Alignment` whose phones are
already folded onto the 41 labels of :mod:`speechdissect.phones` and whose
words are upper case, so everything downstream is source-agnostic.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from .phones import PHONE_SETS, SIL, detect_phone_set, fold, fold_festival

log = logging.getLogger(__name__)

#: Boundaries closer than this (seconds) count as touching: alignment files are
#: written with 4–6 decimals, so tiny overlaps are rounding, not errors.
TOLERANCE = 1e-4

#: Word-tier labels MFA uses for "no word here".
NON_WORDS = frozenset({"", "sil", "sp", "<eps>", "<sil>"})
#: Word label MFA may write for out-of-vocabulary words; it matches any transcript word.
UNK_WORD = "<UNK>"


class Interval(NamedTuple):
    """A labelled time span in seconds, ``start <= t < end``."""

    start: float
    end: float
    label: str


class AlignmentError(ValueError):
    """An alignment file that cannot be read or is inconsistent."""


@dataclass
class Alignment:
    """Phone and word intervals of one utterance.

    Attributes
    ----------
    phones : list of Interval
        Folded phone labels (CMU 39, ``sil``, ``spn``), sorted, non-overlapping.
        Gaps between intervals mean silence.
    words : list of Interval
        Upper-case words, sorted, non-overlapping; time between words is silence.
    source : str
        File (or ``archive::member``) the alignment came from, for error messages.
    """

    phones: list[Interval]
    words: list[Interval]
    source: str = ""

    @property
    def end(self) -> float:
        """Time (s) of the last phone or word boundary."""
        ends = [iv.end for iv in self.phones[-1:] + self.words[-1:]]
        return max(ends) if ends else 0.0

    def word_labels(self) -> list[str]:
        """The word sequence, for comparison with a transcript."""
        return [w.label for w in self.words]


def _check_sorted(intervals: list[Interval], what: str, source: str) -> None:
    prev_end = 0.0
    for iv in intervals:
        if iv.end < iv.start - TOLERANCE:
            raise AlignmentError(f"{source}: {what} interval {iv} ends before it starts")
        if iv.start < prev_end - TOLERANCE:
            raise AlignmentError(
                f"{source}: {what} interval {iv} overlaps the previous one (ends {prev_end:.4f}); "
                "intervals must be sorted and non-overlapping"
            )
        prev_end = iv.end


# --------------------------------------------------------------------------- Festival

_XLABEL_LINE = re.compile(r"^\s*([-+0-9.eE]+)\s+\S+\s+(.*?)\s*$")


def read_xlabel(path: str | os.PathLike) -> list[tuple[float, str]]:
    """Read an ESPS xlabel file as written by Festival's ``utt.save.segs`` / ``utt.save.words``.

    The header (if any) runs up to a line ``#``; each following line is
    ``end_time colour label``. Returns ``(end_time, label)`` in file order.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if any(line.strip() == "#" for line in lines):
        lines = lines[[line.strip() for line in lines].index("#") + 1:]
    out: list[tuple[float, str]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _XLABEL_LINE.match(line)
        if not m:
            raise AlignmentError(f"{path}: cannot parse line {line!r} (expected 'end_time 100 label')")
        out.append((float(m.group(1)), m.group(2)))
    return out


def read_festival(segs: str | os.PathLike, words: str | os.PathLike | None = None) -> Alignment:
    """Build an :class:`Alignment` from Festival segs (and words) files.

    Segments are contiguous from 0, so each starts where the previous ends.
    Festival's words file holds only word end times; a word starts at its first
    non-silent segment after the previous word's end, so pauses between words
    are not counted as part of the following word.
    """
    segs = Path(segs)
    if words is None:
        cand = segs.with_suffix(".words")
        words = cand if cand.exists() else None
    raw = read_xlabel(segs)
    phones: list[Interval] = []
    start = 0.0
    for end, label in raw:
        phones.append(Interval(start, end, fold_festival(label, str(segs))))
        start = end
    _check_sorted(phones, "phone", str(segs))

    word_ivs: list[Interval] = []
    if words is not None:
        prev_end = 0.0
        for end, label in read_xlabel(words):
            inside = [p for p in phones if p.start >= prev_end - TOLERANCE and p.end <= end + TOLERANCE]
            speech = [p for p in inside if p.label != SIL]
            w_start = speech[0].start if speech else prev_end
            word_ivs.append(Interval(w_start, end, label.upper()))
            prev_end = end
        _check_sorted(word_ivs, "word", str(words))
    return Alignment(phones, word_ivs, str(segs))


# --------------------------------------------------------------------------- TextGrid

def _find_tier(names: list[str], want: str, source: str) -> str:
    hits = [n for n in names if n.lower() == want or n.lower().endswith(f" - {want}")]
    if len(hits) != 1:
        raise AlignmentError(
            f"{source}: expected exactly one tier named '{want}' (or '<speaker> - {want}'), "
            f"found tiers {names}"
        )
    return hits[0]


def read_textgrid(path: str | os.PathLike, source: str | None = None, phone_set: str = "auto") -> Alignment:
    """Build an :class:`Alignment` from an MFA TextGrid with tiers ``words`` and ``phones``.

    Empty intervals and ``sil``/``sp`` are silence; ``spn`` (spoken noise) is
    kept as its own label; stress digits are dropped.

    Parameters
    ----------
    phone_set
        ``"arpabet"`` (MFA ``english_us_arpa``), ``"ipa"`` (MFA ``english_mfa``,
        folded by :data:`speechdissect.phones.IPA_FOLD`) or ``"auto"`` (the
        config default ``labels: {phone_set: auto}``): told apart per file by
        :func:`speechdissect.phones.detect_phone_set`.
    """
    if phone_set not in PHONE_SETS:
        raise ValueError(f"phone_set must be one of {PHONE_SETS} (config key labels: {{phone_set: ...}}), "
                         f"not {phone_set!r}")
    from praatio import textgrid

    source = source or str(path)
    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as exc:  # praatio raises a variety of errors on bad files
        raise AlignmentError(f"{source}: not a readable TextGrid ({exc})") from exc
    names = list(tg.tierNames)
    phone_tier = tg.getTier(_find_tier(names, "phones", source))
    word_tier = tg.getTier(_find_tier(names, "words", source))

    scheme = detect_phone_set(e.label for e in phone_tier.entries) if phone_set == "auto" else phone_set
    phones = [Interval(float(e.start), float(e.end), fold(e.label, scheme, source)) for e in phone_tier.entries]
    words = [
        Interval(float(e.start), float(e.end), e.label.strip().upper())
        for e in word_tier.entries
        if e.label.strip().lower() not in NON_WORDS
    ]
    _check_sorted(phones, "phone", source)
    _check_sorted(words, "word", source)
    return Alignment(phones, words, source)


# --------------------------------------------------------------------------- collections

_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.split(".", 1)[0]


def _archive_textgrids(archive: Path) -> Iterator[tuple[str, str, bytes]]:
    """Yield ``(utterance, member, bytes)`` for every ``*.TextGrid`` in a zip/tar archive."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and info.filename.lower().endswith(".textgrid"):
                    yield _stem(info.filename), info.filename, zf.read(info)
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if member.isfile() and member.name.lower().endswith(".textgrid"):
                    fh = tf.extractfile(member)
                    assert fh is not None
                    yield _stem(member.name), member.name, fh.read()


def load_alignments(
    source: str | os.PathLike,
    utterances: Iterable[str] | None = None,
    progress: bool = True,
    phone_set: str = "auto",
) -> dict[str, Alignment]:
    """Read every alignment under ``source`` into ``{utterance_id: Alignment}``.

    ``source`` may be a directory (``*.TextGrid`` and/or Festival ``*.segs`` with
    sibling ``*.words``, searched recursively, e.g. MFA's ``{speaker}/{utt}.TextGrid``),
    a single file, or a ``.zip`` / ``.tar[.gz]`` archive of TextGrids. The
    utterance id is the file name up to its first dot. ``utterances`` restricts
    parsing to the ids needed (archives often hold every LibriSpeech subset).
    ``phone_set`` is passed to :func:`read_textgrid`.
    """
    src = Path(source)
    wanted = set(utterances) if utterances is not None else None
    out: dict[str, Alignment] = {}

    def keep(utt: str, where: str) -> bool:
        if wanted is not None and utt not in wanted:
            return False
        if utt in out:
            raise AlignmentError(f"duplicate alignment for utterance {utt}: {out[utt].source} and {where}")
        return True

    if not src.exists():
        raise FileNotFoundError(f"alignment source not found: {src}")
    if _is_archive(src):
        with tempfile.TemporaryDirectory(prefix="textgrid-") as tmp:
            tmp_file = Path(tmp) / "member.TextGrid"
            for utt, member, data in tqdm(_archive_textgrids(src), desc=f"TextGrids in {src.name}",
                                          unit="file", disable=not progress):
                where = f"{src}::{member}"
                if keep(utt, where):
                    tmp_file.write_bytes(data)
                    out[utt] = read_textgrid(tmp_file, source=where, phone_set=phone_set)
        return out

    files = [src] if src.is_file() else sorted(
        p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".textgrid", ".segs")
    )
    for path in tqdm(files, desc=f"alignments in {src.name}", unit="file", disable=not progress):
        utt = _stem(path.name)
        if not keep(utt, str(path)):
            continue
        if path.suffix.lower() == ".segs":
            out[utt] = read_festival(path)
        elif path.suffix.lower() == ".textgrid":
            out[utt] = read_textgrid(path, phone_set=phone_set)
        else:
            raise AlignmentError(f"{path}: not an alignment file (expected .TextGrid or .segs)")
    log.info("read %d alignments from %s", len(out), src)
    return out
