"""kill -9 in the middle of a job, then rerun: the workflow completes with the tables of an uninterrupted run.

One run of the tiny config is killed three times, each time while a job of a given rule
is computing (pretrain_upstream: training; cache_activations: caching; s3prl_downstream:
a downstream evaluation). The kill is SIGKILL to Snakemake and every process under it
(the job's script, s3prl's runner), as a crashed node or an OOM kill would. After each
kill no output of the killed job may look finished: Snakemake must plan the job again.
The user's recovery is ``snakemake --unlock`` and a rerun with ``--rerun-incomplete``;
the last rerun completes, and every output then equals the shared uninterrupted ``tiny_run``'s
by content (tests/outputs.py).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, SNAKEMAKE, TINY_CONFIG, TINY_RUN_TIMEOUT, WORKFLOW_TEST_TIMEOUT, run_snakemake
from tests.outputs import assert_same_outputs

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

# Rule killed -> its script (Snakemake runs it as .snakemake/scripts/tmpXXXX.<script>).
KILL_AT = {
    "pretrain_upstream": "pretrain_upstream.py",
    "cache_activations": "cache_activations.py",
    "s3prl_downstream": "s3prl_downstream.py",
}
JOB_HEAD = re.compile(r"^(?:local)?rule (\w+):$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


class SnakemakeRun:
    """A Snakemake run in its own session whose output is read as it comes, job by job."""

    def __init__(self, workdir: Path, *args: str):
        cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(TINY_CONFIG),
               "--cores", "2", *args]
        self.lines: list[str] = []
        self.jobs: dict[int, dict] = {}      # jobid -> {"rule", "output", "log"}
        self.finished: set[int] = set()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        block = None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if m := JOB_HEAD.match(line):
                block = {"rule": m.group(1), "output": [], "log": []}
            elif block is not None and line.startswith("    "):
                key, _, value = line.strip().partition(": ")
                if key in ("output", "log"):
                    block[key] = value.split(", ")
                elif key == "jobid":
                    self.jobs[int(value)] = block
            else:
                block = None
                if m := FINISHED.match(line):
                    self.finished.add(int(m.group(1)))

    def running(self, rule: str) -> tuple[int, dict] | None:
        """A started, unfinished job of ``rule``, if any."""
        for jobid, job in list(self.jobs.items()):
            if job["rule"] == rule and jobid not in self.finished:
                return jobid, job
        return None

    def processes(self) -> list[psutil.Process]:
        try:
            return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def script_running(self, script: str) -> bool:
        for p in self.processes():
            try:
                if any(arg.endswith(f".{script}") for arg in p.cmdline()):
                    return True
            except psutil.Error:
                pass
        return False

    def kill(self) -> None:
        """SIGKILL to Snakemake's process group and to every process under it (all started by this test)."""
        procs = self.processes()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc.wait(timeout=60)
        self._reader.join(timeout=60)
        psutil.wait_procs(procs, timeout=30)

    def output(self) -> str:
        return "\n".join(self.lines)


def kill_while_running(workdir: Path, rule: str, script: str, *args: str, timeout: float = TINY_RUN_TIMEOUT) -> dict:
    """Run until a job of ``rule`` is computing (its script process exists and its log has content), kill -9."""
    run = SnakemakeRun(workdir, *args)
    t0 = time.monotonic()
    try:
        while True:
            if run.proc.poll() is not None:
                pytest.fail(f"snakemake ended ({run.proc.returncode}) before a {rule} job ran:\n{run.output()[-6000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"no {rule} job within {timeout} s:\n{run.output()[-6000:]}")
            found = run.running(rule)
            if found and run.script_running(script):
                jobid, job = found
                logs = [workdir / p for p in job["log"]]
                if all(p.is_file() and p.stat().st_size > 0 for p in logs):
                    break
            time.sleep(0.2)
        time.sleep(1.0)   # into the computation
        assert jobid not in run.finished and run.script_running(script), f"{rule} job {jobid} ended before the kill"
    except BaseException:
        run.kill()
        raise
    run.kill()
    assert jobid not in run.finished, f"{rule} job {jobid} finished before the kill"
    return {**job, "jobid": jobid, "after": time.monotonic() - t0}


def planned(workdir: Path, *targets: str) -> dict[str, int]:
    """Rule -> jobs a dry run with --rerun-incomplete plans (for ``targets``, default rule all)."""
    proc = run_snakemake(workdir, *targets, "--dry-run", "--rerun-incomplete", "--quiet", "rules")
    text = proc.stdout + proc.stderr
    block = re.search(r"Job stats:\n(.*?)\n\s*\n", text + "\n\n", re.S)
    jobs = {}
    for line in (block.group(1).splitlines() if block else []):
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


# one run in four parts (three killed), and the shared tiny_run if no test built it before
@pytest.mark.timeout(2 * TINY_RUN_TIMEOUT + WORKFLOW_TEST_TIMEOUT)
def test_kill_9_during_training_caching_and_downstream_then_rerun(request, tmp_path):
    workdir = tmp_path / "killed_run"
    workdir.mkdir()
    t0 = time.monotonic()
    kills = []
    for rule, script in KILL_AT.items():
        job = kill_while_running(workdir, rule, script, "--rerun-incomplete")
        # The lock the killed Snakemake left is the one thing the user has to clear.
        run_snakemake(workdir, "--unlock")
        # Nothing of the killed job looks finished: asked for its outputs, Snakemake redoes the job
        # (an output left behind is known to be incomplete).
        left = [out for out in job["output"] if (workdir / out).exists()]
        assert planned(workdir, *job["output"]).get(rule) == 1, (
            f"after kill -9 of {rule} job {job['jobid']}, a rerun would not redo it (left behind: {left})")
        kills.append((rule, job["jobid"], round(job["after"], 1), left))
    run_snakemake(workdir, "--rerun-incomplete")
    elapsed = time.monotonic() - t0
    assert planned(workdir) == {}, "the resumed run left work to do"
    tiny_run = request.getfixturevalue("tiny_run")   # the uninterrupted run (only needed now)
    compared = assert_same_outputs(tiny_run, workdir, names=("uninterrupted", "killed-and-resumed"))
    assert compared > 0
    print(f"killed at {kills}; resumed run complete in {elapsed:.0f} s; {compared} output files equal the "
          "uninterrupted run's by content")
