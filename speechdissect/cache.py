"""The on-disk activation cache and its streaming reader.

Layout (see ``docs/formats.md``, "Activation cache")::

    meta.json                 written last: its presence marks a complete store
    index.parquet             one row per frame: utterance, frame, row
    ffn_{l:02d}.npy           float16 [n_frames, d_ffn], l = 0 .. n_layers-1
    hidden_{l:02d}.npy        float16 [n_frames, d_model], l = 0 .. n_layers
    attention/{utt}.npy       float16 [n_layers, n_heads, T, T], configured subset

Row ``i`` of every ``.npy`` is row ``i`` of ``index.parquet``, which follows the
label table exactly (utterance order, then frame order), so an analysis can
join labels and activations by position.

Why it looks like this: the corpus can be much larger than memory, so the
writer preallocates each file at its final size and fills row ranges with
positioned writes (no growing buffers, no mapped pages accumulating in the
writer's RSS), and readers stream fixed-size chunks through short-lived
mappings. Memory stays flat as the corpus grows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .audio import load_wav  # noqa: F401 - re-exported: cache.load_wav is public

if TYPE_CHECKING:  # torch is imported lazily: readers (analysis jobs) never need it
    import torch

    from .capture import UtteranceActivations

__all__ = [
    "ActivationCache",
    "CacheError",
    "FrameCountMismatch",
    "KINDS",
    "label_frame_counts",
    "load_wav",
    "write_cache",
]

KINDS = ("ffn", "hidden")
FORMAT_VERSION = 1
FLOAT16_MAX = float(np.finfo(np.float16).max)
SAMPLE_RATE = 16_000


class CacheError(RuntimeError):
    """A cache that is missing, incomplete or inconsistent."""


class FrameCountMismatch(ValueError):
    """The upstream's frame count disagrees with the label table for an utterance."""


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #
def _read_label_table(label_table: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    if isinstance(label_table, (str, os.PathLike)):
        return pd.read_parquet(label_table, columns=["utterance", "frame"])
    missing = {"utterance", "frame"} - set(label_table.columns)
    if missing:
        raise ValueError(f"label table lacks column(s) {sorted(missing)}")
    return label_table


def label_frame_counts(label_table: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Utterances in table order and their frame counts, checking the layout.

    The table must list each utterance in one contiguous block with frames
    0, 1, …, n-1 in order (docs/formats.md); anything else would silently
    misalign activations and labels.
    """
    utt = label_table["utterance"].to_numpy()
    if len(utt) == 0:
        raise ValueError("label table is empty")
    codes, uniques = pd.factorize(utt, sort=False)
    if np.any(np.diff(codes) < 0):
        bad = uniques[codes[1:][np.diff(codes) < 0][0]]
        raise ValueError(f"label table: utterance {bad!r} is not one contiguous block of rows")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    frame = label_table["frame"].to_numpy().astype(np.int64)
    expected = np.arange(len(frame), dtype=np.int64) - starts[codes]
    if not np.array_equal(frame, expected):
        i = int(np.flatnonzero(frame != expected)[0])
        raise ValueError(
            f"label table: utterance {uniques[codes[i]]!r} has frame {frame[i]} at position "
            f"{expected[i]}; frames must be 0..n-1 in order"
        )
    return [str(u) for u in uniques], counts


# --------------------------------------------------------------------------- #
# Writer helpers
# --------------------------------------------------------------------------- #
class _RowFile:
    """A preallocated float16 ``.npy`` filled by row ranges with ``pwrite``.

    ``open_memmap`` writes the header and sizes the file once; rows are then
    written with positioned writes so the data goes through the page cache
    without staying mapped (and counted) in this process.
    """

    def __init__(self, path: Path, n_rows: int, dim: int):
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n_rows, dim))
        self.offset = int(mm.offset)
        del mm
        self.path = path
        self.row_bytes = dim * 2
        self.dim = dim
        self.fd = os.open(path, os.O_WRONLY)
        self.max_abs = 0.0

    def write(self, row0: int, arr: np.ndarray) -> None:
        buf = memoryview(np.ascontiguousarray(arr, dtype=np.float16)).cast("B")
        pos = self.offset + row0 * self.row_bytes
        while len(buf):
            n = os.pwrite(self.fd, buf, pos)
            buf, pos = buf[n:], pos + n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _fit_frames(x: "torch.Tensor", n: int, dim: int = 0) -> "torch.Tensor":
    """Trim or pad (repeating the last frame, as s3prl does) ``x`` to ``n`` frames along ``dim``."""
    import torch

    t = x.shape[dim]
    if t == n:
        return x
    if t > n:
        return x.narrow(dim, 0, n)
    last = x.narrow(dim, t - 1, 1)
    return torch.cat([x] + [last] * (n - t), dim=dim)


def _fit_attention(a: "torch.Tensor", n: int) -> "torch.Tensor":
    """Trim/pad a ``[L, H, T, T]`` map to ``n`` frames; padded frames get zero key mass."""
    import torch

    t = a.shape[-1]
    if t == n:
        return a
    if t > n:
        return a[..., :n, :n]
    a = torch.cat([a, a.new_zeros(*a.shape[:-1], n - t)], dim=-1)  # zero attention to added keys
    return _fit_frames(a, n, dim=-2)  # added queries copy the last query row


def run_upstream(*args, **kwargs):
    """:func:`speechdissect.capture.run_upstream`, imported on first use (keeps torch out of readers)."""
    from .capture import run_upstream as _run

    return _run(*args, **kwargs)


def _clean_stale_tmp(out_dir: Path) -> None:
    """Remove ``{out_dir}.tmp-<pid>`` left by killed writers (pid no longer alive)."""
    for p in out_dir.parent.glob(out_dir.name + ".tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- #
# Writer
# --------------------------------------------------------------------------- #
def write_cache(
    upstream: "torch.nn.Module",
    family: str | None,
    wav_paths_by_utt: Mapping[str, Any],
    label_table: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike,
    attention_utterances: Iterable[str] = (),
    device: "str | torch.device" = "cpu",
    batch: int = 1,
    progress: bool = True,
    *,
    upstream_name: str | None = None,
    frame_tolerance: int = 1,
    extra_meta: Mapping[str, Any] | None = None,
) -> "ActivationCache":
    """Run the upstream once per utterance and write the activation cache.

    Parameters
    ----------
    upstream : s3prl upstream (hub ``*_local`` expert or ``S3PRLUpstream``);
        moved to ``device`` and put in eval mode.
    family : model family (``hubert``, ``wav2vec2``, ``wavlm``, ``mockingjay``),
        guessed when None.
    wav_paths_by_utt : utterance id -> audio path (or waveform array/tensor).
        Every utterance of the label table must be present; extras are ignored.
    label_table : label table (DataFrame or parquet path) with ``utterance``
        and ``frame`` columns; it fixes which utterances are cached, their
        order and their frame counts. A filtered table keeps its original
        index, which becomes the ``row`` column of ``index.parquet``. Models
        faster than this 20 ms grid (a 10 ms Mockingjay) are subsampled onto
        it (:func:`speechdissect.capture.to_grid`; ``meta["grid_step"]``).
    out_dir : destination directory; written as ``{out_dir}.tmp-<pid>`` and
        renamed into place when complete (``meta.json`` is written last).
    attention_utterances : utterances whose per-head attention is stored.
    device, batch : where and how many utterances per forward. ``batch > 1``
        pads waveforms; models whose conv front-end uses group norm over time
        (HuBERT/wav2vec2 base) then differ slightly from ``batch=1``.
    progress : show a tqdm bar over utterances.
    upstream_name : recorded in ``meta.json``.
    frame_tolerance : largest |model frames - label frames| that is fixed by
        trimming (or repeating the last frame) and recorded in
        ``meta["frame_adjustments"]``; 0 makes any difference an error.
        Larger differences raise :class:`FrameCountMismatch`.
    extra_meta : merged into ``meta.json``.

    Returns
    -------
    ActivationCache
        Reader on the finished cache.
    """
    import torch
    from tqdm.auto import tqdm

    from . import capture as _capture

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    labels = _read_label_table(label_table)
    utts, counts = label_frame_counts(labels)
    missing = [u for u in utts if u not in wav_paths_by_utt]
    if missing:
        raise KeyError(f"no audio for {len(missing)} utterance(s) of the label table, e.g. {missing[:3]}")
    att_set = set(attention_utterances)
    unknown = sorted(att_set - set(utts))
    if unknown:
        raise KeyError(f"attention_utterances not in the label table: {unknown[:5]}")
    if batch < 1:
        raise ValueError("batch must be >= 1")

    expert = _capture.unwrap_upstream(upstream)
    fam_name = family if family is not None else _capture.family_of(expert)
    fam = _capture.get_family(fam_name)
    expert.to(device)
    expert.eval()
    dims = fam.dims(expert)
    step = _capture.grid_step(expert, fam)
    n_layers, n_total = dims["n_layers"], int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    _clean_stale_tmp(out_dir)
    tmp = out_dir.parent / f"{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: dict[tuple[str, int], _RowFile] = {}
    try:
        for l in range(n_layers):
            files["ffn", l] = _RowFile(tmp / f"ffn_{l:02d}.npy", n_total, dims["d_ffn"])
        for l in range(n_layers + 1):
            files["hidden", l] = _RowFile(tmp / f"hidden_{l:02d}.npy", n_total, dims["d_model"])
        if att_set:
            (tmp / "attention").mkdir()

        order = list(range(len(utts)))
        groups = list(_batches(order, batch))
        load = lambda g: [load_wav(wav_paths_by_utt[utts[i]]) for i in g]  # noqa: E731
        adjustments: dict[str, int] = {}
        written = 0
        with tqdm(total=len(utts), desc=f"cache {out_dir.name}", unit="utt", disable=not progress) as bar:
            for group in groups:
                # decoding a flac costs ~1 % of a forward pass: read in line (a prefetch
                # thread only added GIL hand-offs, which stall on a busy machine)
                wavs = load(group)
                want_att = any(utts[i] in att_set for i in group)
                tensors = [torch.from_numpy(w).to(device) for w in wavs]
                acts = run_upstream(expert, tensors, fam, ffn=True, attention=want_att, attention_dtype=torch.float16)
                for i, ua in zip(group, acts):
                    ua = _capture.to_grid(ua, step)
                    utt, n = utts[i], int(counts[i])
                    diff = ua.n_frames - n
                    if diff != 0:
                        if abs(diff) > frame_tolerance:
                            src = wav_paths_by_utt[utt]
                            raise FrameCountMismatch(
                                f"utterance {utt}: the upstream emitted {ua.n_frames} frames but the label table "
                                f"has {n} (audio: {src if isinstance(src, (str, os.PathLike)) else 'in memory'}); the "
                                "labels were made for other audio or another frame grid: rebuild the label table"
                            )
                        adjustments[utt] = diff
                    _write_utterance(files, ua, int(starts[i]), n)
                    if utt in att_set and ua.attention is not None:
                        a = _fit_attention(ua.attention, n).to(torch.float16).cpu().numpy()
                        np.save(tmp / "attention" / f"{utt}.npy", a)
                    written += n
                bar.update(len(group))
        if written != n_total:  # pragma: no cover - guarded by construction
            raise CacheError(f"wrote {written} rows, expected {n_total}")
        for f in files.values():
            f.close()

        index = pd.DataFrame(
            {
                "utterance": labels["utterance"].to_numpy().astype(str),
                "frame": labels["frame"].to_numpy().astype(np.int32),
                "row": np.asarray(labels.index, dtype=np.int64),
            }
        )
        index.to_parquet(tmp / "index.parquet", index=False)

        max_abs = {f"{k}_{l:02d}": round(f.max_abs, 4) for (k, l), f in files.items()}
        overflow = sorted(name for name, v in max_abs.items() if v > FLOAT16_MAX)
        if overflow:
            warnings.warn(f"activations exceed the float16 range (stored as inf) in {overflow}", stacklevel=2)
        if adjustments:
            warnings.warn(
                f"{len(adjustments)} utterance(s) differed by one frame from the label table and were "
                "trimmed/padded (meta.json frame_adjustments)",
                stacklevel=2,
            )
        meta = {
            "format_version": FORMAT_VERSION,
            "upstream": upstream_name,
            "family": fam_name if isinstance(fam_name, str) else type(fam).__name__,
            **dims,
            "n_frames": n_total,
            "n_utterances": len(utts),
            "dtype": "float16",
            "kinds": {"ffn": n_layers, "hidden": n_layers + 1},
            "attention_utterances": [u for u in utts if u in att_set],
            "grid_step": step,
            "frame_adjustments": adjustments,
            "frame_tolerance": frame_tolerance,
            "max_abs": max_abs,
            "overflow": overflow,
            "batch": batch,
            "device": str(device),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(dict(extra_meta) if extra_meta else {}),
        }
        with open(tmp / "meta.json", "w") as fh:
            json.dump(meta, fh, indent=1)
        _replace_dir(tmp, out_dir)
    except BaseException:
        for f in files.values():
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ActivationCache(out_dir)


def _write_utterance(files: dict, ua: "UtteranceActivations", row0: int, n: int) -> None:
    import torch

    for kind, tensors in (("ffn", ua.ffn), ("hidden", ua.hidden)):
        for l, x in enumerate(tensors):
            x = _fit_frames(x, n)
            f = files[kind, l]
            if x.numel():
                lo, hi = torch.aminmax(x)  # one pass, no temporary
                m = max(-float(lo), float(hi))
            else:
                m = 0.0
            if m > f.max_abs:
                f.max_abs = m
            f.write(row0, x.to(torch.float16).cpu().numpy())


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move ``tmp`` to ``out_dir``; an existing ``out_dir`` is replaced."""
    if out_dir.exists():
        old = out_dir.parent / f"{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# --------------------------------------------------------------------------- #
# Reader
# --------------------------------------------------------------------------- #
def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran:
            raise CacheError(f"{path}: Fortran-ordered arrays are not supported")
        return shape, dtype, fh.tell()


class ActivationCache:
    """Read-only view of an activation cache directory.

    Parameters
    ----------
    path : the cache directory (``results/{upstream}/{corpus}/cache/{split}``).

    Notes
    -----
    ``iter_chunks`` is the way to compute statistics: each chunk is read
    through its own short-lived mapping and converted to float32, so memory
    is bounded by the chunk size, not the corpus.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise CacheError(
                f"no activation cache at {self.path} (meta.json missing: the cache was never "
                "completed); rerun the cache_activations rule"
            )
        with open(meta_path) as fh:
            self.meta: dict = json.load(fh)
        self._index: pd.DataFrame | None = None
        self._headers: dict[Path, tuple] = {}
        self._utt_slices: dict[str, slice] | None = None

    # -- metadata ------------------------------------------------------------ #
    @property
    def n_frames(self) -> int:
        return int(self.meta["n_frames"])

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])

    @property
    def index(self) -> pd.DataFrame:
        """One row per frame: ``utterance``, ``frame``, ``row`` (label-table row)."""
        if self._index is None:
            self._index = pd.read_parquet(self.path / "index.parquet")
        return self._index

    def utterance_slice(self, utt: str) -> slice:
        """Rows of ``utt`` in the cache."""
        if self._utt_slices is None:
            u = self.index["utterance"].to_numpy()
            change = np.flatnonzero(u[1:] != u[:-1]) + 1
            bounds = np.concatenate([[0], change, [len(u)]])
            self._utt_slices = {str(u[a]): slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])}
        return self._utt_slices[utt]

    def verify(self, label_table: pd.DataFrame | str | os.PathLike) -> None:
        """Raise :class:`CacheError` unless the cache rows follow ``label_table``.

        Compares utterance and frame row by row (and ``row`` with the table's
        index): the guarantee every analysis relies on to join by position.
        """
        labels = _read_label_table(label_table)
        idx = self.index
        if len(labels) != len(idx):
            raise CacheError(f"{self.path}: cache has {len(idx)} frames, label table has {len(labels)}")
        same_u = labels["utterance"].to_numpy().astype(str) == idx["utterance"].to_numpy().astype(str)
        same_f = labels["frame"].to_numpy().astype(np.int64) == idx["frame"].to_numpy().astype(np.int64)
        ok = same_u & same_f
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise CacheError(
                f"{self.path}: row {i} is {idx['utterance'].iat[i]}/{idx['frame'].iat[i]} in the cache but "
                f"{labels['utterance'].iat[i]}/{labels['frame'].iat[i]} in the label table; rebuild the cache"
            )
        if not np.array_equal(np.asarray(labels.index, dtype=np.int64), idx["row"].to_numpy()):
            raise CacheError(f"{self.path}: index 'row' differs from the label table's index")

    # -- arrays -------------------------------------------------------------- #
    def _layer_path(self, kind: str, l: int) -> Path:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        n = self.n_layers + (1 if kind == "hidden" else 0)
        if not -n <= l < n:
            raise IndexError(f"{kind} layer {l} out of range (0..{n - 1})")
        return self.path / f"{kind}_{l % n:02d}.npy"

    def _header(self, path: Path) -> tuple:
        if path not in self._headers:
            shape, dtype, offset = _npy_header(path)
            if shape[0] != self.n_frames:
                raise CacheError(f"{path}: {shape[0]} rows, meta.json says {self.n_frames}")
            self._headers[path] = (shape, dtype, offset)
        return self._headers[path]

    def layer(self, kind: str, l: int, mmap: bool = True) -> np.ndarray:
        """The float16 ``[n_frames, dim]`` array of one layer.

        ``mmap=True`` returns a read-only memory map (random access without
        loading); pages touched stay resident while the map lives, so prefer
        :meth:`iter_chunks` for full passes.
        """
        path = self._layer_path(kind, l)
        self._header(path)
        return np.load(path, mmap_mode="r" if mmap else None)

    def iter_chunks(
        self,
        kind: str,
        l: int,
        rows: slice | np.ndarray | Sequence[int] | None = None,
        chunk_rows: int = 65536,
        max_chunk_bytes: int = 256 * 2**20,
    ) -> Iterator[tuple[slice | np.ndarray, np.ndarray]]:
        """Stream one layer as float32 chunks.

        Parameters
        ----------
        kind : ``"ffn"`` or ``"hidden"``.
        l : layer (negative counts from the end).
        rows : None (all rows), a slice, a boolean mask or integer row indices
            (kept in the given order).
        chunk_rows : at most this many rows per chunk; also capped so a float32
            chunk stays under ``max_chunk_bytes``.

        Yields
        ------
        (slice or ndarray, ndarray)
            The rows of the chunk (a slice for contiguous selections, the
            integer indices otherwise) and their float32 values ``[n, dim]``.
        """
        path = self._layer_path(kind, l)
        shape, dtype, offset = self._header(path)
        n, dim = shape
        row_bytes = dim * dtype.itemsize
        step = max(1, min(int(chunk_rows), max_chunk_bytes // max(1, dim * 4)))

        def read(a: int, b: int) -> np.memmap:
            return np.memmap(path, dtype=dtype, mode="r", offset=offset + a * row_bytes, shape=(b - a, dim))

        if rows is None:
            rows = slice(0, n)
        if isinstance(rows, slice):
            start, stop, stride = rows.indices(n)
            if stride != 1:
                rows = np.arange(start, stop, stride)
            else:
                for a in range(start, stop, step):
                    b = min(a + step, stop)
                    mm = read(a, b)
                    out = np.array(mm, dtype=np.float32)
                    del mm
                    yield slice(a, b), out
                return
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(f"boolean rows must have length {n}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range (0..{n - 1})")
        for a in range(0, len(idx), step):
            part = idx[a : a + step]
            lo, hi = int(part.min()), int(part.max()) + 1
            mm = read(lo, hi)
            out = np.asarray(mm[part - lo], dtype=np.float32)
            del mm
            yield part, out

    def attention(self, utt: str, mmap: bool = False) -> np.ndarray:
        """Per-head attention of ``utt``: float16 ``[n_layers, n_heads, T, T]``."""
        path = self.path / "attention" / f"{utt}.npy"
        if not path.is_file():
            raise KeyError(
                f"no attention stored for {utt!r} in {self.path} "
                f"(stored: {len(self.meta.get('attention_utterances', []))} utterances)"
            )
        return np.load(path, mmap_mode="r" if mmap else None)

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"ActivationCache({str(self.path)!r}, upstream={m.get('upstream')!r}, "
            f"n_layers={m.get('n_layers')}, n_frames={m.get('n_frames')})"
        )
