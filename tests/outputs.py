"""Compare the outputs of two workflow runs: the same files, and every file's content.

Shared by the tests that check that two runs compute the same thing (local vs SLURM,
two clean runs, an interrupted-and-resumed run vs an uninterrupted one).

What is compared, by file type (each run's own directory replaced by ``<WORKDIR>`` first):

* tables (``.parquet``, ``.tsv``, ``.csv``): same columns in the same order, same rows, field
  by field (floats to a relative 1e-6, NaN equal to NaN);
* ``.json`` and ``.yaml``: value by value, the same way;
* arrays (``.npy``, ``.npz``): same keys, dtype and shape, :func:`numpy.array_equal` (exact);
* checkpoints (``.ckpt``, ``.pt``, ``.pth``): loaded with ``torch.load(weights_only=True)``,
  same structure, tensor by tensor exact;
* s3prl's tensorboard files (``events.out.tfevents.*``): the logged scalars (tag, step,
  value), not the wall-clock stamps;
* everything else (``.txt``, audio, alignments, figures, s3prl's ``log.log``, ...): byte for byte.

Only what records how a run went, not what it computed, may differ: the directories in
:data:`RUN_RECORD_DIRS`, the files named in :data:`RUN_RECORD_FILES`, and the table columns /
JSON keys named exactly in :data:`TIMING_FIELDS`. Names are matched exactly (no patterns):
a new timing field must be added here by name, or the comparison fails on it.
"""
from __future__ import annotations

import io
import json
import math
import re
import socket
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# Directories whose content records how a run went, not what it computed.
RUN_RECORD_DIRS = frozenset({"logs", "benchmarks", ".snakemake"})
# Files (by exact name) that record how a run went, and why they may differ.
RUN_RECORD_FILES = {
    "run_downstream.log": "s3prl's stdout/stderr of one probe seed: progress bars and wall-clock times",
    "launcher.log": "output of the downstream subprocess: progress bars and wall-clock times",
    "pruning.png": "neuron_editing/pruning figure: one panel plots the forward latency (wall clock) per sparsity",
    "pruning.svg": "neuron_editing/pruning figure: one panel plots the forward latency (wall clock) per sparsity",
}
# Table columns and JSON/YAML keys that measure the run (wall clock, CPU time, latency), not
# the result, listed by their exact names. A value under such a key may differ between runs.
TIMING_FIELDS = frozenset({
    # seconds of wall clock or CPU time
    "wall_seconds", "cpu_seconds", "train_seconds", "run_seconds", "run_cpu_seconds", "startup_seconds",
    "startup_cpu_seconds", "process_wall_seconds", "kmeans_seconds", "seconds_taken", "noop_wall_seconds",
    "full_train_seconds", "pruned_train_seconds",
    # forward-pass latencies (ms) and the changes computed from timings
    "latency_ms", "latency_runs_ms", "upstream_latency_ms", "upstream_latency_runs_ms",
    "full_latency_ms", "pruned_latency_ms", "latency_change_pct", "train_time_change_pct",
    # the findings table's latency / training-time column (reported beside verdicts, never used by them)
    "latency",
    # when a file was written (the corpus manifest records each input file's mtime to detect edits)
    "created", "mtime_ns",
})
TABLES = frozenset({".parquet", ".tsv", ".csv"})
VALUES = frozenset({".json", ".yaml", ".yml"})
ARRAYS = frozenset({".npy", ".npz"})
CHECKPOINTS = frozenset({".ckpt", ".pt", ".pth"})
TFEVENTS = "events.out.tfevents."
RTOL, ATOL = 1e-6, 1e-9
MAX_REPORTED = 20   # differences listed in one failure message


def output_files(root: Path) -> dict[str, Path]:
    """Relative path -> path of every output file under ``root``'s results/ and resources/ (run records aside)."""
    files = {}
    for top in ("results", "resources"):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if (path.is_file() and not RUN_RECORD_DIRS & set(rel.parts) and path.name not in RUN_RECORD_FILES
                    and not path.name.startswith(".snakemake")):
                files[str(rel)] = path
    return files


table_files = output_files   # the former name, used by the tests


def kind_of(path: Path) -> str:
    """How a file is compared: table, values, array, checkpoint, tfevents or bytes."""
    if path.name.startswith(TFEVENTS):
        return "tfevents"
    suffix = path.suffix.lower()
    for kind, suffixes in (("table", TABLES), ("values", VALUES), ("array", ARRAYS), ("checkpoint", CHECKPOINTS)):
        if suffix in suffixes:
            return kind
    return "bytes"


