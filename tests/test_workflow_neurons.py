"""Neuron stage (rules/neurons.smk): every output of the tiny run checked, plus the figure functions on toy tables.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_CONFIG

CONDITIONS = ["phone", "phone_gender", "phone_pitch"]
GROUPS = {"phone_type": ("phone_class", ["vowel", "voiced", "unvoiced"]),
          "gender": ("condition", ["M", "F"]),
          "pitch": ("condition", ["low", "mid", "high"])}
FIGURES = ["sorted_probabilities", "counts", "silhouette"]


def _neuron_config() -> dict:
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    return cfg, cfg.get("neurons", {}) or {}


def _read_index(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"condition": str, "phone": str, "phone_class": str})


@pytest.fixture(scope="module")
def neuron_run(request):
    """The tiny run's directory, in which ``rule all`` built every neuron output."""
    workdir = request.getfixturevalue("tiny_run")
    cfg, ncfg = _neuron_config()
    props = ncfg.get("properties", list(GROUPS))
    d = workdir / "results" / cfg["analysis_upstreams"][0] / cfg["analysis_corpus"] / "neurons"
    wanted = [d / "figures" / f"{f}.png" for f in [*FIGURES, *(f"mds_{p}" for p in props)]] + [d / "masks" / "masks.tsv"]
    missing = [str(p.relative_to(workdir)) for p in wanted if not p.exists()]
    assert not missing, f"rule all of the tiny run did not build the neuron outputs {missing}"
    return workdir, d, cfg, ncfg


