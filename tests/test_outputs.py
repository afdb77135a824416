"""The run comparison (tests/outputs.py) itself: on small fabricated run directories it finds
every changed result (a speaker score, a cache value, a checkpoint tensor, a text file, a
logged probe scalar) and lets only the run records and the fields named as timing differ."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboardX import SummaryWriter

from tests.outputs import TIMING_FIELDS, assert_same_outputs, kind_of, output_files


def fabricate_run(root: Path) -> Path:
    """A run directory with one file of every kind the workflow writes, paths inside naming ``root``."""
    res = root / "results"
    ds = res / "downstream"
    ds.mkdir(parents=True)
    pd.DataFrame({"variant": ["original", "heads-random_0.5"], "task": ["speaker_linear_utter"] * 2,
                  "mean": [0.625, 0.5], "speaker_acc": [0.625, 0.5], "duration": [2.5, 3.0],
                  "wall_seconds": [12.5, 13.0], "upstream_latency_ms": [3.2, 2.9]}
                 ).to_csv(ds / "speaker_linear_utter.tsv", sep="\t", index=False)
    labels = res / "synthetic" / "labels"
    labels.mkdir(parents=True)
    pd.DataFrame({"utterance": ["a", "a", "b"], "frame": [0, 1, 0], "speaker": ["101", "101", "102"],
                  "f0": [120.0, np.nan, 210.5]}).to_parquet(labels / "dev.parquet")
    exp = res / "mini_hubert" / "downstream" / "speaker_linear_utter" / "original" / "seed0"
    exp.mkdir(parents=True)
    (exp / "result.json").write_text(json.dumps({
        "score": 0.625, "score_by_speaker": {"101": 0.5, "102": 0.75}, "upstream_updated_params": 1200,
        "wall_seconds": 3.5, "upstream_latency_runs_ms": [3.1, 3.3], "created": "2026-01-01T00:00:00",
        "expdir": str(exp), "history": {"dev": [[10, 0.5], [20, 0.625]]}}))
    (exp / "args_2026-01-01-00-00-00.yaml").write_text(f"expdir: {exp}\nseed: 0\n")
    (exp / "log.log").write_text("best|speaker/test-|step:20|acc:0.625\n")
    (exp / "run_downstream.log").write_text("100%|#####| 20/20 [00:03<00:00, 6.1it/s]\n")   # a run record
    with SummaryWriter(str(exp)) as w:
        for step, value in ((10, 0.5), (20, 0.625)):
            w.add_scalar("speaker/test-acc", value, step)
    cache = res / "mini_hubert" / "synthetic" / "cache" / "dev"
    cache.mkdir(parents=True)
    np.save(cache / "hidden_00.npy", np.arange(12, dtype=np.float16).reshape(4, 3))
    np.savez(cache / "attention.npz", utt_a=np.eye(3, dtype=np.float32), utt_b=np.ones((2, 2), np.float32))
    split = res / "synthetic" / "downstream_data" / "speaker_linear_utter"
    split.mkdir(parents=True)
    (split / "test_split.txt").write_text("101-1010-0001\n102-1020-0003\n")
    up = root / "resources" / "upstreams"
    up.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"model_weight": {"encoder.layers.0.fc1.weight": torch.randn(4, 3), "label_embs_concat": torch.zeros(2, 3)},
                "model_cfg": {"encoder_layers": 1}, "source": str(up / "base.ckpt")}, up / "mini_hubert.ckpt")
    (res / "logs").mkdir()
    (res / "logs" / "x.log").write_text("started 12:00\n")
    return root


@pytest.fixture
def runs(tmp_path):
    first = fabricate_run(tmp_path / "first")
    second = tmp_path / "second"
    shutil.copytree(first, second)
    # what a second run writes differently without computing anything differently: its own
    # directory in paths, the s3prl file names with the date/epoch, timings, run records
    for p in second.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".yaml", ".tsv"):
            p.write_text(p.read_text().replace(str(first), str(second)))
    exp = second / "results/mini_hubert/downstream/speaker_linear_utter/original/seed0"
    (exp / "args_2026-01-01-00-00-00.yaml").rename(exp / "args_2026-02-02-11-11-11.yaml")
    for ev in exp.glob("events.out.tfevents.*"):
        ev.unlink()
    with SummaryWriter(str(exp)) as w:   # the same scalars, written at other wall-clock times
        for step, value in ((10, 0.5), (20, 0.625)):
            w.add_scalar("speaker/test-acc", value, step)
    doc = json.loads((exp / "result.json").read_text())
    doc.update(wall_seconds=9.0, upstream_latency_runs_ms=[5.0], created="2026-02-02T11:11:11")
    (exp / "result.json").write_text(json.dumps(doc))
    (exp / "run_downstream.log").write_text("100%|#####| 20/20 [00:09<00:00, 2.2it/s]\n")
    (second / "results" / "logs" / "x.log").write_text("started 13:00\n")
    table = second / "results/downstream/speaker_linear_utter.tsv"
    t = pd.read_csv(table, sep="\t")
    t["wall_seconds"] += 1.0
    t["upstream_latency_ms"] *= 2
    t.to_csv(table, sep="\t", index=False)
    torch.save({**torch.load(second / "resources/upstreams/mini_hubert.ckpt", weights_only=True),
                "source": str(second / "resources/upstreams/base.ckpt")}, second / "resources/upstreams/mini_hubert.ckpt")
    return first, second


def test_every_kind_of_output_is_compared(runs):
    first, _ = runs
    kinds = {rel: kind_of(p) for rel, p in output_files(first).items()}
    assert set(kinds.values()) == {"table", "values", "array", "checkpoint", "tfevents", "bytes"}
    assert not any("logs/" in rel or rel.endswith("run_downstream.log") for rel in kinds)


def test_runs_differing_only_in_timing_paths_and_records_compare_equal(runs):
    first, second = runs
    assert assert_same_outputs(first, second) == len(output_files(first))


def _edit_table(path: Path, column: str, row: int, value) -> None:
    t = pd.read_csv(path, sep="\t")
    t.loc[row, column] = value
    t.to_csv(path, sep="\t", index=False)


@pytest.mark.parametrize("column", ["mean", "speaker_acc", "duration"])
def test_a_changed_speaker_score_is_caught(runs, column):
    """``speaker_acc`` and ``duration`` were exempt as "timing" under the former unanchored patterns (peak, time)."""
    first, second = runs
    _edit_table(second / "results/downstream/speaker_linear_utter.tsv", column, 1, 0.75)
    with pytest.raises(AssertionError, match=rf"speaker_linear_utter\.tsv: column '{column}' differs in 1 of 2 rows"):
        assert_same_outputs(first, second)


@pytest.mark.parametrize("key, value", [("score", 0.5), ("upstream_updated_params", 1201)])
def test_a_changed_json_value_is_caught(runs, key, value):
    """``upstream_updated_params`` was exempt under the former pattern ``date``."""
    first, second = runs
    path = second / "results/mini_hubert/downstream/speaker_linear_utter/original/seed0/result.json"
    doc = json.loads(path.read_text())
    doc[key] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(AssertionError, match=rf"result\.json\.{key}: "):
        assert_same_outputs(first, second)


def test_a_changed_per_speaker_score_in_json_is_caught(runs):
    first, second = runs
    path = second / "results/mini_hubert/downstream/speaker_linear_utter/original/seed0/result.json"
    doc = json.loads(path.read_text())
    doc["score_by_speaker"]["102"] = 0.5
    path.write_text(json.dumps(doc))
    with pytest.raises(AssertionError, match=r"score_by_speaker\.102: 0\.75 != 0\.5"):
        assert_same_outputs(first, second)


def test_a_changed_cache_value_is_caught(runs):
    first, second = runs
    path = second / "results/mini_hubert/synthetic/cache/dev/hidden_00.npy"
    x = np.load(path)
    x[2, 1] = np.nextafter(x[2, 1], np.float16(100))   # one float16 step: exactly compared
    np.save(path, x)
    with pytest.raises(AssertionError, match=r"hidden_00\.npy: 1 of 12 elements differ, first at \(2, 1\)"):
        assert_same_outputs(first, second)


def test_a_changed_array_in_an_npz_is_caught(runs):
    first, second = runs
    path = second / "results/mini_hubert/synthetic/cache/dev/attention.npz"
    np.savez(path, utt_a=np.eye(3, dtype=np.float32), utt_b=np.full((2, 2), 0.5, np.float32))
    with pytest.raises(AssertionError, match=r"attention\.npz\[utt_b\]: 4 of 4 elements differ"):
        assert_same_outputs(first, second)


def test_a_changed_checkpoint_tensor_is_caught(runs):
    first, second = runs
    path = second / "resources/upstreams/mini_hubert.ckpt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_weight"]["encoder.layers.0.fc1.weight"][3, 0] += 1e-3
    torch.save(ckpt, path)
    with pytest.raises(AssertionError, match=r"mini_hubert\.ckpt\.model_weight\.encoder\.layers\.0\.fc1\.weight: "
                                             r"1 of 12 elements differ, first at \(3, 0\)"):
        assert_same_outputs(first, second)


def test_a_checkpoint_that_needs_pickle_is_refused(runs):
    first, second = runs
    # an argparse.Namespace, as in fairseq checkpoints: loadable only by unpickling arbitrary classes
    torch.save({"model_weight": {}, "args": argparse.Namespace(lr=1.0)}, second / "resources/upstreams/mini_hubert.ckpt")
    with pytest.raises(AssertionError, match=r"mini_hubert\.ckpt: not loadable with torch\.load\(weights_only=True\)"):
        assert_same_outputs(first, second)


@pytest.mark.parametrize("rel, text", [
    ("results/synthetic/downstream_data/speaker_linear_utter/test_split.txt", "101-1010-0001\n102-1020-0004\n"),
    ("results/mini_hubert/downstream/speaker_linear_utter/original/seed0/log.log", "best|speaker/test-|step:20|acc:0.5\n"),
])
def test_a_changed_text_file_is_caught(runs, rel, text):
    first, second = runs
    (second / rel).write_text(text)
    with pytest.raises(AssertionError, match=rf"{Path(rel).name}: bytes differ"):
        assert_same_outputs(first, second)


def test_a_changed_yaml_value_is_caught(runs):
    first, second = runs
    path = next((second / "results/mini_hubert/downstream/speaker_linear_utter/original/seed0").glob("args_*.yaml"))
    path.write_text(path.read_text().replace("seed: 0", "seed: 1"))
    with pytest.raises(AssertionError, match=r"args_2026-01-01-00-00-00\.yaml\.seed: 0 != 1"):
        assert_same_outputs(first, second)


def test_a_changed_logged_scalar_is_caught(runs):
    first, second = runs
    exp = second / "results/mini_hubert/downstream/speaker_linear_utter/original/seed0"
    for ev in exp.glob("events.out.tfevents.*"):
        ev.unlink()
    with SummaryWriter(str(exp)) as w:
        for step, value in ((10, 0.5), (20, 0.5)):
            w.add_scalar("speaker/test-acc", value, step)
    with pytest.raises(AssertionError, match=r"\(scalars\)\.speaker/test-acc\[1\]\[1\]: 0\.625 != 0\.5"):
        assert_same_outputs(first, second)


def test_a_missing_or_extra_file_is_caught(runs):
    first, second = runs
    (second / "results/mini_hubert/synthetic/cache/dev/hidden_01.npy").write_bytes(b"")
    with pytest.raises(AssertionError, match=r"only second \['results/mini_hubert/synthetic/cache/dev/hidden_01\.npy'\]"):
        assert_same_outputs(first, second)


def test_timing_fields_are_exact_names():
    """No pattern: names that merely contain a timing word are compared."""
    assert {"wall_seconds", "upstream_latency_ms", "created"} <= TIMING_FIELDS
    assert not {"speaker", "upstream_updated_params", "duration", "batch_seconds", "score"} & TIMING_FIELDS
