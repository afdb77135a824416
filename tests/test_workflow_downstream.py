"""Workflow test: convexity, variants and s3prl downstream outputs of the tiny run."""
import json

import pandas as pd
import pytest

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def test_layer_convexity(tiny_run):
    base = tiny_run / "results/mini_hubert/synthetic/convexity"
    scores = pd.read_csv(base / "scores.tsv", sep="\t")
    assert set(scores["property"]) == {"phone", "word", "speaker"}
    assert set(scores["layer"]) == {0, 1, 2}  # hidden states of a 2-layer model
    valid = scores["score"].dropna()
    assert len(valid) and valid.between(0, 100).all()
    summary = pd.read_csv(base / "summary.tsv", sep="\t")
    phone = summary[summary["property"] == "phone"]
    assert (phone["ci_low"] <= phone["mean"]).all() and (phone["mean"] <= phone["ci_high"]).all()
    best = json.loads((base / "best_layers.json").read_text())["most_convex_layer"]
    assert best["phone"] == int(phone.loc[phone["mean"].idxmax(), "layer"])
    assert (tiny_run / "results/convexity/synthetic/convexity_layers.png").stat().st_size > 0


def test_variants_are_smaller_or_masked(tiny_run):
    variants = tiny_run / "results/mini_hubert/variants"
    depth = json.loads((variants / "layers-1.json").read_text())
    assert depth["parameters"]["stored"] < depth["base_parameters"]["stored"]
    ffn = json.loads((variants / "ffn-norm_0.5.json").read_text())  # physically pruned: half of every layer's 256 neurons sliced out
    assert ffn["parameters"]["stored"] == ffn["parameters"]["effective"] < ffn["base_parameters"]["stored"]
    assert (ffn["ffn_pruning"]["d_ffn"], ffn["ffn_pruning"]["width"]) == (256, 128)
    edit = json.loads((variants / "edit-random_gender.json").read_text())  # editing: zeroed, same shapes
    assert edit["parameters"]["stored"] == edit["base_parameters"]["stored"] and edit["ffn_pruning"] is None
    convex = json.loads((variants / "convex-phone.json").read_text())
    assert convex["applied"].startswith("layers-")


@pytest.mark.parametrize("task, variants", [
    ("phone_linear", {"original", "ffn-norm_0.5", "convex-phone", "layers-1", "heads-globalness_0.5", "heads-random_0.5"}),
    ("gender", {"original", "edit-remove_gender", "edit-random_gender"}),
])
def test_downstream_tables(tiny_run, task, variants):
    table = pd.read_csv(tiny_run / f"results/downstream/{task}.tsv", sep="\t")
    assert set(table["variant"]) == variants
    assert (table["n"] == 2).all()  # two seeds in the tiny config
    assert table["mean"].between(0, 1).all()
    assert (table["upstream_params"] > 0).all() and (table["trainable_params"] > 0).all()
    for variant in variants:
        doc = json.loads((tiny_run / f"results/mini_hubert/downstream/{task}/{variant}/results.json").read_text())
        assert [r["seed"] for r in doc["runs"]] == [0, 1]
        assert all(r["steps"] > 0 and r["wall_seconds"] > 0 for r in doc["runs"])


def test_convexity_pruning_table(tiny_run):
    """Fine-tuned full and pruned models (s3prl -f) and the pruning / depth tables of the tiny run."""
    for variant in ("original", "convex-phone"):
        doc = json.loads((tiny_run / f"results/mini_hubert/downstream_ft/phone_linear/{variant}/results.json").read_text())
        assert [r["seed"] for r in doc["runs"]] == [0, 1]
        assert all(r["finetune"] and r["steps"] == 4 and r["upstream_updated_params"] > 0 for r in doc["runs"])
        assert all(r["trainable_params"] > r["upstream_updated_params"] for r in doc["runs"])
    base = tiny_run / "results/mini_hubert/synthetic/convexity"
    table = pd.read_csv(base / "pruning.tsv", sep="\t")
    assert list(table["mode"]) == ["frozen", "finetuned"] and (table["task"] == "phone_linear").all()
    best = json.loads((base / "best_layers.json").read_text())["most_convex_layer"]["phone"]
    assert (table["most_convex_layer"] == best).all() and (table["layers_kept"] == max(1, best)).all()
    assert (table["layers_total"] == 2).all() and table[["full_mean", "pruned_mean"]].stack().between(0, 1).all()
    if max(1, best) < 2:  # a truly smaller model
        assert (table["params_change_pct"] < 0).all()
    depths = pd.read_csv(base / "pruning_depths.tsv", sep="\t")
    assert list(depths["depth"]) == [1, 2] and depths["is_convex_cut"].sum() == 1
    assert depths["convexity"].between(0, 100).all()
    summary = json.loads((base / "pruning.json").read_text())
    assert set(summary["tasks"]["phone_linear"]) >= {"frozen", "finetuned", "depths"}
    assert (base / "pruning_depths.png").stat().st_size > 0
