"""Workflow test: convexity, variants and s3prl downstream outputs of the tiny run.

Beyond shapes and ranges, each table is checked against values computed here from the
run's own lower-level outputs (the activation cache, s3prl's tensorboard scalars, the task
data files), and the tiny config is large enough for the results to mean something: word
convexity is defined, speaker convexity is not a trivial 100, the probes beat chance.
"""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from speechdissect.cache import ActivationCache
from speechdissect.convexity import graph_convexity, knn_graph
from speechdissect.downstream.runner import read_scalars, select_score
from speechdissect.downstream.tasks import get_task, item_class
from speechdissect.labels import read_label_table
from speechdissect.regions import balanced_sample, unit_points

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TINY = yaml.safe_load((Path(__file__).parent / "workflow" / "tiny_config.yaml").read_text())
N_LAYERS = TINY["upstreams"]["mini_hubert"]["model"]["encoder_layers"]
CONV = TINY["convexity"]


def test_tiny_config_is_large_enough():
    assert N_LAYERS >= 3, "a convex cut of a 2-layer model keeps 1 or 2 layers: no real cut to test"
    corpus = TINY["corpora"]["synthetic"]
    assert corpus["n_speakers"] >= 6, "with 2 speakers per gender the gender probe learns speaker identity"


def test_layer_convexity(tiny_run):
    base = tiny_run / "results/mini_hubert/synthetic/convexity"
    scores = pd.read_csv(base / "scores.tsv", sep="\t")
    assert set(scores["property"]) == {"phone", "word", "speaker"}
    assert set(scores["layer"]) == set(range(N_LAYERS + 1))  # every hidden state
    assert len(scores) == (N_LAYERS + 1) * 3 * CONV["repeats"]
    # every property is measured: word convexity is a number (words recur in the split), not NaN
    assert scores["score"].notna().all(), scores[scores["score"].isna()]
    assert scores["score"].between(0, 100).all() and (scores["n_classes"] >= 2).all()
    word = scores[scores["property"] == "word"]
    assert (word["n_points"] >= 2 * word["n_classes"]).all()
    speaker = scores[scores["property"] == "speaker"]
    assert (speaker["n_classes"] == TINY["corpora"]["synthetic"]["n_speakers"]).all()
    assert (speaker["score"] < 100).any(), "speaker convexity is a trivial 100 in every layer"
    # the summary is the mean over repeats, the best layer its argmax
    summary = pd.read_csv(base / "summary.tsv", sep="\t")
    mean = scores.groupby(["layer", "property"])["score"].mean()
    for row in summary.itertuples():
        assert row.mean == pytest.approx(mean[(row.layer, row.property)], rel=1e-9)
        assert row.n == CONV["repeats"] and row.ci_low <= row.mean <= row.ci_high
    best = json.loads((base / "best_layers.json").read_text())["most_convex_layer"]
    for prop, g in summary.groupby("property"):
        assert best[prop] == int(g.loc[g["mean"].idxmax(), "layer"])
    assert (tiny_run / "results/convexity/synthetic/convexity_layers.png").stat().st_size > 0


def test_speaker_convexity_recomputed_from_the_cache(tiny_run):
    """One score recomputed from the cached hidden states: the rule probes the layer and units it says."""
    scores = pd.read_csv(tiny_run / "results/mini_hubert/synthetic/convexity/scores.tsv", sep="\t")
    cache = ActivationCache(tiny_run / f"results/mini_hubert/synthetic/cache/{CONV['split']}")
    labels = read_label_table(tiny_run / f"results/synthetic/labels/{CONV['split']}.parquet")
    layer, rep = N_LAYERS, 0
    feats, names = unit_points(cache, labels, layer, "speaker")
    rep_seed = TINY["seed"] + 1000 * rep + layer
    pick = balanced_sample(names, CONV["speaker_per_class"], np.random.default_rng(rep_seed))
    x, y = feats[pick], names[pick]
    got = graph_convexity(x, y, n_neighbors=CONV["n_neighbors"], max_paths=CONV["max_paths"], seed=rep_seed,
                          graph=knn_graph(x, CONV["n_neighbors"], method="exact"))
    row = scores[(scores["layer"] == layer) & (scores["property"] == "speaker") & (scores["repeat"] == rep)].iloc[0]
    assert row["n_points"] == len(y) and row["score"] == pytest.approx(got.score, rel=1e-9)


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


def _majority_share(tiny_run: Path, task: str) -> float:
    """Chance level recomputed from the task's data files: share of the most frequent test class."""
    data = tiny_run / f"results/synthetic/downstream_data/{task}"
    if task == "gender":   # utterance items named {gender}-{utterance}
        counts = Counter(item_class(line) for line in (data / "test_split.txt").read_text().split())
    else:                  # frame labels of the test utterances
        phones = data / "phones"
        test = set((phones / "test_split.txt").read_text().split())
        counts = Counter()
        for line in (phones / "converted_aligned_phones.txt").read_text().splitlines():
            utt, *ids = line.split()
            if utt in test:
                counts.update(ids)
    return max(counts.values()) / sum(counts.values())


