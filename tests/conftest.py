"""Shared fixtures: the repository root, a runner for the workflow on the tiny config, the time limits."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "workflow" / "tiny_config.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# Time limits, in seconds. One run of the whole tiny workflow takes 3-15 min on 2 busy cores;
# a Snakemake call is stopped after TINY_RUN_TIMEOUT, before the test around it (the default
# per-test limit is pyproject's `timeout`, 900 s). A test that builds the shared `tiny_run`
# (the first workflow test of a session) pays for it, so every `workflow` test gets
# WORKFLOW_TEST_TIMEOUT unless it sets a larger one; tests that make runs of their own add
# TINY_RUN_TIMEOUT per run (see tests/test_determinism.py, test_kill_resume.py, test_slurm.py).
TINY_RUN_TIMEOUT = 1800
WORKFLOW_TEST_TIMEOUT = TINY_RUN_TIMEOUT + 300


def pytest_collection_modifyitems(config, items):
    """Every ``workflow`` test without its own ``timeout`` mark gets WORKFLOW_TEST_TIMEOUT."""
    for item in items:
        if item.get_closest_marker("workflow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(WORKFLOW_TEST_TIMEOUT))


def run_snakemake(workdir: Path, *args: str, config: Path = TINY_CONFIG, check: bool = True,
                  timeout: float = TINY_RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with ``config``; output captured as text.

    Snakemake runs in a session of its own; on a timeout (or the test's own timeout, or
    Ctrl-C) it is killed together with the jobs it started, so nothing keeps running.
    """
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
           "--cores", "2", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_session(proc)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"snakemake timed out after {timeout:.0f} s: {' '.join(cmd)}\n"
                             f"--- stdout\n{(stdout or '')[-6000:]}\n--- stderr\n{(stderr or '')[-12000:]}") from exc
    except BaseException:
        _kill_session(proc)
        proc.communicate()
        raise
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}): {' '.join(cmd)}\n"
                             f"--- stdout\n{stdout[-6000:]}\n--- stderr\n{stderr[-12000:]}")
    return result


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL to ``proc``'s session and to every process under it (Snakemake and its jobs, all started here)."""
    import psutil

    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        procs = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A complete run of the whole workflow on the tiny config, shared by the workflow tests.

    ``SPEECHDISSECT_TINY_RUN=DIR`` uses (and completes, if needed) the run in DIR instead of
    a fresh one: for re-running single workflow tests during development. Tests must not
    modify it.
    """
    reuse = os.environ.get("SPEECHDISSECT_TINY_RUN")
    workdir = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny_run")
    workdir.mkdir(parents=True, exist_ok=True)
    run_snakemake(workdir)
    return workdir
