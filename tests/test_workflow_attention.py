"""Workflow test: the attention stage (rules/attention.smk) on the tiny config, every output checked.

The tiny model is barely trained, so only ranges, shapes and consistency with
the library are checked here, not the values the paper reports.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from speechdissect.attention import CATEGORIES, CMU39, RANKINGS, mfcc_features, n_removed, reference_boundaries, score
from speechdissect.cache import ActivationCache, load_wav
from speechdissect.labels import audio_path

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "tests" / "workflow" / "tiny_config.yaml"

DEFAULT_RANKINGS = ["globalness", "verticality", "diagonality", "max_weight", "random"]
DEFAULT_FRACTIONS = [0.0, 0.25, 0.5, 0.75]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(TINY_CONFIG.read_text())


@pytest.fixture(scope="module")
def run(request, config):
    """(workdir, upstream, corpus) of the tiny run."""
    workdir = request.getfixturevalue("tiny_run")
    return workdir, config["analysis_upstreams"][0], config["analysis_corpus"]


def _att(run, name):
    workdir, upstream, corpus = run
    return workdir / "results" / upstream / corpus / "attention" / name


def _utterances(cache, config):
    """The cached attention subset the stage uses (attention.max_utterances caps it)."""
    cap = (config.get("attention") or {}).get("max_utterances")
    return list(cache.meta["attention_utterances"])[: cap or None]


def _cache(run, split):
    workdir, upstream, corpus = run
    return ActivationCache(workdir / "results" / upstream / corpus / "cache" / split)


def _figure(path):
    assert path.is_file() and path.stat().st_size > 1000, path
    if path.suffix == ".png":
        assert path.read_bytes()[:8] == PNG_MAGIC, path
    else:
        assert "<svg" in path.read_text()[:2000], path


def _figures(run, *stems):
    for stem in stems:
        for ext in ("png", "svg"):
            _figure(_att(run, f"{stem}.{ext}"))


@pytest.mark.workflow
@pytest.mark.slow
def test_attention_metrics(run, config):
    cache = _cache(run, "test")
    L, H = cache.n_layers, int(cache.meta["n_heads"])
    table = pd.read_csv(_att(run, "metrics.tsv"), sep="\t")
    assert list(table.columns) == ["layer", "head", "globalness", "verticality", "diagonality", "max_weight", "category"]
    assert len(table) == L * H
    assert sorted(zip(table["layer"], table["head"])) == [(l, h) for l in range(L) for h in range(H)]
    summary = json.loads(_att(run, "metrics.json").read_text())
    assert summary["utterances"] == _utterances(cache, config)
    log_t = math.log(max(summary["frames"].values()))
    eps = 1e-4
    assert table["globalness"].between(-eps, log_t + eps).all()
    assert table["verticality"].between(-log_t - eps, eps).all()
    assert table["diagonality"].between(-1.0, eps).all()
    assert table["max_weight"].between(0.0, 1.0 + eps).all()
    assert set(table["category"]) <= set(CATEGORIES)
    assert sum(summary["categories"].values()) == L * H
    for category, head in summary["top_heads"].items():
        assert category in CATEGORIES and 0 <= head["layer"] < L and 0 <= head["head"] < H
    assert summary["example_utterance"] in summary["utterances"]
    _figures(run, "metrics", "examples")


@pytest.mark.workflow
@pytest.mark.slow
def test_attention_segmentation(run, config):
    workdir, upstream, corpus = run
    test, dev = _cache(run, "test"), _cache(run, "dev")
    L, H = test.n_layers, int(test.meta["n_heads"])
    table = pd.read_csv(_att(run, "segmentation.tsv"), sep="\t")
    for col in ("feature", "layer", "head", "alpha", "beta", "precision", "recall", "f1", "hit_rate",
                "over_segmentation", "r_value", "tune_r_value", "best_in_layer"):
        assert col in table.columns, col
    kinds = table["feature"].value_counts().to_dict()
    assert kinds == {"mfcc": 1, "hidden": L + 1, "attention": L * H}
    assert np.isfinite(table["r_value"]).all() and np.isfinite(table["tune_r_value"]).all()
    assert (table["r_value"] <= 1.0).all() and (table["alpha"] > 0).all() and (table["beta"] > 0).all()
    for col in ("precision", "recall", "hit_rate"):
        assert table[col].between(0.0, 1.0).all(), col
    assert (table["over_segmentation"] >= -1.0).all()
    hidden = table[table["feature"] == "hidden"]
    assert sorted(hidden["layer"].astype(int)) == list(range(L + 1))
    att = table[table["feature"] == "attention"]
    assert att.groupby("layer")["best_in_layer"].sum().tolist() == [1] * L
    n_ref = sum(len(reference_boundaries(g["phone"].to_numpy()))
                for u, g in pd.read_parquet(workdir / f"results/{corpus}/labels/test.parquet").groupby("utterance")
                if u in _utterances(test, config))
    assert (table["n_ref"] == n_ref).all()

    grid = pd.read_csv(_att(run, "segmentation_grid.tsv"), sep="\t")
    n_pairs = grid["alpha_factor"].nunique() * grid["beta"].nunique()
    assert len(grid) == len(table) * n_pairs
    assert set(table["beta"]) <= set(grid["beta"]) and set(table["alpha_factor"]) <= set(grid["alpha_factor"])
    summary = json.loads(_att(run, "segmentation.json").read_text())
    assert summary["split"] == "test" and summary["tune_split"] == "dev"
    assert math.isclose(summary["mfcc"]["r_value"], float(table.loc[table["feature"] == "mfcc", "r_value"].iloc[0]), rel_tol=1e-5)

    # The reported scores are the library's: recompute the MFCC row and one head from scratch.
    labels = pd.read_parquet(workdir / f"results/{corpus}/labels/test.parquet")
    utts = _utterances(test, config)
    refs = {u: reference_boundaries(labels.loc[labels["utterance"] == u, "phone"].to_numpy()) for u in utts}
    corpus_dir = workdir / "resources" / "corpora" / corpus
    mfcc = table[table["feature"] == "mfcc"].iloc[0]
    settings = summary["settings"]
    kw = {"tolerance": settings["tolerance"], "centre": settings["centre"]}
    items = [(mfcc_features(load_wav(audio_path(corpus_dir, "test", u)), **settings["mfcc"]), refs[u]) for u in utts]
    s = score(items, float(mfcc["alpha"]), float(mfcc["beta"]), **kw)
    assert (s.hits, s.n_pred, s.n_ref) == (mfcc["hits"], mfcc["n_pred"], mfcc["n_ref"])
    head = att.iloc[-1]
    items = [(np.asarray(test.attention(u)[int(head["layer"]), int(head["head"])], dtype=np.float32), refs[u]) for u in utts]
    s = score(items, float(head["alpha"]), float(head["beta"]), **kw)
    assert (s.hits, s.n_pred, s.n_ref) == (head["hits"], head["n_pred"], head["n_ref"])
    assert dev.meta["attention_utterances"]  # tuned on the dev subset
    _figures(run, "segmentation")


@pytest.mark.workflow
@pytest.mark.slow
def test_phone_relation_maps(run, config):
    workdir, upstream, corpus = run
    cache = _cache(run, "test")
    L, H = cache.n_layers, int(cache.meta["n_heads"])
    table = pd.read_csv(_att(run, "phone_relations.tsv"), sep="\t", keep_default_na=False, na_values=[""])
    assert list(table.columns) == ["layer", "head", "phone", "concentration"]
    phones = list(CMU39) + (["sil"] if ((config.get("attention") or {}).get("relations") or {}).get("include_silence") else [])
    assert len(table) == L * H * len(phones) and set(table["phone"]) == set(phones)
    labels = pd.read_parquet(workdir / f"results/{corpus}/labels/test.parquet")
    present = set(labels.loc[labels["utterance"].isin(_utterances(cache, config)), "phone"]) & set(phones)
    seen = table["phone"].isin(present)
    assert np.isfinite(table.loc[seen, "concentration"]).all()
    assert table.loc[~seen, "concentration"].isna().all()
    with np.load(_att(run, "phone_relations.npz")) as z:
        M = len(phones)
        assert z["relation"].shape == (L, H, M, M) and z["observed"].shape == (L, H, M, M)
        assert z["uniform"].shape == (M, M) and list(z["phones"]) == phones
        assert np.all(z["observed"] >= 0) and np.all(z["relation"][np.isfinite(z["relation"])] >= -1 - 1e-9)
        np.testing.assert_allclose(z["concentration"].ravel(), table["concentration"].to_numpy(), rtol=1e-5, equal_nan=True)
    _figures(run, "phone_relations", "concentration")


@pytest.mark.workflow
@pytest.mark.slow
def test_head_masks(run, config):
    cache = _cache(run, "test")
    L, H = cache.n_layers, int(cache.meta["n_heads"])
    masks_cfg = (config.get("attention") or {}).get("masks") or {}
    prune = (config.get("pruning") or {}).get("heads") or {}  # masks the head-pruning evaluation needs
    grid = {(r, float(f)) for r in masks_cfg.get("rankings", DEFAULT_RANKINGS) for f in masks_cfg.get("fractions", DEFAULT_FRACTIONS)}
    grid |= {(r, float(f)) for r in prune.get("rankings", []) for f in prune.get("fractions", [])}
    index = pd.read_csv(_att(run, "head_masks/index.tsv"), sep="\t", keep_default_na=False)
    assert {(r, float(f)) for r, f in zip(index["ranking"], index["fraction"])} == grid and len(index) == len(grid)
    rankings = sorted({r for r, _ in grid})
    metrics = pd.read_csv(_att(run, "metrics.tsv"), sep="\t")
    order = pd.read_csv(_att(run, "head_masks/rankings.tsv"), sep="\t")
    for ranking in rankings:
        assert ranking in RANKINGS
        previous = np.ones((L, H), dtype=int)
        for fraction in sorted(f for r, f in grid if r == ranking):
            path = _att(run, f"head_masks/{ranking}_{fraction:g}.json")
            doc = json.loads(path.read_text())
            mask = np.asarray(doc["mask"])
            assert mask.shape == (L, H) and set(np.unique(mask)) <= {0, 1}
            k = n_removed(fraction, L * H)
            assert int((mask == 0).sum()) == k == doc["n_removed"] == len(doc["removed"])
            assert all(mask[l, h] == 0 for l, h in doc["removed"])
            assert np.all(mask <= previous), f"{ranking}: masks are not nested at {fraction}"
            previous = mask
            row = index[(index["ranking"] == ranking) & np.isclose(index["fraction"], fraction)]
            assert len(row) == 1 and int(row["n_removed"].iloc[0]) == k
        ranked = order[order["ranking"] == ranking].sort_values("rank")
        assert len(ranked) == L * H
        direction = (masks_cfg.get("remove_first") or {}).get("globalness", "high")
        if ranking == "globalness" and direction == "high":  # the most global head goes first
            top = metrics.loc[metrics["globalness"].idxmax()]
            assert (ranked["layer"].iloc[0], ranked["head"].iloc[0]) == (top["layer"], top["head"])


@pytest.mark.workflow
@pytest.mark.slow
def test_segmentation_summary(run, config):
    workdir, upstream, corpus = run
    summary = pd.read_csv(workdir / "results" / "attention" / "segmentation_summary.tsv", sep="\t")
    assert set(summary["upstream"]) == set(config["analysis_upstreams"])
    mine = summary[summary["upstream"] == upstream].set_index("feature")
    assert list(mine.index) == ["attention (best head)", "hidden state (best layer)", "MFCC"]
    table = pd.read_csv(_att(run, "segmentation.tsv"), sep="\t")
    doc = json.loads(_att(run, "segmentation.json").read_text())
    # the same rows segmentation.json reports as chosen on the tuning split
    for label, key in (("attention (best head)", "best_attention"), ("hidden state (best layer)", "best_hidden"), ("MFCC", "mfcc")):
        row, ref = mine.loc[label], doc[key]
        assert math.isclose(row["r_value"], ref["r_value"], rel_tol=1e-3), label
        assert math.isclose(row["tune_r_value"], ref["tune_r_value"], rel_tol=1e-3), label
        for col in ("layer", "head"):
            assert (pd.isna(row[col]) and ref[col] is None) or int(row[col]) == ref[col], (label, col)
    for col in ("hit_rate", "precision", "recall", "f1"):
        assert summary[col].dropna().between(0, 1).all(), col
    assert (mine["n_ref"] == table["n_ref"].iloc[0]).all()  # one reference boundary set for every feature


@pytest.mark.workflow
@pytest.mark.slow
def test_head_pruning_curves(run, config):
    workdir, upstream, corpus = run
    heads = (config.get("pruning") or {}).get("heads") or {}
    assert upstream in heads.get("upstreams", config["pruning"].get("upstreams", [])) and heads.get("rankings"), \
        "the tiny config must prune heads of its analysis upstream (pruning.heads) for this test to check anything"
    rankings, tasks = heads["rankings"], heads["tasks"]
    fractions = sorted({float(f) for f in heads["fractions"] if float(f) > 0})
    curves = pd.read_csv(_att(run, "head_pruning.tsv"), sep="\t")
    readouts = sorted(curves["readout"].unique())  # weighted sum, and the last hidden state where edits are scored
    assert len(curves) == len(tasks) * len(rankings) * (len(fractions) + 1) * len(readouts)
    index = pd.read_csv(_att(run, "head_masks/index.tsv"), sep="\t")
    for task, readout in ((t, r) for t in tasks for r in readouts):
        docs = {}
        for ranking in rankings:
            c = curves[(curves["task"] == task) & (curves["ranking"] == ranking) & (curves["readout"] == readout)].sort_values("fraction")
            assert c["fraction"].tolist() == [0.0] + fractions
            assert c["variant"].tolist() == ["original"] + [f"heads-{ranking}_{f:g}" for f in fractions]
            for f, variant, n_removed, mean, lo, hi, n in zip(c["fraction"], c["variant"], c["n_removed"], c["mean"],
                                                               c["ci_low"], c["ci_high"], c["n"]):
                path = workdir / "results" / upstream / "downstream" / task / variant / "results.json"
                doc = docs.setdefault(variant, json.loads(path.read_text()))
                scores = [r["score"] for r in doc["runs"] if r.get("readout", "weighted") == readout]
                assert n == len(scores) == len(config["downstream"]["seeds"])
                assert math.isclose(mean, float(np.mean(scores)), rel_tol=1e-4, abs_tol=1e-6)
                assert lo <= mean <= hi
                if f > 0:  # the variant's mask is the one head_masks wrote, and its heads are really zeroed
                    k = index[(index["ranking"] == ranking) & np.isclose(index["fraction"], f)]["n_removed"].iloc[0]
                    assert n_removed == k
                    spec = json.loads((workdir / "results" / upstream / "variants" / f"{variant}.json").read_text())
                    assert spec["parameters"]["effective"] < spec["base_parameters"]["stored"]  # heads gone
            base = c[c["fraction"] == 0]
            assert np.allclose(c["loss"], (float(base["mean"].iloc[0]) - c["mean"]) * 100, atol=1e-3)
    out = pd.read_csv(_att(run, "head_pruning_fractions.tsv"), sep="\t")
    assert len(out) == len(tasks) * len(rankings) * len(readouts)
    max_loss = float(heads.get("max_loss", 1.0))
    for r in out.itertuples():
        c = curves[(curves["task"] == r.task) & (curves["ranking"] == r.ranking) & (curves["readout"] == r.readout)].sort_values("fraction")
        within = c[c["fraction"] <= r.max_fraction]
        assert (within["loss"] <= max_loss + 1e-3).all()
        above = c[c["fraction"] > r.max_fraction]
        assert above.empty or above["loss"].iloc[0] > max_loss - 1e-3
    _figures(run, "head_pruning")


def test_attention_figures_smoke(tmp_path):
    """The figure functions draw from synthetic inputs (fast; no workflow)."""
    from speechdissect.attention import HeadMetrics, PhoneRelations
    from speechdissect.attention import figures
    from speechdissect.plots import save_figure

    rng = np.random.default_rng(0)
    T, L, H = 30, 2, 3
    stack = rng.random((L, H, T, T)).astype(np.float32)
    stack /= stack.sum(-1, keepdims=True)
    acc = HeadMetrics()
    acc.update(stack)
    table = acc.table()
    phones = list(rng.choice(list(CMU39[:6]) + ["sil"], size=T))
    rel = PhoneRelations()
    rel.update(stack, phones)
    seg = pd.DataFrame({
        "feature": ["mfcc"] + ["hidden"] * (L + 1) + ["attention"] * (L * H),
        "layer": [None] + list(range(L + 1)) + [l for l in range(L) for _ in range(H)],
        "head": [None] * (L + 2) + [h for _ in range(L) for h in range(H)],
        "r_value": rng.random(1 + L + 1 + L * H),
    })
    seg["best_in_layer"] = (seg["feature"] == "attention") & (seg["head"] == 0)
    figs = {
        "metrics": figures.metric_heatmaps(table, "t"),
        "examples": figures.example_maps([("a", stack[0, 0]), ("b", stack[1, 2])], "t", phones=phones),
        "segmentation": figures.segmentation_curve(seg, "t"),
        "relations": figures.relation_maps([("a", rel.relation()[0, 0])], CMU39, "t"),
        "concentration": figures.concentration_heatmap(rel.concentration_table(), "t", phones=CMU39, categories=table),
    }
    for name, fig in figs.items():
        save_figure(fig, tmp_path / f"{name}.png", tmp_path / f"{name}.svg")
        _figure(tmp_path / f"{name}.png")
        _figure(tmp_path / f"{name}.svg")
