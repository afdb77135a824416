"""The findings logic (speechdissect.findings) on small fixed tables: every verdict of every claim is reachable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from speechdissect import findings as F

UP = "mini_hubert"
CORPUS = "synthetic"


def write(root: Path, key: str, rows, upstream: str = UP, task: str | None = None) -> str:
    rel = F.TABLES[key].format(upstream=upstream, corpus=CORPUS, task=task)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return rel


def ctx(root: Path, upstreams=(UP,), available=None) -> F.Context:
    return F.Context(root, CORPUS, list(upstreams), available=available)


def verdicts(rows) -> list[str]:
    return [r["verdict"] for r in rows]


def one(rows) -> dict:
    assert len(rows) == 1, rows
    return rows[0]


# --------------------------------------------------------------------------- tables


def counts_rows(per_layer):
    """per_layer: list of n_property_neurons per layer (split over two properties)."""
    rows = []
    for layer, n in enumerate(per_layer):
        rows.append({"layer": layer, "property": "phone_type", "group": "all", "n_rows": 10, "n_group_neurons": n, "n_property_neurons": n})
        rows.append({"layer": layer, "property": "phone_type", "group": "vowels", "n_rows": 5, "n_group_neurons": 99, "n_property_neurons": 99})
        rows.append({"layer": layer, "property": "gender", "group": "all", "n_rows": 10, "n_group_neurons": 0, "n_property_neurons": 0})
    return rows


def overlap_rows(gp, pg, pp, gender=5, pitch=5):
    """Jaccard pieces per pair: (intersection, union) for gender-pitch, phone_type-gender, phone_type-pitch."""
    rows = []
    for layer in range(2):
        for (a, b), (inter, union) in {("phone_type", "gender"): pg, ("phone_type", "pitch"): pp, ("gender", "pitch"): gp}.items():
            sizes = {"phone_type": 20, "gender": gender, "pitch": pitch}
            rows.append({"level": "property", "layer": layer, "a": a, "b": b, "n_a": sizes[a], "n_b": sizes[b],
                         "intersection": inter, "union": union, "jaccard": inter / union if union else np.nan})
    rows.append({"level": "group", "layer": 0, "a": "gender:M", "b": "pitch:high", "n_a": 9, "n_b": 9, "intersection": 9, "union": 9, "jaccard": 1.0})
    return rows


def ci(mean, half, n=3):
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "ci_half": half}


def editing_rows(task="phone_linear", entry="phone_type", remove=0.30, random=0.40, half=0.01, readouts=("weighted", "last"),
                 n_removed=120, by_gender=None):
    rows = []
    for readout in readouts:
        for cond, mean in (("original", 0.42), ("remove", remove), ("random", random)):
            r = {"upstream": UP, "task": task, "readout": readout, "entry": entry, "condition": cond,
                 "variant": "original" if cond == "original" else f"edit-{cond}_{entry}", "metric": "acc", **ci(mean, half),
                 "delta": mean - 0.42, "n_neurons_removed": 0 if cond == "original" else n_removed}
            if by_gender:
                g = by_gender[cond]
                r |= {"mean_by_gender_M": g[0], "mean_by_gender_F": g[1], "ci_half_by_gender_M": g[2], "ci_half_by_gender_F": g[2],
                      "delta_by_gender_M": g[0] - by_gender["original"][0], "delta_by_gender_F": g[1] - by_gender["original"][1]}
            rows.append(r)
    return rows


def test_columns_are_exactly_the_issue_ones_then_extras(tmp_path):
    table = F.findings_table(ctx(tmp_path))
    assert list(table.columns) == ["study", "claim", "seed_value", "upstream", "measured", "ci_half", "verdict", "evidence",
                                   "id", "task", "readout", "detail", "latency"]
    # an empty run: every claim is there, not testable, with a reason, and nothing raised
    assert set(table["id"]) == {f.id for f in F.FINDINGS} and len(F.FINDINGS) >= 18
    assert set(table["verdict"]) == {"not testable"}
    assert table["detail"].str.len().min() > 10


def test_lower_layers(tmp_path):
    write(tmp_path, "counts", counts_rows([30, 20, 5, 4]))
    r = one(F.lower_layers(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["measured"] == pytest.approx(50 / 59)
    assert r["evidence"] == f"results/{UP}/{CORPUS}/neurons/counts.tsv" and "lower layers [0, 1]: 50" in r["detail"]
    write(tmp_path, "counts", counts_rows([1, 2, 99, 3, 4]))  # odd: the middle layer (99) counts for neither half
    assert one(F.lower_layers(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "counts", counts_rows([0, 0, 0, 0]))
    r = one(F.lower_layers(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "no property neurons" in r["detail"]


def test_gender_pitch_overlap(tmp_path):
    write(tmp_path, "overlaps", overlap_rows(gp=(3, 7), pg=(1, 24), pp=(2, 23)))
    r = one(F.gender_pitch_overlap(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["measured"] == pytest.approx(6 / 14)
    write(tmp_path, "overlaps", overlap_rows(gp=(1, 9), pg=(10, 15), pp=(2, 23)))
    assert one(F.gender_pitch_overlap(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "overlaps", overlap_rows(gp=(0, 3), pg=(0, 20), pp=(3, 20), gender=0, pitch=3))
    r = one(F.gender_pitch_overlap(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "no gender property neurons" in r["detail"]


def test_silhouette_per_property(tmp_path):
    rows = []
    for layer, (g, p, t) in enumerate([(0.05, 0.01, np.nan), (0.36, 0.02, np.nan)]):
        for prop, s in (("gender", g), ("pitch", p), ("phone_type", t)):
            rows.append({"layer": layer, "property": prop, "neuron_set": "all", "silhouette_mds": s, "silhouette_vectors": s})
            rows.append({"layer": layer, "property": prop, "neuron_set": "property", "silhouette_mds": 0.9, "silhouette_vectors": 0.9})
    write(tmp_path, "geometry", rows)
    by = {r["task"]: r for r in F.silhouette(ctx(tmp_path))}
    assert by["gender"]["verdict"] == "holds" and by["gender"]["measured"] == pytest.approx(0.36) and "best layer 1" in by["gender"]["detail"]
    assert by["pitch"]["verdict"] == "does not hold" and by["pitch"]["measured"] == pytest.approx(0.02)
    assert by["phone_type"]["verdict"] == "not testable"


def test_remove_vs_random_last_readout_first(tmp_path):
    write(tmp_path, "editing", editing_rows(remove=0.30, random=0.40))
    rows = F.remove_vs_random(ctx(tmp_path))
    assert [r["readout"] for r in rows] == ["last", "weighted"]
    assert verdicts(rows) == ["holds", "holds"] and rows[0]["measured"] == pytest.approx(-10.0)
    assert rows[0]["ci_half"] == pytest.approx(100 * np.hypot(0.01, 0.01))
    write(tmp_path, "editing", editing_rows(remove=0.395, random=0.40, half=0.02))  # right direction, CIs overlap
    assert set(verdicts(F.remove_vs_random(ctx(tmp_path)))) == {"does not hold"}
    write(tmp_path, "editing", editing_rows(remove=0.30, random=0.40, half=np.nan))  # one seed: no CI
    assert set(verdicts(F.remove_vs_random(ctx(tmp_path)))) == {"not testable"}
    write(tmp_path, "editing", editing_rows(task="speaker_linear_utter"))  # no matching task for phone_type
    r = one(F.remove_vs_random(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "matching" in r["detail"]
    write(tmp_path, "editing", editing_rows(task="gender", entry="gender", n_removed=0))
    assert set(verdicts(F.remove_vs_random(ctx(tmp_path)))) == {"not testable"}


def erasure_table(specific: bool, half=0.01, n_removed=12):
    orig = (0.80, 0.80, half)
    hurt, mild = (0.50, 0.78, half), (0.78, 0.50, half)
    rows = []
    for entry, own_hurt in (("gender-M", True), ("gender-F", False)):
        removed = (hurt if own_hurt else mild) if specific else (mild if own_hurt else hurt)
        rows += editing_rows(task="speaker_linear_utter", entry=entry, readouts=("last",), n_removed=n_removed,
                             by_gender={"original": orig, "remove": removed, "random": orig})
    return rows


def test_gender_erasure(tmp_path):
    write(tmp_path, "editing", erasure_table(specific=True))
    rows = F.gender_erasure(ctx(tmp_path))
    assert verdicts(rows) == ["holds", "holds"] and rows[0]["measured"] == pytest.approx(28.0)
    write(tmp_path, "editing", erasure_table(specific=False))
    assert verdicts(F.gender_erasure(ctx(tmp_path))) == ["does not hold", "does not hold"]
    write(tmp_path, "editing", erasure_table(specific=True, n_removed=0))  # no gender neurons to remove
    assert verdicts(F.gender_erasure(ctx(tmp_path))) == ["not testable", "not testable"]
    write(tmp_path, "editing", editing_rows())  # no per-gender removal configured
    r = one(F.gender_erasure(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "gender:M" in r["detail"]


def ffn_rows(protected, norm, half=0.01):
    rows = [{"upstream": UP, "task": "phone_linear", "readout": "last", "method": m, "sparsity": 0.0, "variant": "original",
             "metric": "acc", **ci(0.5, half)} for m in ("norm", "protected_norm")]
    for s, (p, n) in {0.2: (0.49, 0.49), 0.5: (protected, norm)}.items():
        rows.append({"upstream": UP, "task": "phone_linear", "readout": "last", "method": "protected_norm", "sparsity": s,
                     "variant": f"ffn-protected_norm_{s}", "metric": "acc", **ci(p, half)})
        rows.append({"upstream": UP, "task": "phone_linear", "readout": "last", "method": "norm", "sparsity": s,
                     "variant": f"ffn-norm_{s}", "metric": "acc", **ci(n, half)})
    return rows


def test_protected_pruning(tmp_path):
    write(tmp_path, "ffn_pruning", ffn_rows(0.45, 0.30))
    r = one(F.protected_pruning(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["measured"] == pytest.approx(15.0) and "sparsity 0.5" in r["detail"]
    write(tmp_path, "ffn_pruning", ffn_rows(0.30, 0.45))
    assert one(F.protected_pruning(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "ffn_pruning", [r for r in ffn_rows(0.45, 0.30) if r["method"] == "norm"])
    assert one(F.protected_pruning(ctx(tmp_path)))["verdict"] == "not testable"


def fraction_rows(glob_max, largest=0.75):
    base = {"upstream": UP, "task": "phone_linear", "readout": "last", "metric": "acc", "original": 0.5, "score": 0.495,
            "loss": 0.5, "largest_evaluated": largest, "fractions": "0,0.5,0.75", "max_loss": 1.0, "n_removed": 6}
    return [base | {"ranking": "globalness", "max_fraction": glob_max, "max_fraction_any": glob_max},
            base | {"ranking": "random", "max_fraction": 0.0, "max_fraction_any": 0.0}]


def test_globalness_half(tmp_path):
    write(tmp_path, "head_fractions", fraction_rows(0.75))
    r = one(F.globalness_half(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["measured"] == 0.75 and "random: up to 0" in r["detail"]
    write(tmp_path, "head_fractions", fraction_rows(0.5))
    assert one(F.globalness_half(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "head_fractions", fraction_rows(0.5, largest=0.5))  # the grid cannot show "more than half"
    r = one(F.globalness_half(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "pruning.heads.fractions" in r["detail"]


def curve_rows(glob, rnd, half=0.01):
    rows = [{"upstream": UP, "task": "speaker_linear_utter", "readout": "weighted", "metric": "acc", "higher_is_better": True,
             "ranking": r, "fraction": 0.0, "variant": "original", **ci(0.6, half), "loss": 0.0} for r in ("globalness", "random")]
    for r, m in (("globalness", glob), ("random", rnd)):
        rows.append({"upstream": UP, "task": "speaker_linear_utter", "readout": "weighted", "metric": "acc", "higher_is_better": True,
                     "ranking": r, "fraction": 0.75, "variant": f"heads-{r}_0.75", **ci(m, half), "loss": 100 * (0.6 - m)})
    return rows


def test_globalness_vs_random(tmp_path):
    write(tmp_path, "head_curves", curve_rows(0.55, 0.30))
    r = one(F.globalness_vs_random(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["measured"] == pytest.approx(25.0)
    write(tmp_path, "head_curves", curve_rows(0.55, 0.54, half=0.05))
    assert one(F.globalness_vs_random(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "head_curves", [r for r in curve_rows(0.55, 0.3) if r["ranking"] == "globalness"])
    assert one(F.globalness_vs_random(ctx(tmp_path)))["verdict"] == "not testable"


def seg_rows(att, mfcc, upstream=UP):
    return [{"upstream": upstream, "feature": "attention (best head)", "layer": 1, "head": 0, "r_value": att},
            {"upstream": upstream, "feature": "hidden state (best layer)", "layer": 0, "head": None, "r_value": 0.6},
            {"upstream": upstream, "feature": "MFCC", "layer": None, "head": None, "r_value": mfcc}]


def test_segmentation_vs_mfcc(tmp_path):
    write(tmp_path, "segmentation", seg_rows(0.80, 0.77) + seg_rows(0.70, 0.76, "mini_mockingjay")
          + seg_rows(np.nan, 0.76, "mini_hubert_ft"))
    by = {r["upstream"]: r for r in F.segmentation_vs_mfcc(ctx(tmp_path))}
    assert by[UP]["verdict"] == "holds" and by[UP]["measured"] == pytest.approx(3.0)
    assert by["mini_mockingjay"]["verdict"] == "does not hold"
    assert by["mini_hubert_ft"]["verdict"] == "not testable"


def convexity_rows(prop, means, half=1.0):
    return [{"layer": k, "property": prop, **ci(m, half)} for k, m in enumerate(means)]


@pytest.mark.parametrize("func,prop", [(F.word_peak, "word"), (F.phone_peak, "phone")])
def test_convexity_peak_in_middle(tmp_path, func, prop):
    write(tmp_path, "convexity", convexity_rows(prop, [10, 18, 25, 16, 12]) + convexity_rows("speaker", [1, 2, 3, 4, 5]))
    r = one(func(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["measured"] == pytest.approx(13.0) and "hidden state 2" in r["detail"]
    write(tmp_path, "convexity", convexity_rows(prop, [10, 18, 25, 16, 24.5]))  # peak's CI overlaps the last layer's
    assert one(func(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "convexity", convexity_rows(prop, [10, 12, 14, 16, 18]))  # peaks at the last hidden state
    assert one(func(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "convexity", convexity_rows("speaker", [1, 2, 3]) + [{"layer": 0, "property": prop, "n": 0}])
    assert one(func(ctx(tmp_path)))["verdict"] == "not testable"


def cp_row(change_points, params_pct, latency_pct, kept=2, mode="finetuned", half=0.005):
    full = 0.60
    return {"task": "word", "property": "word", "mode": mode, "most_convex_layer": kept, "layers_kept": kept, "layers_total": 4,
            "metric": "acc", "n_seeds": 3, "full_mean": full, "full_ci_half": half, "pruned_mean": full + change_points / 100,
            "pruned_ci_half": half, "accuracy_change_points": change_points, "params_change_pct": params_pct,
            "latency_change_pct": latency_pct, "train_time_change_pct": -20.0, "latency_source": "paired"}


def test_convexity_pruning(tmp_path):
    write(tmp_path, "convexity_pruning", [cp_row(-0.5, -40.0, -35.0, mode="frozen"), cp_row(-0.5, -40.0, -35.0)])
    rows = F.convexity_pruning(ctx(tmp_path))
    assert [r["readout"] for r in rows] == ["finetuned", "frozen"] and verdicts(rows) == ["holds", "holds"]
    assert "parameters -40.0 %" in rows[0]["detail"] and "latency -35.0 %" in rows[0]["latency"]
    assert "latency" not in rows[0]["detail"]  # timing varies between identical runs: kept out of the compared text
    write(tmp_path, "convexity_pruning", [cp_row(-6.0, -40.0, -35.0)])  # accuracy lost beyond 1 point and the CIs
    assert one(F.convexity_pruning(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "convexity_pruning", [cp_row(0.0, -3.0, -2.0)])  # kept, but no large saving
    assert one(F.convexity_pruning(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "convexity_pruning", [cp_row(0.0, 0.0, 0.0, kept=4)])
    r = one(F.convexity_pruning(ctx(tmp_path)))
    assert r["verdict"] == "does not hold" and "nothing cut" in r["detail"]


def layerwise_rows(task, layer_means, mfcc=None, upstream=UP, half=0.01):
    rows = [{"upstream": upstream, "task": task, "layer": k, "baseline": False, "best_layer": m == max(layer_means),
             "metric": "acc", **ci(m, half)} for k, m in enumerate(layer_means)]
    if mfcc is not None:
        rows.append({"upstream": "mfcc", "task": task, "layer": np.nan, "baseline": True, "best_layer": False, "metric": "acc", **ci(mfcc, half)})
    return rows


def test_phone_and_speaker_vs_mfcc(tmp_path):
    write(tmp_path, "layerwise", layerwise_rows("phone_linear", [0.45, 0.55, 0.60], mfcc=0.48)
          + layerwise_rows("phone_linear", [0.40, 0.41], upstream="mini_mockingjay")
          + layerwise_rows("speaker_linear_utter", [0.30, 0.35], mfcc=0.50))
    r = one(F.phone_vs_mfcc(ctx(tmp_path)))
    assert r["verdict"] == "holds" and r["upstream"] == UP and r["measured"] == pytest.approx(12.0) and "hidden state 2" in r["detail"]
    assert one(F.speaker_vs_mfcc(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "layerwise", layerwise_rows("phone_linear", [0.45, 0.51], mfcc=0.48))  # above MFCC but < 5 points
    assert one(F.phone_vs_mfcc(ctx(tmp_path)))["verdict"] == "does not hold"
    write(tmp_path, "layerwise", layerwise_rows("phone_linear", [0.45, 0.60]))  # no mfcc baseline
    r = one(F.phone_vs_mfcc(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "downstream.baselines" in r["detail"]
    # no layer-wise table: the task table (readouts of the original) is read instead
    (tmp_path / F.TABLES["layerwise"]).unlink()
    write(tmp_path, "downstream", [{"upstream": UP, "variant": "original", "task": "speaker_linear_utter", "readout": r,
                                    "metric": "acc", **ci(m, 0.01)} for r, m in (("weighted", 0.7), ("last", 0.6))]
          + [{"upstream": "mfcc", "variant": "original", "task": "speaker_linear_utter", "readout": "weighted", "metric": "acc",
              **ci(0.5, 0.01)}], task="speaker_linear_utter")
    r = one(F.speaker_vs_mfcc(ctx(tmp_path)))
    assert r["verdict"] == "holds" and "readout weighted" in r["detail"]
    assert r["evidence"] == "results/downstream/speaker_linear_utter.tsv"


def test_convexity_tracks_probe(tmp_path):
    write(tmp_path, "layerwise", layerwise_rows("phone_linear", [0.40, 0.45, 0.50, 0.55, 0.56])
          + layerwise_rows("speaker_linear_utter", [0.60, 0.50, 0.45, 0.40, 0.30]))
    write(tmp_path, "convexity", convexity_rows("phone", [10, 12, 14, 16, 18]) + convexity_rows("speaker", [5, 8, 9, 12, 15]))
    by = {r["task"]: r for r in F.convexity_tracks_probe(ctx(tmp_path))}
    assert by["phone_linear"]["verdict"] == "holds" and by["phone_linear"]["measured"] == pytest.approx(1.0)
    assert by["speaker_linear_utter"]["verdict"] == "does not hold" and by["speaker_linear_utter"]["measured"] == pytest.approx(-1.0)
    assert by["phone_linear"]["evidence"].split(";") == ["results/downstream/layerwise.tsv", f"results/{UP}/{CORPUS}/convexity/summary.tsv"]
    write(tmp_path, "layerwise", layerwise_rows("phone_linear", [0.40, 0.45, 0.50]))
    assert one(F.convexity_tracks_probe(ctx(tmp_path)))["verdict"] == "not testable"


def test_a_table_outside_the_config_is_not_read(tmp_path):
    rel = write(tmp_path, "counts", counts_rows([30, 20, 5, 4]))
    assert one(F.lower_layers(ctx(tmp_path)))["verdict"] == "holds"
    r = one(F.lower_layers(ctx(tmp_path, available=frozenset())))  # an old file of another config
    assert r["verdict"] == "not testable"
    assert one(F.lower_layers(ctx(tmp_path, available=frozenset([rel]))))["verdict"] == "holds"


def test_a_malformed_table_is_not_testable_not_a_crash(tmp_path):
    write(tmp_path, "counts", [{"layer": 0, "what": 1}])  # columns missing
    table = F.findings_table(ctx(tmp_path), [f for f in F.FINDINGS if f.id == "neurons.lower_layers"])
    assert list(table["verdict"]) == ["not testable"] and "KeyError" in table["detail"].iloc[0]


def test_markdown_and_html_render_every_row(tmp_path):
    write(tmp_path, "counts", counts_rows([30, 20, 5, 4]))
    table = F.findings_table(ctx(tmp_path))
    md = F.findings_markdown(table)
    assert md.startswith("# Findings") and "**holds**: 1" in md
    assert md.count("\n| ") == len(table) + table["study"].nunique()  # one line per row + one header per study
    html = F.findings_html(table)
    assert html.count("<tr title=") == len(table) and ">holds</b>" in html


def models_rows(gender_counts, pitch_counts, d_ffn=256):
    rows = []
    for prop, counts in (("gender", gender_counts), ("pitch", pitch_counts), ("phone_type", [50, 50])):
        for layer, n in enumerate(counts):
            rows.append({"upstream": UP, "layer": layer, "property": prop, "d_ffn": d_ffn, "n_group_neurons": n,
                         "n_property_neurons": n, "share_property_neurons": n / d_ffn, "silhouette_mds": 0.1})
    return rows


def test_gender_pitch_neurons(tmp_path):
    write(tmp_path, "models", models_rows([0, 3], [1, 2]))
    by = {r["task"]: r for r in F.gender_pitch_neurons(ctx(tmp_path))}
    assert by["gender"]["verdict"] == "holds" and by["gender"]["measured"] == pytest.approx(100 * 3 / 256)
    assert by["pitch"]["verdict"] == "does not hold" and "layer 1" in by["pitch"]["detail"]
    write(tmp_path, "models", [r for r in models_rows([0, 3], [1, 2]) if r["property"] != "pitch"])
    assert {r["task"]: r["verdict"] for r in F.gender_pitch_neurons(ctx(tmp_path))}["pitch"] == "not testable"


def test_convexity_range(tmp_path):
    write(tmp_path, "convexity", convexity_rows("phone", [10, 22, 15]) + convexity_rows("word", [18, 20, 23]))
    by = {r["task"]: r for r in F.convexity_range(ctx(tmp_path))}
    assert by["phone"]["verdict"] == "holds" and by["phone"]["measured"] == pytest.approx(12.0)
    assert by["word"]["verdict"] == "does not hold"  # 5 points < 10
    write(tmp_path, "convexity", convexity_rows("phone", [10, 22, 15]))
    assert {r["task"]: r["verdict"] for r in F.convexity_range(ctx(tmp_path))}["word"] == "not testable"


def test_edit_visible_needs_three_points_on_phone_type(tmp_path):
    write(tmp_path, "editing", editing_rows(remove=0.30, random=0.40))
    assert verdicts(F.edit_visible(ctx(tmp_path))) == ["holds", "holds"]
    write(tmp_path, "editing", editing_rows(remove=0.38, random=0.40, half=0.002))  # disjoint CIs, but 2 points
    assert verdicts(F.edit_visible(ctx(tmp_path))) == ["does not hold", "does not hold"]
    assert set(verdicts(F.remove_vs_random(ctx(tmp_path)))) == {"holds"}  # the seed claim itself has no margin
    write(tmp_path, "editing", editing_rows(task="gender", entry="gender"))  # no phone-type removal
    r = one(F.edit_visible(ctx(tmp_path)))
    assert r["verdict"] == "not testable" and "phone_type" in r["detail"]
