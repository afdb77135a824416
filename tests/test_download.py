"""Resumable verified downloads against a local Range-capable HTTP server (127.0.0.1 only)."""

import hashlib
import importlib.util
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from speechdissect.download import (
    LIBRISPEECH_SHA256, ChecksumError, IncompleteDownload, UnsafeArchiveError, download,
    download_librispeech, unpack_atomically,
)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with ``Range: bytes=N-`` support; can cut a response short once."""

    def do_GET(self):  # noqa: N802 (http.server API)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.cut_once.pop(self.path, None)
        self.wfile.write(body[:cut] if cut is not None else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files, srv.cut_once, srv.requests, srv.ignore_range = {}, {}, [], False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def make_tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# incompressible payload so the archive is big enough to cut mid-way
PAYLOAD = np.random.default_rng(0).bytes(200_000)
ARCHIVE = make_tar_gz({"pkg/a.bin": PAYLOAD, "pkg/sub/b.txt": b"hello\n"})
MD5 = hashlib.md5(ARCHIVE).hexdigest()
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("checksum", [MD5, SHA256])
def test_good_checksum_lands_and_unpacks(server, tmp_path, checksum):
    server.files["/x.tar.gz"] = ARCHIVE
    dest = download(f"{server.url}/x.tar.gz", tmp_path / "dl" / "x.tar.gz", checksum, chunk=4096)
    assert dest.read_bytes() == ARCHIVE
    assert leftovers(tmp_path / "dl") == ["x.tar.gz"]
    out = unpack_atomically(dest, tmp_path / "out")
    assert (out / "pkg/a.bin").read_bytes() == PAYLOAD and (out / "pkg/sub/b.txt").read_text() == "hello\n"
    assert leftovers(tmp_path) == ["dl", "out"]
    # an existing verified file is not fetched again
    n = len(server.requests)
    download(f"{server.url}/x.tar.gz", dest, md5=MD5)
    assert len(server.requests) == n
    with pytest.raises(FileExistsError):
        unpack_atomically(dest, out)


def test_bad_checksum_leaves_nothing(server, tmp_path):
    server.files["/x.tar.gz"] = ARCHIVE
    url = f"{server.url}/x.tar.gz"
    with pytest.raises(ChecksumError) as e:
        download(url, tmp_path / "x.tar.gz", "0" * 32)
    assert url in str(e.value) and "0" * 32 in str(e.value) and MD5 in str(e.value)
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_in_one_call(server, tmp_path):
    server.files["/x.tar.gz"] = ARCHIVE
    server.cut_once["/x.tar.gz"] = 50_000
    dest = download(f"{server.url}/x.tar.gz", tmp_path / "x.tar.gz", SHA256, chunk=8192, backoff=0)
    assert dest.read_bytes() == ARCHIVE
    assert [r for _, r in server.requests] == [None, "bytes=50000-"]


def test_interrupted_download_resumes_on_next_call(server, tmp_path):
    server.files["/x.tar.gz"] = ARCHIVE
    server.cut_once["/x.tar.gz"] = 30_000
    url, dest = f"{server.url}/x.tar.gz", tmp_path / "x.tar.gz"
    with pytest.raises(IncompleteDownload, match="resume"):
        download(url, dest, MD5, retries=0, backoff=0)
    assert not dest.exists() and (tmp_path / "x.tar.gz.part").stat().st_size == 30_000
    download(url, dest, MD5, retries=0)
    assert dest.read_bytes() == ARCHIVE and server.requests[-1][1] == "bytes=30000-"
    assert leftovers(tmp_path) == ["x.tar.gz"]


def test_complete_part_is_finished_not_refetched(server, tmp_path):
    server.files["/x.tar.gz"] = ARCHIVE
    (tmp_path / "x.tar.gz.part").write_bytes(ARCHIVE)  # killed between download and rename
    dest = download(f"{server.url}/x.tar.gz", tmp_path / "x.tar.gz", MD5, retries=0)
    assert dest.read_bytes() == ARCHIVE and server.requests == [("/x.tar.gz", f"bytes={len(ARCHIVE)}-")]


def test_server_without_range_restarts(server, tmp_path):
    server.files["/x.tar.gz"] = ARCHIVE
    server.ignore_range = True
    (tmp_path / "x.tar.gz.part").write_bytes(b"garbage" * 100)
    dest = download(f"{server.url}/x.tar.gz", tmp_path / "x.tar.gz", MD5, retries=0)
    assert dest.read_bytes() == ARCHIVE


def test_http_404(server, tmp_path):
    with pytest.raises(IOError, match="HTTP 404"):
        download(f"{server.url}/missing.tar.gz", tmp_path / "m.tar.gz", MD5, retries=0)
    assert leftovers(tmp_path) == []


def test_unpack_refuses_path_traversal(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(make_tar_gz({"ok.txt": b"1", "../escape.txt": b"2"}))
    with pytest.raises(UnsafeArchiveError, match=r"\.\./escape\.txt"):
        unpack_atomically(evil, tmp_path / "out")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("/abs.txt", "x")
    (tmp_path / "evil.zip").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError):
        unpack_atomically(tmp_path / "evil.zip", tmp_path / "out")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tf.addfile(link)
    (tmp_path / "link.tar").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        unpack_atomically(tmp_path / "link.tar", tmp_path / "out")
    assert leftovers(tmp_path) == ["evil.tar.gz", "evil.zip", "link.tar"]
    assert not (tmp_path.parent / "escape.txt").exists()


LIBRI = make_tar_gz({
    "LibriSpeech/SPEAKERS.TXT": b"; ID |SEX| SUBSET |MINUTES| NAME\n84 | F | dev-clean | 8.02 | Christie\n",
    "LibriSpeech/dev-clean/84/121123/84-121123.trans.txt": b"84-121123-0000 GO\n",
    "LibriSpeech/dev-clean/84/121123/84-121123-0000.flac": b"fLaC",
})


def test_download_librispeech_from_mirror(server, tmp_path):
    server.files["/mirror/dev-clean.tar.gz"] = LIBRI
    root = tmp_path / "librispeech"
    got = download_librispeech(["dev-clean"], root, f"{server.url}/mirror/",
                               {"dev-clean": hashlib.sha256(LIBRI).hexdigest()})
    assert got == {"dev-clean": root / "dev-clean"}
    assert (root / "dev-clean/84/121123/84-121123-0000.flac").read_bytes() == b"fLaC"
    assert (root / "SPEAKERS.TXT").exists()
    assert sorted(p.name for p in root.iterdir() if p.name != ".archives") == ["SPEAKERS.TXT", "dev-clean"]
    assert leftovers(root / ".archives") == []  # archive deleted after unpacking
    n = len(server.requests)
    download_librispeech(["dev-clean"], root, f"{server.url}/mirror")  # present: skipped
    assert len(server.requests) == n


def test_download_librispeech_bad_checksum_leaves_nothing(server, tmp_path):
    server.files["/dev-clean.tar.gz"] = LIBRI
    root = tmp_path / "librispeech"
    with pytest.raises(ChecksumError):
        download_librispeech(["dev-clean"], root, server.url, {"dev-clean": "f" * 64})
    assert not (root / "dev-clean").exists() and leftovers(root / ".archives") == []
    assert [p for p in root.rglob("*") if p.is_file()] == []
    with pytest.raises(ValueError, match="no checksum"):
        download_librispeech(["dev-cleaner"], root, server.url)


def test_checksums_match_torchaudio():
    """Compare with torchaudio's table by reading its source (importing it would load torch)."""
    spec = importlib.util.find_spec("torchaudio")
    assert spec is not None and spec.submodule_search_locations, "torchaudio (a required dependency) is not installed"
    src = (Path(spec.submodule_search_locations[0]) / "datasets" / "librispeech.py").read_text()
    found = dict(re.findall(r'resources/12/([\w-]+)\.tar\.gz":\s*"([0-9a-f]{64})"', src))
    assert found == LIBRISPEECH_SHA256
