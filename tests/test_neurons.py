"""Unit tests of speechdissect.neurons: sampling, top-k, probabilities, property neurons, geometry, masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechdissect.neurons import geometry, masks, probability, property as prop, sampling


# ----------------------------------------------------------------------------- fixtures

CLASS = {"AA": "vowel", "IY": "vowel", "M": "voiced", "Z": "voiced", "S": "unvoiced", "T": "unvoiced", "sil": "silence", "spn": "silence"}


def label_table(utts: dict[str, tuple[list[str], str]]) -> pd.DataFrame:
    """Frame-level label table from utterance -> (phone per frame, gender)."""
    recs = []
    for u, (phones, gender) in utts.items():
        for t, p in enumerate(phones):
            recs.append((u, t, p, CLASS[p], u.split("-")[0], gender))
    return pd.DataFrame.from_records(recs, columns=["utterance", "frame", "phone", "phone_class", "speaker", "gender"])


def random_corpus(n_utts: int = 30, d: int = 64, seed: int = 0):
    """Random label/pitch tables and a float16 activation matrix aligned with them."""
    rng = np.random.default_rng(seed)
    phones = [p for p in CLASS if p not in ("spn",)]
    utts = {}
    for i in range(n_utts):
        seq = []
        for _ in range(rng.integers(3, 9)):
            seq += [phones[rng.integers(len(phones))]] * int(rng.integers(1, 6))
        utts[f"{i % 5}-1-{i:04d}"] = (seq, "M" if i % 5 < 2 else "F")
    labels = label_table(utts)
    pg = rng.choice(["low", "mid", "high", ""], size=len(labels))
    pitch = labels[["utterance", "frame"]].assign(pitch_group=pg)
    acts = rng.standard_normal((len(labels), d)).astype(np.float16)
    return labels, pitch, acts


# ----------------------------------------------------------------------------- sampling


def test_middle_frame_sampling():
    phones = ["sil", "sil", "AA", "AA", "AA", "AA", "S", "M", "M", "M", "spn", "AA", "AA"]
    labels = label_table({"1-1-0000": (phones, "M"), "2-1-0000": (["AA", "AA", "Z"], "F")})
    pitch = labels[["utterance", "frame"]].assign(pitch_group=["", "", "low", "", "mid", "", "", "high", None, np.nan, "", "mid", "low", "high", "low", ""])
    s = sampling.sample_middle_frames(labels, pitch)
    # runs: AA 2..5 -> 3, S 6..6 -> 6, M 7..9 -> 8, AA 11..12 -> 11 ; second utt AA 0..1 -> 0, Z 2 -> 2
    assert s["frame"].tolist() == [3, 6, 8, 11, 0, 2]
    assert s["row"].tolist() == [3, 6, 8, 11, 13, 15]
    assert s["phone"].tolist() == ["AA", "S", "M", "AA", "AA", "Z"]
    assert s["gender"].tolist() == ["M"] * 4 + ["F"] * 2
    assert s["pitch_group"].tolist() == ["", "", "", "mid", "high", ""]  # NaN / None / '' -> ''
    assert s["n_frames"].tolist() == [4, 1, 3, 2, 2, 1]


def test_segments_split_at_utterance_and_frame_gap():
    labels = label_table({"1-1-0000": (["AA", "AA"], "M"), "1-1-0001": (["AA", "AA", "AA"], "M")})
    seg = sampling.phone_segments(labels)
    assert seg["start_row"].tolist() == [0, 2] and seg["mid_row"].tolist() == [0, 3]
    gap = labels.drop(index=3).reset_index(drop=True)  # frames 0, 2 of second utterance
    assert len(sampling.phone_segments(gap)) == 3


def test_pitch_misalignment_is_an_error():
    labels = label_table({"1-1-0000": (["AA", "S"], "M")})
    bad = pd.DataFrame({"utterance": ["1-1-0000", "1-1-0000"], "frame": [1, 0], "pitch_group": ["low", ""]})
    with pytest.raises(ValueError, match="not aligned"):
        sampling.sample_middle_frames(labels, bad)


# ----------------------------------------------------------------------------- top-k


def test_topk_uses_absolute_values():
    x = np.array([[0.1, -5.0, 2.0, 0.3], [1.0, 0.0, -0.5, 4.0]], dtype=np.float16)
    assert probability.topk_indices(x, 2).tolist() == [[1, 2], [0, 3]]
    assert probability.topk_mask(x, 1).tolist() == [[False, True, False, False], [False, False, False, True]]


def test_topk_ties_go_to_lower_index():
    x = np.array([[1.0, 1.0, 1.0, 1.0, 0.0], [0.0, -2.0, 2.0, 2.0, 3.0], [np.nan, 0.1, 0.2, np.nan, 0.3]])
    assert probability.topk_indices(x, 2).tolist() == [[0, 1], [1, 4], [2, 4]]
    assert probability.topk_indices(x, 5).shape == (3, 5)


def test_topk_matches_stable_sort_reference():
    rng = np.random.default_rng(2)
    x = rng.integers(-4, 5, size=(200, 40)).astype(np.float16)  # many ties
    for k in (1, 3, 17, 40):
        ref = np.sort(np.argsort(-np.abs(x.astype(np.float32)), axis=1, kind="stable")[:, :k], axis=1)
        np.testing.assert_array_equal(probability.topk_indices(x, k), ref)


def test_tau_and_chance_level():
    assert probability.n_active(3072) == 31
    assert probability.n_active(50) == 1  # 0.5 rounds half up
    assert probability.n_active(10) == 1  # at least one
    assert probability.chance_level(3072) == pytest.approx(31 / 3072)


# ----------------------------------------------------------------------------- probabilities


def test_probabilities_constructed_example():
    d = 4
    sample = pd.DataFrame(
        {
            "row": [0, 1, 2, 3],
            "phone": ["AA", "AA", "AA", "S"],
            "phone_class": ["vowel", "vowel", "vowel", "unvoiced"],
            "gender": ["M", "F", "M", "F"],
            "pitch_group": ["low", "", "high", ""],
        }
    )
    acts = np.array([[9, 0, 0, 0], [0, -9, 0, 0], [9, 0, 0, 0], [0, 0, 0, 9]], dtype=np.float16)
    out = probability.activation_probabilities(acts, sample, k=1, progress=False)
    p, idx = out["phone"]
    assert idx["phone"].tolist() == ["AA", "S"] and idx["count"].tolist() == [3, 1]
    np.testing.assert_allclose(p, [[2 / 3, 1 / 3, 0, 0], [0, 0, 0, 1]])
    assert p.dtype == np.float32
    p, idx = out["phone_gender"]
    assert list(zip(idx["condition"], idx["phone"], idx["count"])) == [("F", "AA", 1), ("F", "S", 1), ("M", "AA", 2)]
    np.testing.assert_allclose(p, [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    p, idx = out["phone_pitch"]  # unvoiced frames excluded from the pitch condition only
    assert list(zip(idx["condition"], idx["phone"])) == [("low", "AA"), ("high", "AA")]
    np.testing.assert_allclose(p, [[1, 0, 0, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 100_000])
def test_streaming_equals_in_memory(tmp_path, chunk_size):
    labels, pitch, acts = random_corpus()
    sample = sampling.sample_middle_frames(labels, pitch)
    path = tmp_path / "ffn_00.npy"
    np.save(path, acts)
    mm = np.load(path, mmap_mode="r")
    streamed = probability.activation_probabilities(mm, sample, fraction=0.05, chunk_size=chunk_size, progress=False)
    # in memory, the obvious way: full top-k mask of the sampled rows, then group means
    k = probability.n_active(acts.shape[1], 0.05)
    active = probability.topk_mask(acts[sample["row"].to_numpy()], k)
    for cond, col in probability.CONDITIONS.items():
        p, idx = streamed[cond]
        key = sample["phone"] if col is None else sample[col] + "|" + sample["phone"]
        for i, r in idx.iterrows():
            want = r["phone"] if col is None else f"{r['condition']}|{r['phone']}"
            sel = (key == want).to_numpy()
            assert sel.sum() == r["count"]
            np.testing.assert_allclose(p[i], active[sel].mean(axis=0), rtol=0, atol=1e-6)
    # path input and the single-condition wrapper agree too
    p1, i1 = probability.activation_probability(str(path), sample, "phone_gender", fraction=0.05, progress=False)
    np.testing.assert_array_equal(p1, streamed["phone_gender"][0])
    pd.testing.assert_frame_equal(i1, streamed["phone_gender"][1])


def test_long_table_round_trip():
    labels, pitch, acts = random_corpus(n_utts=5, d=16)
    sample = sampling.sample_middle_frames(labels, pitch)
    p, idx = probability.activation_probability(acts, sample, "phone_pitch", k=2, progress=False)
    long = probability.to_long(p, idx, layer=3)
    assert len(long) == p.size and set(long["layer"]) == {3}
    p2, idx2 = probability.from_long(long.drop(columns="layer"), d_ffn=16)
    np.testing.assert_array_equal(p, p2)
    pd.testing.assert_frame_equal(idx, idx2)


# ----------------------------------------------------------------------------- property neurons


def phone_table(d: int = 200):
    """Phone-condition table: 2 vowels, 2 voiced, 2 unvoiced consonants; baseline = 2/200 = 1 %."""
    index = pd.DataFrame(
        {
            "condition_type": "phone",
            "condition": "",
            "phone": ["AA", "IY", "M", "Z", "S", "T"],
            "phone_class": ["vowel", "vowel", "voiced", "voiced", "unvoiced", "unvoiced"],
            "count": 10,
        }
    )
    p = np.zeros((6, d), dtype=np.float32)
    p[[0, 1], 0] = 0.5  # neuron 0: all vowels only -> vowel group neuron, property neuron
    p[[0, 1, 2, 3], 1] = 0.5  # neuron 1: vowels and voiced -> group neuron of both, NOT a property neuron
    p[[4, 5], 2] = 0.5  # neuron 2: unvoiced only
    p[0, 3] = 0.5  # neuron 3: one vowel of two -> score 0.5 < 0.8
    p[:, 4] = 0.01  # neuron 4: exactly at chance (2/200 = 0.01) is not > baseline
    return p, index


def test_group_and_property_neurons():
    p, index = phone_table()
    pn = prop.property_neurons(p, index, "phone_type")
    assert np.flatnonzero(pn.group["vowel"]).tolist() == [0, 1]
    assert np.flatnonzero(pn.group["voiced"]).tolist() == [1]
    assert np.flatnonzero(pn.group["unvoiced"]).tolist() == [2]
    assert np.flatnonzero(pn.unique["vowel"]).tolist() == [0]
    assert not pn.unique["voiced"].any()
    assert np.flatnonzero(pn.mask).tolist() == [0, 2]
    assert pn.scores["vowel"][3] == pytest.approx(0.5)
    assert pn.sets()["all"] == {0, 2}
    assert pn.n_rows == {"vowel": 2, "voiced": 2, "unvoiced": 2}


def test_sigma_inclusive_and_baseline_parameter():
    d = 100
    index = pd.DataFrame({"condition_type": "phone_gender", "condition": ["M"] * 5 + ["F"] * 5, "phone": list("ABCDE") * 2, "phone_class": "vowel", "count": 3})
    p = np.zeros((10, d), dtype=np.float32)
    p[:4, 0] = 0.2  # 4 of 5 male rows -> score 0.8 -> group neuron at sigma 0.8
    p[:, 1] = 0.05  # every row: group neuron of M and F -> not a gender property neuron
    pn = prop.property_neurons(p, index, "gender")
    assert np.flatnonzero(pn.group["M"]).tolist() == [0, 1]
    assert np.flatnonzero(pn.mask).tolist() == [0]
    assert not prop.property_neurons(p, index, "gender", sigma=0.9).group["M"][0]
    assert not prop.property_neurons(p, index, "gender", baseline=0.05).group["F"][1]


@pytest.mark.parametrize("sigma", [1e-12, 1e-9, 0.05])
def test_tiny_sigma_makes_no_group_neurons_of_an_empty_group_or_of_silent_neurons(sigma):
    """With sigma <= the 1e-9 tolerance every neuron used to be a group neuron of every group, even an empty one."""
    d = 10
    index = pd.DataFrame({"condition_type": "phone_pitch", "condition": ["low"] * 3 + ["high"] * 3,   # no "mid" row
                          "phone": list("ABC") * 2, "phone_class": "vowel", "count": 3})
    p = np.zeros((6, d), dtype=np.float32)
    p[0, 0] = 0.5        # neuron 0: meaningful in one low row
    p[3:, 1] = 0.5       # neuron 1: in every high row
    p[:, 2] = 0.5        # neuron 2: everywhere
    with pytest.warns(UserWarning, match="group 'mid' has no rows"):
        pn = prop.property_neurons(p, index, "pitch", sigma=sigma, baseline=0.1)
    assert pn.n_rows == {"low": 3, "mid": 0, "high": 3}
    assert not pn.group["mid"].any() and not pn.unique["mid"].any()
    assert np.flatnonzero(pn.group["low"]).tolist() == ([0, 2] if sigma <= 1 / 3 else [2])
    assert np.flatnonzero(pn.group["high"]).tolist() == [1, 2]
    # neurons 3..9 fire nowhere: group neurons of no group; neuron 2 of both non-empty groups: no property neuron
    assert np.flatnonzero(pn.any_group).tolist() == [0, 1, 2]
    assert np.flatnonzero(pn.mask).tolist() == [0, 1]


def test_summary_tables_and_masks():
    p, index = phone_table()
    g_index = pd.DataFrame({"condition_type": "phone_gender", "condition": ["M", "F"], "phone": "AA", "phone_class": "vowel", "count": 5})
    g = np.zeros((2, p.shape[1]), dtype=np.float32)
    g[0, [0, 5]] = 0.5  # male: neurons 0 and 5
    tables = {"phone": (p, index), "phone_gender": (g, g_index)}
    res = prop.layer_property_neurons({0: tables, 1: tables}, properties=("phone_type", "gender"))
    counts = prop.summary_counts(res)
    row = counts.query("layer == 0 and property == 'phone_type' and group == 'all'").iloc[0]
    assert row["n_property_neurons"] == 2 and row["n_group_neurons"] == 3
    ov = prop.summary_overlaps(res)
    r = ov.query("layer == 1").iloc[0]
    assert (r["a"], r["b"], r["intersection"], r["union"]) == ("phone_type", "gender", 1, 3)
    assert r["jaccard"] == pytest.approx(1 / 3)
    m = prop.property_masks(res, ["phone_type", "gender"])
    assert np.flatnonzero(m[0]).tolist() == [0, 2, 5]
    m2 = prop.masks_from_json(prop.to_json(res), p.shape[1], ["phone_type", "gender"])
    np.testing.assert_array_equal(m2[1], m[1])
    nt = prop.neuron_table(res)
    assert set(nt.query("layer == 0 and property == 'phone_type'")["neuron"]) == {0, 1, 2}


# ----------------------------------------------------------------------------- geometry


def _geometry_case():
    """12 phone rows in 3 classes; class k fires above chance (0.01) on neurons 3k..3k+2, with varied strength."""
    rng = np.random.default_rng(1)
    index = pd.DataFrame({"condition_type": "phone", "condition": "", "phone": [f"P{i}" for i in range(12)],
                          "phone_class": ["vowel"] * 4 + ["voiced"] * 4 + ["unvoiced"] * 4, "count": 5})
    p = rng.uniform(0, 0.009, (12, 12))  # below chance everywhere ...
    for k in range(3):
        p[4 * k:4 * k + 4, 3 * k:3 * k + 3] = rng.uniform(0.02, 0.9, (4, 3))  # ... except the class's own neurons
    p[:, 11] = 0.01  # exactly at chance: never counted (p > baseline is strict)
    return p.astype(np.float32), index


def test_binary_row_vectors():
    p, _ = _geometry_case()
    x = geometry.row_vectors(p, baseline=0.01)
    assert x.shape == (12, 9)  # neurons 9..11 never pass the baseline in any row: dropped
    np.testing.assert_array_equal(x, np.repeat(np.eye(3), 4, axis=0).repeat(3, axis=1))
    assert geometry.row_vectors(p, neurons=np.arange(12) >= 6, baseline=0.01).shape == (12, 3)  # set first, then any-row filter
    np.testing.assert_array_equal(geometry.row_vectors(p, representation="probability"), p.astype(np.float64))
    with pytest.raises(ValueError, match="baseline"):
        geometry.row_vectors(p)
    with pytest.raises(ValueError, match="representation"):
        geometry.row_vectors(p, representation="counts", baseline=0.01)


def test_geometry_deterministic_and_separates_groups():
    p, index = _geometry_case()
    c1, s1 = geometry.layer_geometry(p, index, "phone_type", seed=3, baseline=0.01)
    c2, s2 = geometry.layer_geometry(p, index, "phone_type", seed=3, baseline=0.01)
    pd.testing.assert_frame_equal(c1, c2)
    assert s1 == s2
    assert (s1["representation"], s1["n_set"], s1["n_neurons"]) == ("binary", 12, 9)
    # identical binary vectors within a class: the classes are 3 points of the map, silhouette exactly 1
    assert s1["silhouette_mds"] == pytest.approx(1.0, abs=1e-4) and s1["silhouette_vectors"] == pytest.approx(1.0)
    for _, pts in c1.groupby("group"):
        np.testing.assert_allclose(pts[["mds_1", "mds_2"]].to_numpy(), pts[["mds_1", "mds_2"]].to_numpy()[:1].repeat(len(pts), 0), atol=1e-3)
    # the probability representation sees the strength differences: separated, but not perfectly
    _, s_prob = geometry.layer_geometry(p, index, "phone_type", seed=3, representation="probability")
    assert s_prob["n_neurons"] == 12 and 0 < s_prob["silhouette_vectors"] < 1
    # a neuron set of only one class's neurons cannot tell the other two classes apart
    _, s_one = geometry.layer_geometry(p, index, "phone_type", neurons=np.arange(3), baseline=0.01)
    assert s_one["n_neurons"] == 3 and s_one["silhouette_mds"] < s1["silhouette_mds"]
    _, s_empty = geometry.layer_geometry(p, index, "phone_type", neurons=np.zeros(12, dtype=bool), baseline=0.01)
    assert np.isnan(s_empty["silhouette_mds"]) and s_empty["n_neurons"] == 0
    _, s_none = geometry.layer_geometry(p, index, "phone_type", neurons=np.arange(9, 12), baseline=0.01)  # none above chance
    assert s_none["n_set"] == 3 and s_none["n_neurons"] == 0 and np.isnan(s_none["silhouette_mds"])
    coords, scores = geometry.geometry_tables({0: {"phone": (p, index)}}, properties=("phone_type",),
                                              neuron_sets={"all": None, "first3": {0: np.arange(12) < 3}}, progress=False, baseline=0.01)
    assert len(scores) == 2 and len(coords) == 24 and {"mds_1", "mds_2", "group"} <= set(coords.columns)


# ----------------------------------------------------------------------------- masks


def test_masks_sparsity_exact_and_protection():
    rng = np.random.default_rng(0)
    scores = {0: rng.uniform(size=100), 1: rng.uniform(size=37)}
    protect = {0: scores[0] < 0.2, 1: np.zeros(37, dtype=bool)}
    for method in ("norm", "protected_norm", "random"):
        m = masks.prune_mask(method, scores, 0.3, protect=protect, seed=4)
        assert [int((~m[l]).sum()) for l in (0, 1)] == [30, 11]  # round(0.3 * 37) = 11
    norm = masks.norm_prune_mask(scores, 0.3)
    assert np.array_equal(np.sort(np.flatnonzero(~norm[0])), np.sort(np.argsort(scores[0])[:30]))
    prot = masks.protected_norm_prune_mask(scores, 0.3, protect=protect)
    assert prot[0][protect[0]].all()  # protected kept although they have the lowest norms
    assert scores[0][~prot[0]].max() < scores[0][prot[0] & ~protect[0]].min()  # the rest pruned by norm
    rnd = masks.random_prune_mask(scores, 0.3, protect=protect, seed=4)
    assert rnd[0][protect[0]].all()
    assert np.array_equal(rnd[0], masks.random_prune_mask({0: 100}, 0.3, protect=protect, seed=4)[0])
    assert not np.array_equal(rnd[0], masks.random_prune_mask(scores, 0.3, protect=protect, seed=5)[0])
    with pytest.raises(ValueError, match="unprotected"):
        masks.protected_norm_prune_mask(scores, 0.9, protect=protect)
    with pytest.warns(UserWarning):
        m = masks.protected_norm_prune_mask(scores, 0.9, protect=protect, strict=False)
    assert m[0][protect[0]].all()
    assert masks.mask_sparsity(masks.remove_neurons_mask({0: protect[0]}))[0] == pytest.approx(protect[0].mean())
    assert all(np.array_equal(a, b) for a, b in zip(masks.mask_from_json(masks.mask_to_json(prot)).values(), prot.values()))


def test_random_removal_matches_per_layer_counts():
    ref = masks.remove_neurons_mask({0: np.arange(50) < 7, 1: np.zeros(50, dtype=bool), 2: np.arange(50) % 5 == 0})
    r0 = masks.random_removal_mask(ref, seed=3)
    assert [int((~r0[l]).sum()) for l in range(3)] == [7, 0, 10]
    assert all(np.array_equal(r0[l], masks.random_removal_mask(ref, seed=3)[l]) for l in range(3))  # reproducible
    r1 = masks.random_removal_mask(ref, seed=3, draw=1)
    assert [int((~r1[l]).sum()) for l in range(3)] == [7, 0, 10] and not np.array_equal(r0[2], r1[2])
    assert not np.array_equal(r0[0], ref[0])


def test_neuron_norms():
    w1 = np.array([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]])
    w2 = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(masks.neuron_norms(w1, w2, criterion="fc1", p=2), [5, 1, 1])
    np.testing.assert_allclose(masks.neuron_norms(w1, w2, criterion="fc2", p=2), [1, 0, 2])
    np.testing.assert_allclose(masks.neuron_norms(w1, w2, criterion="product", p=2), [5, 0, 2])
    np.testing.assert_allclose(masks.neuron_norms(w1, w2, np.array([0.0, 0.0, 2.0]), p=2), [np.sqrt(26), 1, 3])
    np.testing.assert_allclose(masks.neuron_norms(w1, w2, criterion="fc1", p=1), [7, 1, 1])


def test_default_norm_is_the_authors_l1_score():
    """score_i = ||W1[i,:]||_1 + |b1[i]| + ||W2[:,i]||_1 on a hand-made layer; the lowest are pruned, same count per layer."""
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self, w1, b1, w2):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, 4), nn.Linear(4, 2)
            with torch.no_grad():
                self.fc1.weight.copy_(torch.tensor(w1))
                self.fc1.bias.copy_(torch.tensor(b1))
                self.fc2.weight.copy_(torch.tensor(w2))
                self.fc2.bias.zero_()

    w1 = [[3.0, -4.0], [0.5, 0.5], [-2.0, 0.0], [0.0, 2.0]]  # L1 rows 7, 1, 2, 2
    b1 = [0.0, -0.5, 0.0, 0.0]
    w2 = [[0.0, 1.0, 0.5, -3.0], [0.0, -1.0, 0.5, 0.0]]  # L1 columns 0, 2, 1, 3
    model = nn.Sequential(Layer(w1, b1, w2), Layer(w1, [0.0, 1.0, 0.0, 9.0], w2))
    scores = masks.model_neuron_norms(model)
    np.testing.assert_allclose(scores[0], [7.0, 3.5, 3.0, 5.0])  # 7+0+0, 1+.5+2, 2+0+1, 2+0+3
    np.testing.assert_allclose(scores[1], [7.0, 4.0, 3.0, 14.0])
    np.testing.assert_allclose(masks.model_neuron_norms(model, p=2)[0], np.sqrt([25, 0.5 + 0.25 + 2, 4 + 0.5, 4 + 9]))
    m = masks.prune_mask("norm", scores, 0.5)
    assert m[0].tolist() == [True, False, False, True] and m[1].tolist() == [True, False, False, True]
    m = masks.prune_mask("norm", scores, 0.25)  # one per layer: the lowest score of each layer
    assert (~m[0]).nonzero()[0].tolist() == [2] and (~m[1]).nonzero()[0].tolist() == [2]
    # under L2 the ranking differs (neuron 1 is the weakest): the default must be L1
    assert (~masks.prune_mask("norm", masks.model_neuron_norms(model, p=2), 0.25)[0]).nonzero()[0].tolist() == [1]


def test_physical_removal_equals_zeroing():
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 24)
            self.fc2 = nn.Linear(24, 8)

        def forward(self, x):
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))

    torch.manual_seed(0)
    model = nn.Sequential(Layer(), Layer()).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    scores = masks.model_neuron_norms(model)
    assert sorted(scores) == [0, 1] and scores[0].shape == (24,)
    mask = masks.prune_mask("norm", scores, 0.25)
    zeroed = masks.zero_model_ffn(__import__("copy").deepcopy(model), mask)
    pruned = masks.prune_model_ffn(__import__("copy").deepcopy(model), mask)
    assert masks.ffn_dims(pruned) == {0: 18, 1: 18}
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(zeroed(x), pruned(x), rtol=0, atol=1e-12)
        assert not torch.allclose(zeroed(x), model(x))
    # a pruned state dict loads into a fresh model once its FFNs are resized
    fresh = nn.Sequential(Layer(), Layer()).double()
    masks.resize_ffn_to_state_dict(fresh, pruned.state_dict())
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), pruned(x), rtol=0, atol=0)
    # single-layer API keeps dtype / grad flags
    fc1, fc2 = nn.Linear(4, 6), nn.Linear(6, 4, bias=False)
    keep = np.array([True, False, True, True, False, True])
    n1, n2 = masks.apply_ffn_mask(fc1, fc2, keep)
    assert (n1.out_features, n2.in_features, n2.bias) == (4, 4, None)
    torch.testing.assert_close(n2.weight, fc2.weight[:, torch.from_numpy(keep)])
    with pytest.raises(ValueError, match="shape"):
        masks.apply_ffn_mask(fc1, fc2, keep[:4])


# ----------------------------------------------------------------------------- editing / pruning summaries


def _docs():
    """results.json documents of one upstream: known scores per (task, variant, seed)."""
    base = {"original": 0.9, "edit-remove_gender": 0.6, "edit-random_gender": 0.85, "edit-random_gender_r1": 0.87,
            "ffn-norm_0.5": 0.7, "ffn-protected_norm_0.5": 0.8, "ffn-norm_0.2": 0.88}
    docs = []
    for task in ("gender", "speaker_linear_utter"):
        for variant, score in base.items():
            params = {"stored": 1000 if variant == "original" or variant.startswith("edit") else 600, "effective": 600 if "0.5" in variant else 900}
            runs = []
            for seed, eps in enumerate((-0.01, 0.0, 0.01)):
                run = {"upstream": "mini", "variant": variant, "task": task, "metric": "acc", "higher_is_better": True,
                       "seed": seed, "score": score + eps, "upstream_latency_ms": 10.0 if variant.startswith("ffn") else 12.0}
                if task == "speaker_linear_utter":
                    run["score_by_gender"] = {"M": score + eps - (0.2 if variant == "edit-remove_gender" else 0.0), "F": score + eps}
                runs.append(run)
            docs.append({"variant_spec": {"parameters": params}, "runs": runs})
    return docs


def test_variant_info():
    from speechdissect.neurons.editing import variant_info

    assert variant_info("edit-random_gender-F_r2") | {} == {"study": "editing", "condition": "random", "entry": "gender-F", "draw": 2,
                                                            "method": None, "sparsity": None}
    assert variant_info("edit-remove_phone_type")["entry"] == "phone_type"
    assert (variant_info("ffn-protected_norm_0.25")["method"], variant_info("ffn-protected_norm_0.25")["sparsity"]) == ("protected_norm", 0.25)
    assert variant_info("heads-globalness_0.5")["study"] is None and variant_info("original")["sparsity"] == 0.0


def test_editing_and_pruning_tables():
    from speechdissect.neurons.editing import editing_figure, editing_table, pruning_figure, pruning_table, runs_table
    from speechdissect.plots import plt

    runs = runs_table(_docs())
    masks_tsv = pd.DataFrame({"mask": ["remove_gender", "remove_gender", "random_gender", "random_gender"], "n_pruned": [5, 3, 5, 3]})
    ed = editing_table(runs, masks_tsv)
    g = ed[ed.task == "gender"].set_index("condition")
    assert list(g.index) == ["original", "remove", "random"] and set(g["entry"]) == {"gender"}
    assert g.loc["remove", "mean"] == pytest.approx(0.6) and g.loc["remove", "delta"] == pytest.approx(-0.3)
    assert g.loc["random", "n"] == 6 and g.loc["random", "mean"] == pytest.approx(0.86)  # two draws x three seeds pooled
    assert g.loc["original", "ci_low"] < 0.9 < g.loc["original", "ci_high"]
    assert list(g["n_neurons_removed"]) == [0, 8, 8]
    s = ed[ed.task == "speaker_linear_utter"].set_index("condition")
    assert s.loc["remove", "delta_by_gender_M"] == pytest.approx(-0.5) and s.loc["remove", "delta_by_gender_F"] == pytest.approx(-0.3)
    pr = pruning_table(runs)
    assert set(pr["method"]) == {"norm", "protected_norm"}
    norm = pr[(pr.task == "gender") & (pr.method == "norm")]
    assert list(norm["sparsity"]) == [0.0, 0.2, 0.5] and norm["mean"].to_numpy() == pytest.approx([0.9, 0.88, 0.7])
    assert list(norm["effective_params"]) == [900, 900, 600] and list(norm["stored_params"]) == [1000, 600, 600]
    assert norm["delta"].to_numpy() == pytest.approx([0.0, -0.02, -0.2])
    for fig in (editing_figure(ed), pruning_figure(pr), editing_figure(ed.iloc[:0]), pruning_figure(pr.iloc[:0])):
        plt.close(fig)
