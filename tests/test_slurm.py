"""The workflow runs on a SLURM cluster through profiles/slurm and gives the local results.

A one-node cluster (munged, slurmctld, slurmd as root on localhost; see
tests/cluster/slurm_cluster.py) runs the tiny config's `rule all`, whatever it is,
with `snakemake --profile profiles/slurm`. The test checks that every non-local job
went through sbatch (a SLURM job id per job, its log file, COMPLETED in the
controller, in the partition named by SPEECHDISSECT_SLURM_PARTITION) and that the
tables equal those of a local run of the same config (the shared ``tiny_run``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.cluster.slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_slurm_installed
from tests.conftest import TINY_RUN_TIMEOUT, WORKFLOW_TEST_TIMEOUT
from tests.outputs import assert_same_outputs

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "workflow" / "tiny_config.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

PROFILE = REPO / "profiles" / "slurm"
PARTITION = "sdtest"
LOCAL_CORES = 2   # the local `tiny_run` (tests/conftest.py) runs with --cores 2
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


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


# ------------------------------------------------------------------ the test

# the SLURM run (sbatch and status polling on top of the local run's work), cluster start-up,
# and the shared tiny_run if no test built it before
@pytest.mark.timeout(2 * TINY_RUN_TIMEOUT + WORKFLOW_TEST_TIMEOUT)
def test_tiny_workflow_on_slurm_matches_local_run(tiny_run, slurm_cluster, tmp_path):
    cluster = slurm_cluster
    env = cluster_env(cluster)
    workdir = tmp_path / "slurm_run"
    workdir.mkdir()
    # The synthesis is bit-reproducible (seeded per utterance; tests/test_determinism.py), so
    # sharing it only saves time: the SLURM run starts from the local run's synthetic corpora
    # and computes the rest.
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
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1.5 * TINY_RUN_TIMEOUT)
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

    compared = assert_same_outputs(tiny_run, workdir, names=("local", "SLURM"))
    assert compared > 0, "no outputs to compare"
    print(f"SLURM run: {len(slurm_ids)} jobs (SLURM ids {min(map(int, slurm_ids))}-{max(map(int, slurm_ids))}, "
          f"{dict(remote)}) in {elapsed:.0f} s; {compared} output files equal the local run's by content")
