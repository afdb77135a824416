"""Compare the outputs of two workflow runs: same files, same content of every table.

Shared by the tests that check that two runs compute the same thing (local vs SLURM,
two clean runs, an interrupted-and-resumed run vs an uninterrupted one). Files under
``logs``/``benchmarks``/``.snakemake`` record how a run went, not what it computed, and
are skipped; keys and columns whose names measure the run (wall clock, host, memory)
may differ; every other value of every parquet/TSV/CSV/JSON table must be equal
(floats to 1e-6).
"""
from __future__ import annotations

import json
import math
import re
import socket
from collections import Counter
from pathlib import Path

import pandas as pd

# Directories whose content records how a run went, not what it computed.
RUN_RECORDS = {"logs", "benchmarks", ".snakemake"}
TABLES = {".parquet", ".tsv", ".csv", ".json"}
# Names of keys and columns that may measure the run (wall clock, host, process) rather than
# the result: such a value may differ between the runs. Everything else must be equal.
TIMING = re.compile(r"second|minute|_ms$|latency|throughput|speed|rtf|elapsed|wall|runtime|duration|time|"
                    r"date|created|started|finished|host|pid|cpu|rss|vms|uss|pss|peak|memory|mean_load|"
                    r"io_in|io_out|^s$|_s$", re.I)


def table_files(root: Path) -> dict[str, Path]:
    """Relative path -> path of every output file under ``root``'s results/ and resources/."""
    files = {}
    for top in ("results", "resources"):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not RUN_RECORDS & set(rel.parts) and not path.name.startswith(".snakemake"):
                files[str(rel)] = path
    return files


def read_table(path: Path, workdir: Path):
    """A table as a DataFrame (parquet, tsv, csv) or a JSON value, with ``workdir`` replaced by a placeholder."""
    if path.suffix == ".json":
        return json.loads(path.read_text().replace(str(workdir), "<WORKDIR>"))
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    return frame.replace(str(workdir), "<WORKDIR>", regex=True)


def assert_same_frame(x: pd.DataFrame, y: pd.DataFrame, where: str) -> None:
    """Equal frames (floats to 1e-6), except that timing-named columns may differ."""
    try:
        pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-6, atol=1e-9, obj=where)
    except AssertionError:
        timing = [c for c in x.columns if TIMING.search(str(c))]
        if not timing or list(x.columns) != list(y.columns):
            raise
        pd.testing.assert_frame_equal(x.drop(columns=timing), y.drop(columns=timing), check_exact=False,
                                      rtol=1e-6, atol=1e-9, obj=f"{where} (timing columns {timing} aside)")


def assert_same_json(a, b, where: str, timing: bool = False) -> None:
    """Equal JSON values (floats to 1e-6); leaves under a timing-named key may differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ: {sorted(a.keys() ^ b.keys())}"
        for k in a:
            assert_same_json(a[k], b[k], f"{where}.{k}", timing or bool(TIMING.search(str(k))))
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b) or timing, f"{where}: lengths differ ({len(a)} vs {len(b)})"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_json(x, y, f"{where}[{i}]", timing)
    elif timing:
        return
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)) and (
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))), \
            f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def run_independent_name(rel: str) -> str:
    """A file name with the run's date, epoch seconds and host replaced (s3prl names its
    ``args_<date>.yaml``, ``config_<date>.yaml`` and ``events.out.tfevents.<epoch>.<host>`` so)."""
    rel = re.sub(r"\d{4}-\d{2}-\d{2}[-_T]\d{2}[-:]\d{2}[-:]\d{2}", "<DATE>", rel)
    rel = re.sub(r"\d{9,}", "<EPOCH>", rel)
    return rel.replace(f".{socket.gethostname()}", ".<HOST>")


def assert_same_outputs(first: Path, second: Path, names: tuple[str, str] = ("first", "second")) -> int:
    """Same output files; same content of every table (parquet, tsv, csv, json). Returns the table count.

    ``names`` label the two runs in the failure messages.
    """
    a, b = table_files(first), table_files(second)
    names_a, names_b = Counter(map(run_independent_name, a)), Counter(map(run_independent_name, b))
    assert names_a == names_b, (f"output files differ between the {names[0]} and the {names[1]} run: "
                                f"only {names[0]} {sorted((names_a - names_b).elements())}, "
                                f"only {names[1]} {sorted((names_b - names_a).elements())}")
    n = 0
    for rel in a:
        if Path(rel).suffix not in TABLES or rel not in b:
            continue
        x, y = read_table(a[rel], first), read_table(b[rel], second)
        if isinstance(x, pd.DataFrame):
            assert_same_frame(x, y, rel)
        else:
            assert_same_json(x, y, rel)
        n += 1
    return n