@pytest.mark.workflow
@pytest.mark.slow
def test_probabilities(neuron_run):
    workdir, d, cfg, ncfg = neuron_run
    split = ncfg.get("split", "test")
    meta = json.loads((d / "probabilities" / "meta.json").read_text())
    cache = workdir / "results" / meta["upstream"] / cfg["analysis_corpus"] / "cache" / split
    cmeta = json.loads((cache / "meta.json").read_text())
    n_layers, d_ffn, tau = cmeta["n_layers"], cmeta["d_ffn"], meta["tau"]
    assert (meta["n_layers"], meta["d_ffn"], meta["split"]) == (n_layers, d_ffn, split)
    assert tau == max(1, int(np.floor(ncfg.get("active_fraction", 0.01) * d_ffn + 0.5)))
    assert meta["chance"] == pytest.approx(tau / d_ffn)

    labels = pd.read_parquet(workdir / "results" / cfg["analysis_corpus"] / "labels" / f"{split}.parquet")
    sample = pd.read_csv(d / "probabilities" / "sample.tsv", sep="\t", keep_default_na=False, dtype={"phone": str, "pitch_group": str})
    assert len(sample) == meta["n_sampled"] > 0
    rows = sample["row"].to_numpy()
    assert (labels["phone"].to_numpy()[rows] == sample["phone"].to_numpy()).all()
    assert not set(sample["phone"]) & {"sil", "spn"}
    assert ((sample["start_frame"] + sample["end_frame"]) // 2 == sample["frame"]).all()

    totals = {"phone": len(sample), "phone_gender": len(sample), "phone_pitch": int((sample["pitch_group"] != "").sum())}
    stats = pd.read_csv(d / "probabilities" / "stats.tsv", sep="\t", keep_default_na=False)
    for cond in CONDITIONS:
        probs = np.load(d / "probabilities" / f"{cond}.npy")
        index = _read_index(d / "probabilities" / f"{cond}.tsv")
        assert probs.dtype == np.float32 and probs.shape == (n_layers, len(index), d_ffn)
        assert meta["conditions"][cond] == len(index)
        assert list(index["row"]) == list(range(len(index)))
        assert (index["condition_type"] == cond).all()
        assert index["count"].sum() == totals[cond]
        assert np.all((probs >= 0) & (probs <= 1))
        # exactly tau neurons fire in every frame, so every row's probabilities sum to tau
        np.testing.assert_allclose(probs.sum(axis=2), tau, rtol=1e-5)
        # probabilities are counts over the row's frames
        counts = probs * index["count"].to_numpy()[None, :, None]
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
        s = stats[stats["condition_type"] == cond]
        assert len(s) == n_layers * len(index)
        np.testing.assert_allclose(s["prob_sum"], tau, rtol=1e-5)

    # independent recomputation of the phone table of layer 0 from the raw cache
    acts = np.abs(np.load(cache / "ffn_00.npy").astype(np.float32))[rows]
    top = np.argsort(-acts, axis=1, kind="stable")[:, :tau]
    fired = np.zeros_like(acts, dtype=bool)
    np.put_along_axis(fired, top, True, axis=1)
    probs = np.load(d / "probabilities" / "phone.npy")[0]
    index = _read_index(d / "probabilities" / "phone.tsv")
    for i, phone in enumerate(index["phone"]):
        np.testing.assert_allclose(probs[i], fired[sample["phone"].to_numpy() == phone].mean(axis=0), atol=1e-6)


@pytest.mark.workflow
@pytest.mark.slow
def test_property_neurons_counts_and_overlaps(neuron_run):
    _, d, _, ncfg = neuron_run
    sigma = ncfg.get("sigma", 0.8)
    props = ncfg.get("properties", list(GROUPS))
    meta = json.loads((d / "probabilities" / "meta.json").read_text())
    found = json.loads((d / "property_neurons.json").read_text())
    counts = pd.read_csv(d / "counts.tsv", sep="\t", keep_default_na=False)
    overlaps = pd.read_csv(d / "overlaps.tsv", sep="\t", keep_default_na=False, na_values={"jaccard": [""]})
    neurons = pd.read_csv(d / "neurons.tsv", sep="\t")
    assert sorted(found, key=int) == [str(layer) for layer in range(meta["n_layers"])]
    tables = {c: (np.load(d / "probabilities" / f"{c}.npy"), _read_index(d / "probabilities" / f"{c}.tsv")) for c in CONDITIONS}
    cond_of = {"phone_type": "phone", "gender": "phone_gender", "pitch": "phone_pitch"}
    for layer_key, res in found.items():
        layer = int(layer_key)
        assert sorted(res) == sorted(props)
        for prop, rec in res.items():
            col, groups = GROUPS[prop]
            probs, index = tables[cond_of[prop]]
            assert sorted(rec["group"]) == sorted(groups) == sorted(rec["property"])
            union = set()
            for g in groups:
                # group neurons recomputed from the probabilities: above chance for >= sigma of the group's rows
                mine = probs[layer][index[col].to_numpy() == g]
                expect = np.flatnonzero((mine > meta["chance"]).mean(axis=0) >= sigma - 1e-9) if len(mine) else []
                assert rec["group"][g] == list(expect), (layer, prop, g)
                others = set().union(*(rec["group"][h] for h in groups if h != g))
                assert set(rec["property"][g]) == set(rec["group"][g]) - others
                assert rec["n_rows"][g] == len(mine)
                row = counts[(counts.layer == layer) & (counts.property == prop) & (counts.group == g)].iloc[0]
                assert row.n_group_neurons == len(rec["group"][g]) and row.n_property_neurons == len(rec["property"][g])
                assert len(neurons[(neurons.layer == layer) & (neurons.property == prop) & (neurons.group == g)]) == len(rec["group"][g])
                union |= set(rec["property"][g])
            assert set(rec["all"]) == union
            total = counts[(counts.layer == layer) & (counts.property == prop) & (counts.group == "all")].iloc[0]
            assert total.n_property_neurons == len(rec["all"])
        for _, o in overlaps[(overlaps.layer == layer) & (overlaps.level == "property")].iterrows():
            a, b = set(res[o.a]["all"]), set(res[o.b]["all"])
            assert (o.n_a, o.n_b, o.intersection, o.union) == (len(a), len(b), len(a & b), len(a | b))
    assert set(overlaps["level"]) == {"property", "group"}


@pytest.mark.workflow
@pytest.mark.slow
def test_geometry(neuron_run):
    _, d, _, ncfg = neuron_run
    props = ncfg.get("properties", list(GROUPS))
    sets = ncfg.get("geometry", {}).get("neuron_sets", ["all", "property"])
    meta = json.loads((d / "probabilities" / "meta.json").read_text())
    found = json.loads((d / "property_neurons.json").read_text())
    geometry = pd.read_csv(d / "geometry.tsv", sep="\t")
    coords = pd.read_csv(d / "mds_coords.tsv", sep="\t", keep_default_na=False, na_values={"mds_1": [""], "mds_2": [""]})
    assert len(geometry) == meta["n_layers"] * len(props) * len(sets)
    for col in ("silhouette_mds", "silhouette_vectors"):
        s = geometry[col].dropna()
        assert ((s >= -1) & (s <= 1)).all()
    rep = ncfg.get("geometry", {}).get("representation", "binary")
    assert (geometry["representation"] == rep).all()
    assert (geometry.loc[geometry.neuron_set == "all", "n_set"] == meta["d_ffn"]).all()
    condition = {"phone_type": "phone", "gender": "phone_gender", "pitch": "phone_pitch"}
    from sklearn.metrics import silhouette_score
    for _, g in geometry.iterrows():
        if g.neuron_set == "property":
            assert g.n_set == len(found[str(g.layer)][g.property]["all"])
        pts = coords[(coords.layer == g.layer) & (coords.property == g.property) & (coords.neuron_set == g.neuron_set)]
        assert len(pts) == g.n_rows
        assert set(pts["group"]) <= set(GROUPS[g.property][1])
        if g.neuron_set == "all" and rep == "binary":
            # coordinates = neurons above chance (p > tau / d_ffn) in at least one of the mapped rows
            probs = np.load(d / "probabilities" / f"{condition[g.property]}.npy")[g.layer]
            index = _read_index(d / "probabilities" / f"{condition[g.property]}.tsv")
            col, groups = GROUPS[g.property]
            rows = index[col].astype(str).isin(groups).to_numpy()
            assert g.n_neurons == int((probs[rows] > meta["chance"]).any(axis=0).sum()) <= g.n_set
        if g.n_neurons > 0 and g.n_rows > 1:
            assert pts[["mds_1", "mds_2"]].notna().all().all()
            if 2 <= pts["group"].nunique() < len(pts):  # the silhouette is the one of the 2-D points
                np.testing.assert_allclose(g.silhouette_mds, silhouette_score(pts[["mds_1", "mds_2"]], pts["group"]), atol=1e-4)


@pytest.mark.workflow
@pytest.mark.slow
def test_figures(neuron_run):
    workdir, d, _, ncfg = neuron_run
    props = ncfg.get("properties", list(GROUPS))
    for name in [*FIGURES, *(f"mds_{p}" for p in props)]:
        png, svg = d / "figures" / f"{name}.png", d / "figures" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert "<svg" in svg.read_text()[:2000], svg
    for rule in ("neuron_probabilities", "property_neurons", "neuron_geometry", "neuron_figures", "neuron_masks"):
        assert list((workdir / "results" / "benchmarks" / rule).rglob("*.tsv")), rule


@pytest.mark.workflow
@pytest.mark.slow
def test_masks(neuron_run):
    from speechdissect.neurons.masks import mask_from_json, n_pruned

    _, d, _, ncfg = neuron_run
    mcfg = ncfg.get("masks", {})
    props = ncfg.get("properties", list(GROUPS))
    remove = mcfg.get("remove", props)
    protect_entries = mcfg.get("protect", props)
    methods = mcfg.get("methods", ["norm", "protected_norm", "random"])
    sparsities = mcfg.get("sparsities", [0.1, 0.2, 0.3, 0.4, 0.5])
    meta = json.loads((d / "probabilities" / "meta.json").read_text())
    found = json.loads((d / "property_neurons.json").read_text())
    table = pd.read_csv(d / "masks" / "masks.tsv", sep="\t", keep_default_na=False)
    names = [f"remove_{e.split(':')[0]}" + (f"-{e.split(':')[1]}" if ":" in e else "") for e in remove]
    draws = int(mcfg.get("random_draws", 1))
    randoms = {n.replace("remove_", "random_", 1) + (f"_r{k}" if k else ""): n for n in names for k in range(draws)}
    names += list(randoms)
    names += [f"{m}_{float(s):g}" for m in methods for s in sparsities]
    assert list(dict.fromkeys(table["mask"])) == names

    def neuron_set(entry, layer):
        prop, _, group = entry.partition(":")
        return set(found[str(layer)][prop]["property"][group] if group else found[str(layer)][prop]["all"])

    for name in names:
        mask = mask_from_json((d / "masks" / f"{name}.json").read_text())
        assert sorted(mask) == list(range(meta["n_layers"]))
        rows = table[table["mask"] == name].set_index("layer")
        for layer, keep in mask.items():
            assert keep.dtype == bool and keep.shape == (meta["d_ffn"],)
            pruned = set(np.flatnonzero(~keep).tolist())
            assert rows.loc[layer, "n_pruned"] == len(pruned)
            if name.startswith("remove_"):
                entry = remove[names.index(name)]
                assert pruned == neuron_set(entry, layer)
            elif name in randoms:  # random control: as many neurons per layer as its removal, other neurons
                entry = remove[names.index(randoms[name])]
                assert len(pruned) == len(neuron_set(entry, layer))
                assert rows.loc[layer, "kind"] == "random_remove"
            else:
                method, s = name.rsplit("_", 1)
                protected = set().union(*(neuron_set(e, layer) for e in protect_entries))
                target = n_pruned(meta["d_ffn"], float(s))
                if method.startswith("protected"):
                    assert not pruned & protected
                    assert len(pruned) == min(target, meta["d_ffn"] - len(protected))
                else:
                    assert len(pruned) == target


# ----------------------------------------------------------------------------- figure functions (fast)


def _toy_tables(n_layers=3, d=40, seed=0):
    rng = np.random.default_rng(seed)
    phones = [("AH", "vowel"), ("IY", "vowel"), ("N", "voiced"), ("S", "unvoiced"), ("T", "unvoiced")]
    index = pd.DataFrame({"condition_type": "phone", "condition": "", "phone": [p for p, _ in phones],
                          "phone_class": [c for _, c in phones], "count": [5, 3, 4, 2, 6]})
    probs = rng.dirichlet(np.full(d, 0.1), size=(n_layers, len(phones))).astype(np.float32) * 2
    counts = pd.DataFrame([(layer, prop, g, 3, int(rng.integers(0, 9)), int(rng.integers(0, 5)))
                           for layer in range(n_layers) for prop, (_, gs) in GROUPS.items() for g in [*gs, "all"]],
                          columns=["layer", "property", "group", "n_rows", "n_group_neurons", "n_property_neurons"])
    geometry = pd.DataFrame([(layer, prop, s, 5, d, 0.1, rng.uniform(-1, 1), np.nan if s == "property" else rng.uniform(-1, 1))
                             for layer in range(n_layers) for prop in GROUPS for s in ("all", "property")],
                            columns=["layer", "property", "neuron_set", "n_rows", "n_neurons", "stress", "silhouette_mds", "silhouette_vectors"])
    coords = pd.DataFrame([(layer, "phone_type", "all", p, c, c, *rng.normal(size=2))
                           for layer in range(n_layers) for p, c in phones],
                          columns=["layer", "property", "neuron_set", "phone", "phone_class", "group", "mds_1", "mds_2"])
    return probs, index, counts, geometry, coords


def test_figure_functions_on_toy_tables():
    from matplotlib.figure import Figure

    from speechdissect.neurons.figures import (counts_per_layer, mds_scatter, pick_phone, silhouette_per_layer,
                                               sorted_probabilities, sorted_probability_table)
    from speechdissect.plots import plt

    probs, index, counts, geometry, coords = _toy_tables()
    assert pick_phone(index, "AH") == ("AH", False)
    assert pick_phone(index, "ZH") == ("T", True)  # most frequent phone
    table = sorted_probability_table(probs, index, "IY")
    assert len(table) == probs.shape[0] * probs.shape[2]
    for layer, t in table.groupby("layer"):
        assert np.all(np.diff(t["p"].to_numpy()) <= 0)
        np.testing.assert_allclose(np.sort(t["p"].to_numpy()), np.sort(probs[layer, 1]))
    with pytest.raises(ValueError, match="ZH"):
        sorted_probability_table(probs, index, "ZH")
    figs = [sorted_probabilities(probs, index, "AH", chance=0.05), counts_per_layer(counts, d_ffn=40),
            silhouette_per_layer(geometry), mds_scatter(coords, "phone_type", scores=geometry),
            mds_scatter(coords, "gender"),  # nothing to draw: a note, not an error
            silhouette_per_layer(geometry.assign(silhouette_mds=np.nan, silhouette_vectors=np.nan)),
            silhouette_per_layer(geometry.assign(representation="probability"))]
    for fig in figs:
        assert isinstance(fig, Figure)
        plt.close(fig)
