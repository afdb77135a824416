"""Shared fixtures: the repository root and a runner for the workflow on the tiny config."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "workflow" / "tiny_config.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def run_snakemake(workdir: Path, *args: str, config: Path = TINY_CONFIG, check: bool = True,
                  timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with ``config``; output captured as text."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
           "--cores", "2", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n"
                             f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-12000:]}")
    return proc


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
