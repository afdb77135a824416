"""Resumable, verified downloads and atomic unpacking (LibriSpeech from OpenSLR or a mirror).

LibriSpeech archives are 0.3–30 GB: a download that dies at 90 % must resume,
a corrupt archive must never be unpacked, and a killed unpack must not leave a
half-filled split directory that looks finished.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "https://www.openslr.org/resources/12"
LIBRISPEECH_SUBSETS = (
    "dev-clean", "dev-other", "test-clean", "test-other",
    "train-clean-100", "train-clean-360", "train-other-500",
)
#: SHA-256 of the official OpenSLR archives, as listed in torchaudio's
#: ``torchaudio/datasets/librispeech.py`` ``_CHECKSUMS``.
LIBRISPEECH_SHA256: dict[str, str] = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
#: Metadata files at the top of every LibriSpeech archive (``LibriSpeech/SPEAKERS.TXT`` …).
LIBRISPEECH_META = ("SPEAKERS.TXT", "CHAPTERS.TXT", "BOOKS.TXT", "LICENSE.TXT", "README.TXT")

_RETRYABLE = (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError, OSError)


class ChecksumError(RuntimeError):
    """Downloaded bytes do not match the expected checksum."""


class IncompleteDownload(IOError):
    """The server closed the connection before sending every byte."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the destination."""


# --------------------------------------------------------------------------- hashing

def hash_algorithm(checksum: str) -> str:
    """Name the algorithm of a hex digest by its length (32: md5, 40: sha1, 64: sha256).

    A ``"sha256:…"`` / ``"md5:…"`` prefix is honoured too.
    """
    if ":" in checksum:
        return checksum.split(":", 1)[0].lower()
    try:
        return {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}[len(checksum)]
    except KeyError:
        raise ValueError(f"cannot tell the hash algorithm of checksum {checksum!r}") from None


def _digest(checksum: str) -> str:
    return checksum.split(":", 1)[-1].lower()


def file_checksum(path: str | os.PathLike, algorithm: str = "md5", chunk: int = 1 << 20,
                  progress: bool = False) -> str:
    """Hex digest of a file, streamed in chunks (archives are larger than memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=f"{algorithm} {Path(path).name}", leave=False,
                                      disable=not progress) as bar:
        while block := fh.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


# --------------------------------------------------------------------------- download

def _fetch(url: str, part: Path, chunk: int, timeout: float, desc: str) -> None:
    """Append the missing bytes of ``url`` to ``part``; raise IncompleteDownload if cut short."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "speech-dissect"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete
            return
        raise
    with resp:
        status = resp.status
        if have and status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {have}-"):
                raise IncompleteDownload(f"{url}: server resumed at {crange!r}, expected byte {have}")
            mode = "ab"
        else:  # 200: server ignored the Range header, start over
            if have:
                log.info("%s: server does not resume (HTTP %s), restarting", url, status)
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        got = have
        with open(part, mode) as fh, tqdm(total=expected, initial=have, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=desc, leave=False) as bar:
            while block := resp.read(chunk):
                fh.write(block)
                got += len(block)
                bar.update(len(block))
    if expected is not None and got < expected:
        raise IncompleteDownload(f"{url}: connection closed after {got} of {expected} bytes")


def download(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None = None,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    chunk: int = 1 << 20,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with HTTP Range.

    Parameters
    ----------
    checksum, md5, sha256
        Expected hex digest; the algorithm follows the digest's length (md5 or
        sha256). On mismatch the partial file is deleted and ChecksumError names
        the url and both digests. None skips verification.
    retries
        Reconnections (resuming where the last attempt stopped) before giving
        up; the ``.part`` file is kept so that a later call resumes too.

    Returns
    -------
    Path
        ``dest``, which only ever appears complete and verified (renamed from ``.part``).
    """
    expected = checksum or md5 or sha256
    if md5 and not checksum:
        expected = f"md5:{md5}"
    elif sha256 and not checksum:
        expected = f"sha256:{sha256}"
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    algo = hash_algorithm(expected) if expected else None

    if dest.exists():
        if not expected or file_checksum(dest, algo, progress=True) == _digest(expected):
            return dest
        log.warning("%s exists but its checksum is wrong; downloading again", dest)
        dest.unlink()

    attempt = 0
    while True:
        try:
            _fetch(url, part, chunk, timeout, desc=dest.name)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt >= retries:
                raise IOError(f"download failed: {url} (HTTP {exc.code} {exc.reason}); partial data kept in {part}") from exc
        except _RETRYABLE as exc:
            if attempt >= retries:
                raise IncompleteDownload(
                    f"download failed after {attempt + 1} attempts: {url} ({exc}); "
                    f"rerun to resume from {part}"
                ) from exc
            log.warning("%s: %s; resuming (attempt %d/%d)", url, exc, attempt + 1, retries)
        attempt += 1
        time.sleep(backoff * attempt if backoff else 0)

    if expected:
        actual = file_checksum(part, algo, progress=True)
        if actual != _digest(expected):
            part.unlink()
            raise ChecksumError(
                f"checksum mismatch for {url}: expected {algo} {_digest(expected)}, got {actual}; "
                "the partial file was deleted. Check the mirror url or the expected checksum."
            )
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- unpack

def _safe_name(name: str) -> str:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside the destination")
    return str(p)


def _extract(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for m in members:
                _safe_name(m.filename)
            for m in tqdm(members, desc=f"unpack {archive.name}", unit="file", leave=False):
                zf.extract(m, into)
        return
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            _safe_name(m.name)
            if m.issym() or m.islnk():
                target = PurePosixPath(m.name).parent / m.linkname if m.issym() else PurePosixPath(m.linkname)
                try:
                    _safe_name(os.path.normpath(str(target)))
                except UnsafeArchiveError:
                    raise UnsafeArchiveError(f"archive link {m.name!r} -> {m.linkname!r} points outside") from None
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"archive member {m.name!r} is a device or fifo")
        for m in tqdm(members, desc=f"unpack {archive.name}", unit="file", leave=False):
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: belt and braces
                tf.extract(m, into, filter="data")
            else:
                tf.extract(m, into)


def unpack_atomically(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> Path:
    """Extract a tar(.gz/.bz2/.xz) or zip archive so that ``dest_dir`` appears only when complete.

    Members are extracted into a temporary sibling directory, then renamed onto
    ``dest_dir``. Absolute paths, ``..`` components, links pointing outside and
    device files are refused before anything is written.
    """
    archive, dest = Path(archive), Path(dest_dir)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; remove it to unpack {archive} again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.unpacking")
    if tmp.exists():
        shutil.rmtree(tmp)  # left over by a killed run
    tmp.mkdir()
    try:
        _extract(archive, tmp)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --------------------------------------------------------------------------- LibriSpeech

#: Written at the corpus root once every subset is in place: what was downloaded and checked.
DOWNLOAD_STAMP = ".download.json"


def librispeech_checksums(subsets: Iterable[str], checksums: Mapping[str, str] | None = None) -> dict[str, str]:
    """The checksum each subset's archive is verified against: ``checksums`` first, then the official SHA-256."""
    sums = dict(LIBRISPEECH_SHA256)
    sums.update(checksums or {})
    return {s: sums[s] for s in subsets if s in sums}


