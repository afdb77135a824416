"""Every test has a time limit: pyproject's default, larger ones for the workflow tests, and the
Snakemake calls inside them stop before the test does (and take their jobs with them)."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import TINY_RUN_TIMEOUT, WORKFLOW_TEST_TIMEOUT, run_snakemake


def _timeout_of(func) -> float:
    marks = [m for m in getattr(func, "pytestmark", []) if m.name == "timeout"]
    assert marks, f"{func.__name__} has no @pytest.mark.timeout"
    return float(marks[0].args[0])


def test_default_timeout_is_configured(request):
    assert request.config.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed (pip install -e .[test])"
    assert float(request.config.getini("timeout")) == 900


class _Item:
    """The part of a pytest item the collection hook uses."""

    def __init__(self, *marks):
        self.marks = list(marks)

    def get_closest_marker(self, name):
        return next((m for m in self.marks if m.name == name), None)

    def add_marker(self, mark):
        self.marks.append(mark.mark if hasattr(mark, "mark") else mark)


def test_workflow_tests_get_a_limit_above_one_tiny_run():
    """The conftest hook gives every `workflow` test WORKFLOW_TEST_TIMEOUT unless it sets its own."""
    from tests.conftest import pytest_collection_modifyitems

    assert TINY_RUN_TIMEOUT < WORKFLOW_TEST_TIMEOUT
    plain, workflow, own = _Item(), _Item(pytest.mark.workflow.mark), _Item(pytest.mark.workflow.mark, pytest.mark.timeout(9999).mark)
    pytest_collection_modifyitems(None, [plain, workflow, own])
    assert plain.get_closest_marker("timeout") is None   # pyproject's default applies
    assert workflow.get_closest_marker("timeout").args == (WORKFLOW_TEST_TIMEOUT,)
    assert own.get_closest_marker("timeout").args == (9999,)


def test_tests_with_runs_of_their_own_have_room_for_them():
    from tests import test_determinism, test_kill_resume, test_slurm

    for func in (test_determinism.test_two_clean_runs_give_identical_tables,
                 test_kill_resume.test_kill_9_during_training_caching_and_downstream_then_rerun,
                 test_slurm.test_tiny_workflow_on_slurm_matches_local_run):
        assert _timeout_of(func) >= TINY_RUN_TIMEOUT + WORKFLOW_TEST_TIMEOUT, func.__name__


def test_a_hanging_test_is_stopped(tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n    time.sleep(60)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-o", "timeout=2", str(tmp_path / "test_hang.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "Timeout" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert time.monotonic() - t0 < 50


def test_a_snakemake_call_that_times_out_is_killed_with_its_jobs(tmp_path):
    with pytest.raises(AssertionError, match=r"snakemake timed out after 1 s"):
        run_snakemake(tmp_path, "--dry-run", timeout=1)   # Snakemake alone needs more than 1 s to start
    time.sleep(0.5)
    left = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(tmp_path) in " ".join(p.info["cmdline"] or []):
                left.append(p.pid)
        except psutil.Error:
            pass
    assert not left, f"processes of the timed-out Snakemake call still running: {left}"