def run_independent_name(rel: str) -> str:
    """A file name with the run's date, epoch seconds and host replaced (s3prl names its
    ``args_<date>.yaml``, ``config_<date>.yaml`` and ``events.out.tfevents.<epoch>.<host>`` so)."""
    rel = re.sub(r"\d{4}-\d{2}-\d{2}[-_T]\d{2}[-:]\d{2}[-:]\d{2}", "<DATE>", rel)
    rel = re.sub(r"\d{9,}", "<EPOCH>", rel)
    return rel.replace(f".{socket.gethostname()}", ".<HOST>")


# ------------------------------------------------------------------ readers

def _text(path: Path, workdir: Path) -> str:
    return path.read_text().replace(str(workdir), "<WORKDIR>")


def read_table(path: Path, workdir: Path) -> pd.DataFrame:
    """A parquet, TSV or CSV table, with ``workdir`` replaced by ``<WORKDIR>`` in its strings."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(io.StringIO(_text(path, workdir)), sep="\t" if path.suffix == ".tsv" else ",")
    return frame.replace(str(workdir), "<WORKDIR>", regex=True)


def read_values(path: Path, workdir: Path):
    """A JSON or YAML document, with ``workdir`` replaced by ``<WORKDIR>``."""
    text = _text(path, workdir)
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The array of a ``.npy`` (key ``""``) or the arrays of a ``.npz``, without unpickling."""
    if path.suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_checkpoint(path: Path):
    """A checkpoint as ``torch.load(weights_only=True)`` gives it (fails on one that needs pickle)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - name the file
        raise AssertionError(f"{path}: not loadable with torch.load(weights_only=True): {exc}") from exc


# ------------------------------------------------------------------ comparisons (each yields differences)

def _same_scalar(x, y) -> bool:
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return type(x) is type(y) and x == y
    if isinstance(x, float) or isinstance(y, float):
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return math.isclose(x, y, rel_tol=RTOL, abs_tol=ATOL)
    return x == y


def _same_cell(u, v) -> bool:
    """Two fields of an object column: strings, missing values, numbers or lists/arrays (parquet)."""
    if isinstance(u, (list, tuple, np.ndarray)) or isinstance(v, (list, tuple, np.ndarray)):
        return not list(diff_values(np.asarray(u).tolist(), np.asarray(v).tolist(), ""))
    if u is None or v is None or (isinstance(u, float) and isinstance(v, float)):
        return (u is None and v is None) or (pd.isna(u) and pd.isna(v)) or _same_scalar(u, v)
    return _same_scalar(u, v)


def diff_values(a, b, where: str):
    """Differences between two JSON/YAML values; subtrees under a :data:`TIMING_FIELDS` key are not compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            yield f"{where}: keys differ: {sorted(map(str, a.keys() ^ b.keys()))}"
            return
        for k in a:
            if str(k) not in TIMING_FIELDS:
                yield from diff_values(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            yield f"{where}: lengths differ ({len(a)} vs {len(b)})"
            return
        for i, (x, y) in enumerate(zip(a, b)):
            yield from diff_values(x, y, f"{where}[{i}]")
    elif not _same_scalar(a, b):
        yield f"{where}: {a!r} != {b!r}"


def diff_frames(x: pd.DataFrame, y: pd.DataFrame, where: str):
    """Differences between two tables, column by column; :data:`TIMING_FIELDS` columns are not compared."""
    if list(x.columns) != list(y.columns):
        yield f"{where}: columns differ: {list(x.columns)} vs {list(y.columns)}"
        return
    if len(x) != len(y):
        yield f"{where}: {len(x)} vs {len(y)} rows"
        return
    if not x.index.equals(y.index):
        yield f"{where}: row index differs"
    for col in x.columns:
        if str(col) in TIMING_FIELDS:
            continue
        a, b = x[col].to_numpy(), y[col].to_numpy()
        if a.dtype.kind in "fc" and b.dtype.kind in "fciu":
            bad = ~np.isclose(a, b.astype(a.dtype), rtol=RTOL, atol=ATOL, equal_nan=True)
        elif a.dtype.kind in "iu" and b.dtype.kind in "fc":
            bad = ~np.isclose(a.astype(b.dtype), b, rtol=RTOL, atol=ATOL, equal_nan=True)
        else:
            bad = np.array([not _same_cell(u, v) for u, v in zip(a.tolist(), b.tolist())], dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            yield (f"{where}: column {col!r} differs in {int(bad.sum())} of {len(a)} rows, "
                   f"first at row {i}: {a[i]!r} != {b[i]!r}")


def diff_arrays(x: dict[str, np.ndarray], y: dict[str, np.ndarray], where: str):
    """Differences between arrays (exact: dtype, shape, every element; NaN equal to NaN)."""
    if x.keys() != y.keys():
        yield f"{where}: arrays differ: {sorted(x.keys() ^ y.keys())}"
        return
    for k in x:
        a, b = x[k], y[k]
        name = f"{where}[{k}]" if k else where
        if a.dtype != b.dtype or a.shape != b.shape:
            yield f"{name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
        elif not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
            bad = np.argwhere(~((a == b) | ((a != a) & (b != b))) if a.dtype.kind in "fc" else a != b)
            first = tuple(int(i) for i in bad[0]) if bad.size else ()
            yield (f"{name}: {len(bad)} of {a.size} elements differ, first at {first}: "
                   f"{a[first]!r} != {b[first]!r}")


def diff_checkpoints(a, b, where: str):
    """Differences between two loaded checkpoints: same structure, tensors exactly equal."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            yield f"{where}: {type(a).__name__} vs {type(b).__name__}"
        elif a.dtype != b.dtype or a.shape != b.shape:
            yield f"{where}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
        else:
            yield from diff_arrays({"": a.detach().cpu().numpy()}, {"": b.detach().cpu().numpy()}, where)
    elif isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            yield f"{where}: keys differ: {sorted(map(str, a.keys() ^ b.keys()))}"
            return
        for k in a:
            yield from diff_checkpoints(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            yield f"{where}: lengths differ ({len(a)} vs {len(b)})"
            return
        for i, (x, y) in enumerate(zip(a, b)):
            yield from diff_checkpoints(x, y, f"{where}[{i}]")
    else:
        yield from diff_values(a, b, where)


def diff_files(kind: str, x: Path, y: Path, first: Path, second: Path, where: str):
    """Differences between the content of two files of one ``kind`` (see :func:`kind_of`)."""
    if kind == "table":
        yield from diff_frames(read_table(x, first), read_table(y, second), where)
    elif kind == "values":
        yield from diff_values(read_values(x, first), read_values(y, second), where)
    elif kind == "array":
        yield from diff_arrays(read_arrays(x), read_arrays(y), where)
    elif kind == "checkpoint":
        a, b = read_checkpoint(x), read_checkpoint(y)
        for ckpt, root in ((a, first), (b, second)):
            if isinstance(ckpt, dict):   # paths stored in a checkpoint (e.g. its source) name the run's directory
                for k, v in ckpt.items():
                    if isinstance(v, str):
                        ckpt[k] = v.replace(str(root), "<WORKDIR>")
        yield from diff_checkpoints(a, b, where)
    elif kind == "tfevents":
        from speechdissect.downstream.runner import read_scalars

        if x.parent.is_dir():
            yield from diff_values(read_scalars(x.parent), read_scalars(y.parent), f"{where} (scalars)")
    else:
        a = x.read_bytes().replace(str(first).encode(), b"<WORKDIR>")
        b = y.read_bytes().replace(str(second).encode(), b"<WORKDIR>")
        if a != b:
            at = next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))
            yield f"{where}: bytes differ ({len(a)} vs {len(b)} bytes, first difference at byte {at})"


def assert_same_outputs(first: Path, second: Path, names: tuple[str, str] = ("first", "second")) -> int:
    """Same output files with the same content (see the module docstring); returns how many files were compared.

    ``names`` label the two runs in the failure message, which lists every differing file
    (up to :data:`MAX_REPORTED` differences).
    """
    a, b = output_files(first), output_files(second)
    by_name_a, by_name_b = defaultdict(list), defaultdict(list)
    for files, by_name in ((a, by_name_a), (b, by_name_b)):
        for rel in files:
            by_name[run_independent_name(rel)].append(rel)
    names_a = Counter({k: len(v) for k, v in by_name_a.items()})
    names_b = Counter({k: len(v) for k, v in by_name_b.items()})
    assert names_a == names_b, (f"output files differ between the {names[0]} and the {names[1]} run: "
                                f"only {names[0]} {sorted((names_a - names_b).elements())}, "
                                f"only {names[1]} {sorted((names_b - names_a).elements())}")
    differences: list[str] = []
    compared, seen_tfevents = 0, set()
    for key in sorted(by_name_a):
        for rel_a, rel_b in zip(sorted(by_name_a[key]), sorted(by_name_b[key])):
            kind = kind_of(a[rel_a])
            if kind == "tfevents":   # one comparison per directory: its scalars
                if a[rel_a].parent in seen_tfevents:
                    continue
                seen_tfevents.add(a[rel_a].parent)
            differences.extend(diff_files(kind, a[rel_a], b[rel_b], first, second, rel_a))
            compared += 1
    assert not differences, (f"{len(differences)} differences between the {names[0]} and the {names[1]} run:\n"
                             + "\n".join(differences[:MAX_REPORTED]))
    return compared