@pytest.mark.parametrize("task, variants", [
    ("phone_linear", {"original", "ffn-norm_0.5", "convex-phone", "layers-1", "heads-globalness_0.5", "heads-random_0.5"}),
    ("gender", {"original", "edit-remove_gender", "edit-random_gender"}),
])
def test_downstream_tables(tiny_run, task, variants):
    table = pd.read_csv(tiny_run / f"results/downstream/{task}.tsv", sep="\t")
    # edited / pruned variants and their original are probed on the weighted sum and the last layer
    edited = {v for v in variants if v.split("-")[0] in ("heads", "ffn", "edit")}
    want_readouts = {"weighted", "last"} if edited else {"weighted"}
    for variant in variants:
        got = set(table.loc[table["variant"] == variant, "readout"])
        assert got == (want_readouts if variant in edited or variant == "original" else {"weighted"}), (variant, got)
    table = table[table["readout"] == "weighted"].set_index("variant")
    assert set(table.index) == variants
    assert (table["n"] == len(TINY["downstream"]["seeds"])).all()
    assert (table["upstream_params"] > 0).all() and (table["trainable_params"] > 0).all()
    chance = _majority_share(tiny_run, task)
    assert table["chance"].to_numpy() == pytest.approx(np.full(len(table), chance), rel=1e-12)
    t = get_task(task)
    for variant in variants:
        path = tiny_run / f"results/mini_hubert/downstream/{task}/{variant}/results.json"
        runs = [r for r in json.loads(path.read_text())["runs"] if r["readout"] == "weighted"]
        assert [r["seed"] for r in runs] == TINY["downstream"]["seeds"]
        assert all(r["steps"] == TINY["downstream"]["steps"][task] and r["wall_seconds"] > 0 for r in runs)
        for r in runs:   # the score is the test metric at the best dev step of what s3prl logged
            again = select_score(t, read_scalars(path.parent / f"seed{r['seed']}"))
            assert (again["score"], again["best_step"]) == (r["score"], r["best_step"]), (variant, r["seed"])
        assert table.loc[variant, "mean"] == pytest.approx(np.mean([r["score"] for r in runs]), rel=1e-9)
    # the probes measure something: variants differ, and none scores exactly what always answering
    # the majority class would (the old tiny config gave 0.75 = chance for every gender variant)
    assert table["mean"].nunique() > 1, f"every {task} variant scores the same {table['mean'].iloc[0]}"
    assert not np.isclose(table["mean"], chance).all(), f"every {task} variant scores the majority share {chance}"
    if task == "phone_linear":   # frames of the speakers it was trained on: clearly above the majority class
        assert table.loc["original", "mean"] > chance + 0.05, (table.loc["original", "mean"], chance)


def test_convexity_pruning_table(tiny_run):
    """Fine-tuned full and pruned models (s3prl -f) and the pruning / depth tables of the tiny run."""
    steps = TINY["pruning"]["layers"]["finetune_steps"]["phone_linear"]
    for variant in ("original", "convex-phone"):
        doc = json.loads((tiny_run / f"results/mini_hubert/downstream_ft/phone_linear/{variant}/results.json").read_text())
        assert [r["seed"] for r in doc["runs"]] == TINY["downstream"]["seeds"]
        assert all(r["finetune"] and r["steps"] == steps and r["upstream_updated_params"] > 0 for r in doc["runs"])
        assert all(r["trainable_params"] > r["upstream_updated_params"] for r in doc["runs"])
    base = tiny_run / "results/mini_hubert/synthetic/convexity"
    table = pd.read_csv(base / "pruning.tsv", sep="\t")
    assert list(table["mode"]) == ["frozen", "finetuned"] and (table["task"] == "phone_linear").all()
    best = json.loads((base / "best_layers.json").read_text())["most_convex_layer"]["phone"]
    kept = max(1, best)
    assert (table["most_convex_layer"] == best).all() and (table["layers_kept"] == kept).all()
    assert (table["layers_total"] == N_LAYERS).all() and table[["full_mean", "pruned_mean"]].stack().between(0, 1).all()
    convex = json.loads((tiny_run / "results/mini_hubert/variants/convex-phone.json").read_text())
    assert convex["applied"] == f"layers-{kept}"
    if kept < N_LAYERS:   # a real cut: fewer parameters
        assert (table["params_change_pct"] < 0).all() and (table["pruned_params"] < table["full_params"]).all()
    else:
        assert (table["params_change_pct"] == 0).all()
    frozen = pd.read_csv(tiny_run / "results/downstream/phone_linear.tsv", sep="\t")
    frozen = frozen[frozen["readout"] == "weighted"].set_index("variant")  # the cut is scored on the weighted sum
    row = table[table["mode"] == "frozen"].iloc[0]
    assert row["full_mean"] == pytest.approx(frozen.loc["original", "mean"], rel=1e-5)  # pruning.tsv: 6 digits
    assert row["pruned_mean"] == pytest.approx(frozen.loc["convex-phone", "mean"], rel=1e-5)
    depths = pd.read_csv(base / "pruning_depths.tsv", sep="\t")
    want = sorted({*TINY["pruning"]["layers"]["depths"], kept, N_LAYERS})
    assert list(depths["depth"]) == want and depths["is_convex_cut"].sum() == 1
    assert int(depths.loc[depths["is_convex_cut"], "depth"].iloc[0]) == kept
    summary = pd.read_csv(base / "summary.tsv", sep="\t")
    phone = summary[summary["property"] == "phone"].set_index("layer")["mean"]
    assert depths["convexity"].to_numpy() == pytest.approx(phone.loc[want].to_numpy(), abs=1e-3)  # hidden state N ends depth N
    summary_doc = json.loads((base / "pruning.json").read_text())
    assert set(summary_doc["tasks"]["phone_linear"]) >= {"frozen", "finetuned", "depths"}
    assert (base / "pruning_depths.png").stat().st_size > 0
