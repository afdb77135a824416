"""The workflow runs on a SLURM cluster through profiles/slurm and gives the local results.

A one-node cluster (munged, slurmctld, slurmd as root on localhost; see
tests/cluster/slurm_cluster.py) runs the tiny config's `rule all`, whatever it is,
with `snakemake --profile profiles/slurm`. The test checks that every non-local job
went through sbatch (a SLURM job id per job, its log file, COMPLETED in the
controller, in the partition named by SPEECHDISSECT_SLURM_PARTITION) and that the
tables equal those of a local run of the same config (the shared ``tiny_run``).
"""
from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cluster.slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_slurm_installed

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "workflow" / "tiny_config.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

PROFILE = REPO / "profiles" / "slurm"
PARTITION = "sdtest"
LOCAL_CORES = 2   # the local `tiny_run` (tests/conftest.py) runs with --cores 2
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")
# Directories whose content records how a run went, not what it computed.
RUN_RECORDS = {"logs", "benchmarks", ".snakemake"}
TABLES = {".parquet", ".tsv", ".csv", ".json"}
# Names of keys and columns that may measure the run (wall clock, host, process) rather than
# the result: such a value may differ between the runs. Everything else must be equal.
TIMING = re.compile(r"second|minute|_ms$|latency|throughput|speed|rtf|elapsed|wall|runtime|duration|time|"
                    r"date|created|started|finished|host|pid|cpu|rss|vms|uss|pss|peak|memory|mean_load|"
                    r"io_in|io_out|^s$", re.I)


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node cluster; its daemons are stopped by pid however the test ends."""
    try:
        ensure_slurm_installed()
    except SlurmUnavailable as e:
        pytest.skip(f"no SLURM test cluster: {e}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), partition=PARTITION)
    try:
        t0 = time.monotonic()
        cluster.start()
        cluster.smoke_test()
        print(f"SLURM test cluster up with a smoke job in {time.monotonic() - t0:.1f} s: "
              f"node {cluster.hostname} CPUs={cluster.cpus} RealMemory={cluster.memory_mb} MB")
        yield cluster
    finally:
        cluster.stop()


# ------------------------------------------------------------------ helpers

def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(TINY_CONFIG),
            "--profile", str(PROFILE), "--workflow-profile", "none", *extra]


def cluster_env(cluster: SlurmCluster) -> dict[str, str]:
    env = {k: v for k, v in cluster.env.items() if not k.startswith("SPEECHDISSECT_SLURM_")}
    env["SPEECHDISSECT_SLURM_PARTITION"] = cluster.partition
    env["PYTHONHASHSEED"] = "0"   # as the local run (tests/conftest.py)
    return env


def synthetic_corpora() -> list[str]:
    corpora = yaml.safe_load(TINY_CONFIG.read_text()).get("corpora", {})
    return [name for name, spec in corpora.items() if spec.get("source") == "synthetic"]


def planned_jobs(output: str) -> list[tuple[str, bool, int, dict[str, str]]]:
    """(rule, is_local, threads, resources) of every job a snakemake output lists.

    ``is_local`` (a ``localrule`` block) is only known in a real run: a dry run prints
    every job as ``rule``.
    """
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(local)?rule (\w+):", block)
        if not head:
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ") if "=" in kv) if res else {}
        jobs.append((head.group(2), bool(head.group(1)), int(threads.group(1)) if threads else 1, resources))
    return jobs


def fitting_overrides(jobs, cluster: SlurmCluster) -> list[str]:
    """--set-threads and --set-resources: each rule's threads as in the local run, memory that fits.

    The threads equal the local run's so that multi-threaded numerics (torch) match; the
    memory request shrinks so that two jobs fit on the test node (memory is not enforced
    there, no cgroups: this only changes scheduling). On the command line these keys
    replace the profile's set-threads and set-resources.
    """
    cap = max(256, cluster.memory_mb // 2)
    threads, mem = {}, {}
    for rule, _, n, resources in jobs:
        threads[rule] = min(n, cluster.cpus)
        try:
            asked = int(resources.get("mem_mb", cap))
        except ValueError:
            asked = cap
        mem[rule] = min(asked, cap)
    return ["--set-threads", *(f"{rule}={n}" for rule, n in sorted(threads.items())),
            "--set-resources", *(f"{rule}:mem_mb={mb}" for rule, mb in sorted(mem.items()))]


def table_files(root: Path) -> dict[str, Path]:
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


def assert_same_outputs(local: Path, cluster_run: Path) -> int:
    """Same output files; same content of every table (parquet, tsv, csv, json). Returns the table count."""
    a, b = table_files(local), table_files(cluster_run)
    names_a, names_b = Counter(map(run_independent_name, a)), Counter(map(run_independent_name, b))
    assert names_a == names_b, ("output files differ between the local and the SLURM run: "
                                f"only local {sorted((names_a - names_b).elements())}, "
                                f"only SLURM {sorted((names_b - names_a).elements())}")
    n = 0
    for rel in a:
        if Path(rel).suffix not in TABLES or rel not in b:
            continue
        x, y = read_table(a[rel], local), read_table(b[rel], cluster_run)
        if isinstance(x, pd.DataFrame):
            assert_same_frame(x, y, rel)
        else:
            assert_same_json(x, y, rel)
        n += 1
    return n


# ------------------------------------------------------------------ the test

def test_tiny_workflow_on_slurm_matches_local_run(tiny_run, slurm_cluster, tmp_path):
    cluster = slurm_cluster
    env = cluster_env(cluster)
    workdir = tmp_path / "slurm_run"
    workdir.mkdir()
    # The synthesizer is not bit-reproducible run to run (Praat's "Change gender" PSOLA draws
    # unseeded random pulses), so both runs must share the corpus for their tables to match:
    # the SLURM run starts from the local run's synthetic corpora and computes the rest.
    for corpus in synthetic_corpora():
        shutil.copytree(tiny_run / "resources" / "corpora" / corpus, workdir / "resources" / "corpora" / corpus,
                        symlinks=True)

    # What a local run would do from here (as tests/conftest.py runs it): jobs, threads, memory.
    dry = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
                          str(TINY_CONFIG), "--cores", str(LOCAL_CORES), "-n"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert dry.returncode == 0, f"dry run failed:\n{dry.stdout[-4000:]}\n{dry.stderr[-8000:]}"
    jobs = planned_jobs(dry.stdout + dry.stderr)
    assert jobs, f"the dry run lists no jobs:\n{dry.stdout[-4000:]}"

    cmd = snakemake_cmd(
        workdir, "--max-threads", str(cluster.cpus), *fitting_overrides(jobs, cluster),
        # No slurmdbd here: ask squeue (MinJobAge=7200 keeps finished jobs visible for the whole run), check often.
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
    )
    t0 = time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"SLURM run timed out after {e.timeout} s\n{cluster.logs()}")
    elapsed = time.monotonic() - t0
    log = run.stdout + run.stderr
    if run.returncode != 0:
        slurm_logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                               for p in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")))
        pytest.fail(f"snakemake --profile profiles/slurm failed ({run.returncode}): {' '.join(cmd)}\n"
                    f"--- snakemake\n{log[-12000:]}\n{slurm_logs[-12000:]}\n{cluster.logs()}")

    # The run did the planned jobs; every one not marked `localrule` went through sbatch, left
    # its SLURM log, and completed in the partition the profile took from the environment.
    ran = planned_jobs(log)
    assert Counter(j[0] for j in ran) == Counter(j[0] for j in jobs), "the run did other jobs than planned"
    remote = Counter(rule for rule, local, *_ in ran if not local)
    assert remote, "no job ran on the cluster"
    submitted = SUBMITTED.findall(log)
    slurm_ids = [slurm_id for _, slurm_id, _ in submitted]
    assert len(set(slurm_ids)) == len(slurm_ids) == sum(remote.values()), (
        f"expected one SLURM job per cluster job {dict(remote)}, saw {submitted}")
    rules = Counter(re.search(r"/rule_(\w+?)/", path).group(1) for _, _, path in submitted)
    assert rules == remote, f"submitted rules {dict(rules)} != planned {dict(remote)}"
    known = cluster.jobs()
    for _, slurm_id, path in submitted:
        assert Path(path).is_file(), f"no SLURM log {path} for job {slurm_id}"
        assert "--executor slurm-jobstep" in Path(path).read_text(errors="replace"), path
        job = known.get(slurm_id)
        assert job is not None, f"SLURM job {slurm_id} unknown to the controller: {known}"
        assert job["state"] == "COMPLETED" and job["partition"] == PARTITION, (slurm_id, job)
        assert job["name"].startswith("speechdissect_"), (slurm_id, job)   # slurm-jobname-prefix
    main_log = "".join(p.read_text() for p in (workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    assert all(f"SLURM jobid {i} " in main_log for i in slurm_ids), "job ids missing in .snakemake/log"

    tables = assert_same_outputs(tiny_run, workdir)
    assert tables > 0, "no tables to compare"
    print(f"SLURM run: {len(slurm_ids)} jobs (SLURM ids {min(map(int, slurm_ids))}-{max(map(int, slurm_ids))}, "
          f"{dict(remote)}) in {elapsed:.0f} s; {tables} tables equal the local run's")