def download_complete(root: str | os.PathLike, subsets: Iterable[str],
                      checksums: Mapping[str, str] | None = None) -> bool:
    """Whether ``root`` holds every subset, downloaded and verified against these checksums (its stamp says so).

    The workflow asks this before planning: a complete corpus is then used in
    place like an existing copy, so no code or config change that leaves the
    downloaded bytes alone (alignments, the download script) can re-download it.
    """
    import json

    stamp = Path(root) / DOWNLOAD_STAMP
    if not stamp.is_file():
        return False
    try:
        done = json.loads(stamp.read_text())["checksums"]
    except (ValueError, KeyError, TypeError):
        return False
    want = librispeech_checksums(subsets, checksums)
    return all(done.get(s) == want.get(s) and (Path(root) / s).is_dir() for s in subsets)


def write_download_stamp(root: str | os.PathLike, subsets: Iterable[str], mirror_url: str,
                         checksums: Mapping[str, str] | None = None) -> Path:
    """Record (atomically) which subsets sit verified under ``root``, from which mirror, checked against what."""
    import json

    from .labels import write_text_atomic

    subsets = sorted(subsets)
    return write_text_atomic(Path(root) / DOWNLOAD_STAMP, json.dumps(
        {"subsets": subsets, "mirror": mirror_url, "checksums": librispeech_checksums(subsets, checksums)},
        indent=2) + "\n")


def download_librispeech(
    subsets: Iterable[str],
    root: str | os.PathLike,
    mirror_url: str = DEFAULT_MIRROR,
    checksums: Mapping[str, str] | None = None,
    *,
    keep_archives: bool = False,
    archive_dir: str | os.PathLike | None = None,
    chunk: int = 1 << 20,
    retries: int = 5,
) -> dict[str, Path]:
    """Download and unpack LibriSpeech subsets into ``root/{subset}/{spk}/{chapter}/…``.

    The archives' top directory ``LibriSpeech/`` is dropped so that ``root`` is
    the ``libri_root`` s3prl expects; ``SPEAKERS.TXT`` and the other metadata
    files land in ``root``. A subset whose directory exists is skipped.

    Parameters
    ----------
    mirror_url
        Base url holding ``{subset}.tar.gz`` (default OpenSLR resource 12).
    checksums
        ``{subset: md5 or sha256}``; defaults to the official SHA-256 values.
        A subset with no known checksum is refused: set it explicitly.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sums = dict(LIBRISPEECH_SHA256)
    sums.update(checksums or {})
    archives = Path(archive_dir) if archive_dir else root / ".archives"
    out: dict[str, Path] = {}
    for subset in tqdm(list(subsets), desc="LibriSpeech subsets", unit="subset"):
        target = root / subset
        if target.is_dir():
            log.info("%s exists; skipping", target)
            out[subset] = target
            continue
        if subset not in sums:
            raise ValueError(f"no checksum known for LibriSpeech subset {subset!r}: give it under the config key "
                             f"corpora.{{name}}.checksums ({subset}: \"sha256:...\"), or checksums= in Python")
        url = f"{mirror_url.rstrip('/')}/{subset}.tar.gz"
        archive = download(url, archives / f"{subset}.tar.gz", sums[subset], chunk=chunk, retries=retries)
        unpacked = unpack_atomically(archive, root / f".{subset}.unpacked")
        try:
            top = unpacked / "LibriSpeech"
            base = top if top.is_dir() else unpacked
            if not (base / subset).is_dir():
                raise FileNotFoundError(f"{archive} has no {subset}/ directory (found {sorted(p.name for p in base.iterdir())})")
            for meta in LIBRISPEECH_META:
                if (base / meta).exists() and not (root / meta).exists():
                    os.replace(base / meta, root / meta)
            os.rename(base / subset, target)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
        if not keep_archives:
            archive.unlink()
        out[subset] = target
    return out
