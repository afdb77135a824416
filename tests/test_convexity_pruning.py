"""Convexity-based pruning: the pruning and depth tables on fixed numbers, and fine-tuning through s3prl's runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from speechdissect.convexity_pruning import depth_table, load_runs, plot_depths, pruning_summary, pruning_table

T975_2 = 4.302652729911275  # t quantile, 2 degrees of freedom


def _runs(rows):
    out = []
    for task, variant, mode, scores, train, latency, params in rows:
        for seed, score in enumerate(scores):
            out.append({"task": task, "variant": variant, "mode": mode, "seed": seed, "score": score,
                        "train_seconds": train, "upstream_latency_ms": latency, "upstream_params": params,
                        "metric": "acc", "higher_is_better": True,
                        "layers_kept": 2 if variant.startswith("convex") else None})
    return pd.DataFrame(out)


RUNS = _runs([
    ("word", "original", "frozen", [0.80, 0.82, 0.84], 10.0, 200.0, 4_000_000),
    ("word", "convex-word", "frozen", [0.79, 0.81, 0.83], 8.0, 100.0, 2_500_000),
    ("word", "original", "finetuned", [0.90, 0.90, 0.90], 40.0, 200.0, 4_000_000),
    ("word", "convex-word", "finetuned", [0.91, 0.92, 0.93], 20.0, 100.0, 2_500_000),
    ("word", "layers-1", "frozen", [0.50, 0.52, 0.54], 6.0, 60.0, 1_750_000),
    ("word", "layers-3", "frozen", [0.85, 0.86, 0.87], 9.0, 150.0, 3_250_000),
    ("speaker_linear_utter", "original", "frozen", [0.6, 0.6], 5.0, 200.0, 4_000_000),  # no pruned run: no row
])
CONVEXITY = pd.DataFrame({"layer": [0, 1, 2, 3, 4] * 2, "property": ["word"] * 5 + ["speaker"] * 5,
                          "mean": [10, 30, 60, 50, 40, 5, 6, 7, 8, 9], "ci_half": [1.0] * 10})
TASKS = {"word": "word", "speaker_linear_utter": "speaker"}
BEST = {"word": 2, "speaker": 4}


def test_pruning_table_on_fixed_numbers():
    table = pruning_table(RUNS, TASKS, BEST, n_layers=4)
    assert list(table["mode"]) == ["frozen", "finetuned"] and set(table["task"]) == {"word"}
    frozen = table[table["mode"] == "frozen"].iloc[0]
    assert frozen["most_convex_layer"] == 2 and frozen["layers_kept"] == 2 and frozen["layers_total"] == 4
    assert frozen["full_mean"] == pytest.approx(0.82) and frozen["pruned_mean"] == pytest.approx(0.81)
    assert frozen["full_ci_half"] == pytest.approx(T975_2 * 0.02 / math.sqrt(3))
    assert frozen["accuracy_change_points"] == pytest.approx(-1.0)
    assert frozen["accuracy_change_pct"] == pytest.approx(-100 * 0.01 / 0.82)
    assert frozen["params_change_pct"] == pytest.approx(-37.5)
    assert frozen["train_time_change_pct"] == pytest.approx(-20.0)
    assert frozen["latency_change_pct"] == pytest.approx(-50.0)
    ft = table[table["mode"] == "finetuned"].iloc[0]
    assert ft["accuracy_change_points"] == pytest.approx(2.0) and ft["train_time_change_pct"] == pytest.approx(-50.0)
    assert ft["full_ci_half"] == pytest.approx(0.0)  # three equal scores
    assert ft["n_seeds"] == 3


def test_depth_table_checks_the_convex_cut():
    d = depth_table(RUNS, CONVEXITY, TASKS, BEST, n_layers=4)
    assert list(d["depth"]) == [1, 2, 3, 4]  # layers-1, the convex cut (stands in for the absent layers-2), layers-3, original
    assert list(d["variant"]) == ["layers-1", "convex-word", "layers-3", "original"]
    d = depth_table(pd.concat([RUNS, _runs([("word", "layers-2", "frozen", [0.79, 0.81, 0.83], 8.0, 100.0, 2_500_000)])]),
                    CONVEXITY, TASKS, BEST, n_layers=4)
    assert list(d["depth"]) == [1, 2, 3, 4] and list(d["variant"]) == ["layers-1", "layers-2", "layers-3", "original"]
    assert list(d["convexity"]) == [30, 60, 50, 40]  # hidden state N closes a depth-N model
    assert list(d["is_convex_cut"]) == [False, True, False, False]
    assert (d["best_depth"] == 3).all() and not d["convex_cut_is_best"].any()
    # best: 0.86 +- t*0.01/sqrt(3) = 0.0248; the cut's 0.81 lies outside it
    assert not d["convex_cut_within_ci"].any()
    # accuracies 0.52, 0.81, 0.86, 0.82 vs convexity 30, 60, 50, 40: ranks (1,2,4,3) vs (1,4,3,2), sum d^2 = 6
    assert d["spearman"].iloc[0] == pytest.approx(1 - 6 * 6 / (4 * 15))
    summary = pruning_summary(pruning_table(RUNS, TASKS, BEST, 4), d)
    assert summary["tasks"]["word"]["depths"] == {"best_depth": 3, "convex_cut_is_best": False,
                                                  "convex_cut_within_ci": False, "spearman_accuracy_convexity": pytest.approx(0.4)}
    assert summary["tasks"]["word"]["frozen"]["latency_change_pct"] == pytest.approx(-50.0)
    json.dumps(summary)  # JSON-ready


def test_depth_table_lower_is_better_and_empty():
    per = RUNS.assign(higher_is_better=False)
    d = depth_table(per, CONVEXITY, TASKS, BEST, n_layers=4)
    assert (d["best_depth"] == 1).all()  # lowest score wins for an error rate
    assert depth_table(RUNS[RUNS["task"] == "nothing"], CONVEXITY, TASKS, BEST, 4).empty


def test_load_runs_reads_results_json(tmp_path):
    doc = {"variant_spec": {"variant": "convex-word", "applied": "layers-2"},
           "runs": [{"task": "word", "variant": "convex-word", "seed": s, "score": 0.5 + s / 10, "train_seconds": 3.0,
                     "upstream_latency_ms": 12.0, "upstream_params": 100, "metric": "acc", "higher_is_better": True}
                    for s in (0, 1)]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    runs = load_runs([path], "finetuned")
    assert list(runs["seed"]) == [0, 1] and (runs["mode"] == "finetuned").all() and (runs["layers_kept"] == 2).all()
    with pytest.raises(ValueError, match="mode must be"):
        load_runs([path], "tuned")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        load_runs([tmp_path / "bad.json"], "frozen")


def test_plot_depths_writes_a_figure(tmp_path):
    from speechdissect.plots import save_figure

    d = depth_table(RUNS, CONVEXITY, TASKS, BEST, n_layers=4)
    save_figure(plot_depths(d, title="x"), tmp_path / "f.png", tmp_path / "f.svg")
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f.svg").stat().st_size > 1000
    save_figure(plot_depths(pd.DataFrame()), tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


# --------------------------------------------------------------------------- fine-tuning through s3prl


def test_upstream_lr_gets_its_own_optimizer_group():
    import torch

    from speechdissect.downstream.runner import _split_upstream_group

    up, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(list(head.parameters()) + list(up.parameters()), lr=1e-2, betas=(0.8, 0.9))
    _split_upstream_group(opt, up, 1e-4)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-4]
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert all(g["betas"] == (0.8, 0.9) for g in opt.param_groups)
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in up.parameters()}


def test_upstream_lr_needs_finetune(tmp_path):
    from speechdissect.downstream.runner import run_task

    with pytest.raises(ValueError, match="upstream_lr needs finetune"):
        run_task("phone_linear", "hubert_local", None, {"libri_root": str(tmp_path), "phone_path": str(tmp_path),
                                                        "bucket_file": str(tmp_path)}, tmp_path / "x", upstream_lr=1e-4)


@pytest.mark.slow
def test_finetuned_run_through_s3prl_trains_the_upstream(tmp_path):
    """s3prl's runner with -f: the upstream's weights change, with their own learning rate, nothing cached."""
    import torch
    from test_downstream import build_corpus, save_tiny_hubert

    from speechdissect.downstream import tasks as T
    from speechdissect.downstream.runner import run_task

    tiny = build_corpus(tmp_path / "corpus")
    ckpt = save_tiny_hubert(tmp_path / "tiny_hubert.pt")
    data = T.prepare_task_data("speaker_linear_utter", tiny["corpus"], tmp_path / "data", phone_dir=tiny["phone_dir"],
                               labels_dir=tiny["labels_dir"], seed=0)
    r = run_task("speaker_linear_utter", "hubert_local", ckpt, data, tmp_path / "ft", seed=0, steps=4, latency_runs=1,
                 finetune=True, upstream_lr=1e-4, keep_checkpoints=True)
    assert r["finetune"] is True and r["upstream_lr"] == pytest.approx(1e-4) and r["lr"] == pytest.approx(1e-2)
    assert r["upstream_trainable_params"] == r["upstream_params"] > 10_000
    assert r["trainable_params"] == r["downstream_params"] + r["featurizer_params"] + r["upstream_params"]
    assert r["feature_cache"] is None  # a trained upstream's outputs are never remembered
    assert 0.0 <= r["score"] <= 1.0 and r["steps"] == 4 and r["train_seconds"] > 0
    state = torch.load(tmp_path / "ft" / "states-4.ckpt", map_location="cpu", weights_only=False)
    assert [g["lr"] for g in state["Optimizer"]["param_groups"]] == [1e-2, 1e-4]
    base = torch.load(ckpt, map_location="cpu", weights_only=False)["model_weight"]
    tuned = state["Upstream"]  # s3prl saves the upstream only when it is trainable
    changed = [k for k, v in base.items() if not torch.equal(tuned[f"model.{k}"], v)]
    assert any(k.startswith("encoder.layers.0.") for k in changed) and any(k.startswith("encoder.layers.1.") for k in changed)
    # s3prl's HuBERT expert freezes the CNN front-end (feature_grad_mult = 0); pretraining-only heads get no gradient
    assert not any(k.startswith(("feature_extractor", "final_proj", "label_embs", "mask_emb")) for k in changed)
    assert r["upstream_updated_params"] == sum(base[k].numel() for k in changed) < r["upstream_trainable_params"]
    # Adam moves each updated weight by at most ~lr per step
    step = max((tuned[f"model.{k}"] - base[k]).abs().max().item() for k in changed)
    assert 0 < step <= 4 * 1e-4 * 1.01
    assert "own optimizer group, lr 0.0001" in (tmp_path / "ft" / "run_downstream.log").read_text()
    assert np.isfinite(r["upstream_latency_ms"])


def test_paired_latencies_replace_the_per_job_ones():
    latency = {"original": 80.0, "convex-word": 20.0, "layers-1": 10.0}
    table = pruning_table(RUNS, TASKS, BEST, n_layers=4, latency=latency).set_index("mode")
    for mode in ("frozen", "finetuned"):
        assert table.loc[mode, "latency_source"] == "paired"
        assert table.loc[mode, ["full_latency_ms", "pruned_latency_ms"]].tolist() == [80.0, 20.0]
        assert table.loc[mode, "latency_change_pct"] == pytest.approx(-75.0)
    per_job = pruning_table(RUNS, TASKS, BEST, n_layers=4).set_index("mode")
    assert per_job.loc["frozen", "latency_source"] == "per_job"
    assert per_job.loc["frozen", "latency_change_pct"] == pytest.approx(-50.0)
    depths = depth_table(RUNS, CONVEXITY, TASKS, BEST, 4, latency=latency).set_index("depth")
    assert depths.loc[1, "upstream_latency_ms"] == 10.0
    assert depths.loc[3, "upstream_latency_ms"] == 150.0   # not measured side by side: the job's own


def test_paired_latency_times_each_model_on_the_same_input():
    import torch

    from speechdissect.upstreams.registry import paired_latency

    class Stack(torch.nn.Module):
        """An upstream-like model: (wavs [B, N], lens) -> hidden states; cost grows with depth."""

        def __init__(self, depth):
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(400, 400) for _ in range(depth))
            self.seen = []

        def forward(self, wavs, lens):
            self.seen.append(wavs.clone())
            x = wavs.view(-1, 400)
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return [x], lens

    shallow, deep = Stack(1), Stack(40)
    ms = paired_latency({"shallow": shallow, "deep": deep}, seconds=1.0, rounds=5, seed=3)
    assert set(ms) == {"shallow", "deep"} and all(v > 0 for v in ms.values())
    assert ms["deep"] > ms["shallow"]
    assert len(shallow.seen) == len(deep.seen) == 6   # one warm-up + 5 timed rounds each
    assert all(torch.equal(a, b) for a, b in zip(shallow.seen[1:], deep.seen[1:]))   # same input in each round
    assert paired_latency({}) == {}
