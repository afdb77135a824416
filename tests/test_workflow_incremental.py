"""Incremental re-runs: a changed parameter reruns exactly the jobs downstream of it, nothing upstream.

Each case writes a modified copy of the tiny config, asks Snakemake for a dry run in a
completed tiny run, and compares the planned jobs (rule -> count) with the expected set.
"""
import re
import shutil

import pytest
import yaml

from tests.conftest import TINY_CONFIG, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

UPSTREAM_RULES = {"synthesize_corpus", "ingest_alignments", "extract_f0", "extract_pitch", "s3prl_phone_files",
                  "pretrain_upstream", "finetune_upstream", "cache_activations", "downstream_data"}


def planned_jobs(workdir, config_path) -> dict[str, int]:
    """Rule -> number of jobs of a dry run (empty when nothing is to be done)."""
    proc = run_snakemake(workdir, "--dry-run", "--quiet", "rules", config=config_path)
    text = proc.stdout + proc.stderr
    jobs = {}
    block = re.search(r"Job stats:\n(.*?)\n\s*\n", text + "\n\n", re.S)
    if not block:
        assert "Nothing to be done" in text or "nothing to be done" in text.lower(), text[-3000:]
        return jobs
    for line in block.group(1).splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def modified_config(tmp_path, change) -> str:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    change(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_nothing_to_do_after_a_complete_run(tiny_run):
    assert planned_jobs(tiny_run, TINY_CONFIG) == {}


def test_property_neuron_threshold_reruns_only_the_neuron_branch(tiny_run, tmp_path):
    cfg = modified_config(tmp_path, lambda c: c["neurons"].update(sigma=0.35))
    jobs = planned_jobs(tiny_run, cfg)
    assert not set(jobs) & UPSTREAM_RULES, jobs
    assert jobs == {
        "property_neurons": 1, "neuron_geometry": 1, "neuron_figures": 1, "neuron_mds_figure": 3, "neuron_masks": 1,
        "neuron_models_figure": 1, "neuron_editing_summary": 1,  # models side by side; editing / pruning summary
        "make_variant": 3, "s3prl_downstream": 3, "downstream_summary": 2, "provenance": 1, "all": 1,  # + edit-random_gender
        "findings": 1,  # reads counts, overlaps, geometry and the editing table
    }


def test_adding_a_task_runs_only_the_new_branch(tiny_run, tmp_path):
    cfg = modified_config(tmp_path, lambda c: c["downstream"]["tasks"].append("word"))
    assert planned_jobs(tiny_run, cfg) == {
        "downstream_data": 1, "s3prl_downstream": 1, "downstream_summary": 1, "provenance": 1, "all": 1,
        "findings": 1,  # the new task's table is one of its inputs
    }


def test_convexity_neighbours_rerun_keeps_untouched_outputs(tiny_run, tmp_path):
    cfg = modified_config(tmp_path, lambda c: c["convexity"].update(n_neighbors=4))
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    jobs = planned_jobs(workdir, cfg)
    assert jobs == {
        "layer_convexity": 1, "convexity_figure": 1, "make_variant": 1, "s3prl_downstream": 1,
        "downstream_summary": 1, "provenance": 1, "all": 1,
        # the convex-phone cut feeds the fine-tuned comparison and the pruning table too
        "s3prl_finetune": 1, "convexity_pruning": 1,
        "findings": 1,  # reads the convexity summary and pruning table
    }
    untouched = [workdir / p for p in (
        "resources/upstreams/mini_hubert.ckpt", "results/synthetic/labels/test.parquet",
        "results/mini_hubert/synthetic/cache/dev/meta.json", "results/mini_hubert/synthetic/neurons/property_neurons.json",
        "results/mini_hubert/downstream/phone_linear/original/results.json")]
    before = {p: p.stat().st_mtime_ns for p in untouched}
    convexity = workdir / "results/mini_hubert/synthetic/convexity/scores.tsv"
    old = convexity.stat().st_mtime_ns
    run_snakemake(workdir, config=cfg)
    assert {p: p.stat().st_mtime_ns for p in untouched} == before
    assert convexity.stat().st_mtime_ns > old
    assert planned_jobs(workdir, cfg) == {}
