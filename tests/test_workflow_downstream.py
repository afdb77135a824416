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
    ffn = json.loads((variants / "ffn-norm_0.5.json").read_text())
    assert ffn["parameters"]["stored"] == ffn["base_parameters"]["stored"]
    assert ffn["parameters"]["effective"] < ffn["base_parameters"]["effective"]
    convex = json.loads((variants / "convex-phone.json").read_text())
    assert convex["applied"].startswith("layers-")


@pytest.mark.parametrize("task, variants", [
    ("phone_linear", {"original", "ffn-norm_0.5", "convex-phone", "layers-1"}),
    ("gender", {"original", "edit-remove_gender"}),
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
