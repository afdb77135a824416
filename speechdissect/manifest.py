"""What a corpus split is made of, as files the workflow can track (issue 19.4, 17.2/17.4).

Snakemake reruns a job when one of its input files is newer than its outputs.
A corpus directory as input says nothing about the files inside it (editing a
flac in place does not touch the directory), so the label rules take the
split's files themselves as inputs, through a per-split manifest
(``results/{corpus}/manifest/{split}.tsv``: path, size, mtime of every audio
file, transcript and speaker table) written by the cheap ``corpus_manifest``
rule. Alignment sources are listed the same way. The listings here are what
the rules' input functions call, so rule and library agree on what counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

AUDIO_EXT = ".flac"
#: Speaker tables at a corpus root (synthetic, LibriSpeech).
SPEAKER_TABLES = ("speakers.tsv", "SPEAKERS.TXT")
ALIGNMENT_SUFFIXES = (".textgrid", ".segs", ".words")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def split_files(root: str | os.PathLike, split_dir: str, audio_ext: str = AUDIO_EXT) -> list[str]:
    """Audio files and ``*.trans.txt`` of ``root/split_dir/{speaker}/{chapter}/``, plus the root's speaker tables."""
    base = Path(root) / split_dir
    files = [p for p in base.glob("*/*/*") if p.is_file() and (p.name.endswith(audio_ext) or p.name.endswith(".trans.txt"))]
    files += [Path(root) / t for t in SPEAKER_TABLES if (Path(root) / t).is_file()]
    return sorted(map(str, files))


def alignment_files(source: str | os.PathLike) -> list[str]:
    """The files of an alignment source: the archive itself, or every TextGrid / segs / words file under a directory."""
    src = Path(source)
    if src.is_file():
        return [str(src)]
    if not src.is_dir():
        return []
    return sorted(str(p) for p in src.rglob("*") if p.is_file() and p.suffix.lower() in ALIGNMENT_SUFFIXES)


def is_archive(source: str | os.PathLike) -> bool:
    return str(source).lower().endswith(ARCHIVE_SUFFIXES)


def write_manifest(files: Iterable[str | os.PathLike], root: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write ``path<TAB>bytes<TAB>mtime_ns`` of each file (paths relative to ``root``) atomically; the file count."""
    from .labels import write_text_atomic

    root = Path(root)
    rows = []
    for f in sorted(map(Path, files)):
        st = f.stat()
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            rel = str(f)
        rows.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n")
    write_text_atomic(out, "path\tbytes\tmtime_ns\n" + "".join(rows))
    return len(rows)


def check_librispeech_root(root: str | os.PathLike, subsets: Iterable[str], key: str) -> None:
    """Raise naming ``key`` when ``root`` (an existing LibriSpeech copy) lacks a subset the config maps to.

    ``key`` is the config key of the root (``corpora.{name}.path``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"config key {key}: {root} is not a directory; point it at an unpacked "
                                "LibriSpeech root (the directory holding dev-clean/, SPEAKERS.TXT, ...)")
    missing = [s for s in subsets if not (root / s).is_dir()]
    if missing:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"config key {key}: {root} has no subset director{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(missing)} (found: {', '.join(found) or 'nothing'}); the config's split_map names "
            f"{'it' if len(missing) == 1 else 'them'}. Fix split_map or unpack the missing subsets there "
            "(the workflow never writes under path:)")
    empty = [s for s in subsets if not any((root / s).glob(f"*/*/*{AUDIO_EXT}"))]
    if empty:
        raise FileNotFoundError(f"config key {key}: no {{speaker}}/{{chapter}}/*{AUDIO_EXT} under "
                                f"{', '.join(str(root / s) for s in empty)}: not a LibriSpeech layout")
