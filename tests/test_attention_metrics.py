"""Unit tests of the attention-head metrics, categories, relation maps and pruning ranks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from speechdissect.attention import metrics as am
from speechdissect.attention import ranking as rk
from speechdissect.attention import relations as rel


def uniform(T: int) -> np.ndarray:
    return np.full((T, T), 1.0 / T)


def vertical(T: int, key: int = 2) -> np.ndarray:
    A = np.zeros((T, T))
    A[:, key] = 1.0
    return A


# --------------------------------------------------------------------------- metrics


def test_uniform_map():
    T = 7
    A = uniform(T)
    assert am.globalness(A) == pytest.approx(math.log(T))
    assert am.verticality(A) == pytest.approx(-math.log(T))
    # sum_{q,k} |q-k| = (T^3 - T) / 3
    assert am.diagonality(A) == pytest.approx(-((T**3 - T) / 3) / T / T**2)
    assert am.max_weight(A) == pytest.approx(1.0 / T)


def test_identity_map():
    T = 6
    A = np.eye(T)
    assert am.globalness(A) == pytest.approx(0.0)
    assert am.diagonality(A) == pytest.approx(0.0)
    assert am.verticality(A) == pytest.approx(-math.log(T))  # mean row is uniform
    assert am.max_weight(A) == pytest.approx(1.0)


def test_vertical_map():
    T = 5
    A = vertical(T, key=2)
    assert am.verticality(A) == pytest.approx(0.0)
    assert am.globalness(A) == pytest.approx(0.0)
    # sum_q |q - 2| for q = 0..4 is 6
    assert am.diagonality(A) == pytest.approx(-6 / T**2)


def test_hand_computed_small_map():
    A = np.array([[0.5, 0.5], [0.25, 0.75]])
    h0 = math.log(2)
    h1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert am.globalness(A) == pytest.approx((h0 + h1) / 2)
    m = np.array([0.375, 0.625])
    assert am.verticality(A) == pytest.approx(float((m * np.log(m)).sum()))
    assert am.diagonality(A) == pytest.approx(-(0.5 + 0.25) / 4)


def test_batched_maps_match_single():
    rng = np.random.default_rng(0)
    stack = rng.random((2, 3, 6, 6))
    stack /= stack.sum(-1, keepdims=True)
    out = am.map_metrics(stack)
    for name, values in out.items():
        assert values.shape == (2, 3)
        single = getattr(am, name)(stack[1, 2])
        assert values[1, 2] == pytest.approx(float(single))


def test_head_metrics_streams_over_lengths():
    acc = am.HeadMetrics()
    # Layer 0: head 0 uniform, head 1 identity; layer 1: head 0 vertical, head 1 uniform.
    for T in (4, 9):
        stack = np.stack([np.stack([uniform(T), np.eye(T)]), np.stack([vertical(T, 1), uniform(T)])]).astype(np.float16)
        acc.update(stack)
    assert acc.n_utterances == 2
    df = acc.table()
    assert list(df.columns) == ["layer", "head", "globalness", "verticality", "diagonality", "max_weight", "category"]
    assert list(zip(df["layer"], df["head"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    g = df.set_index(["layer", "head"])
    assert g.loc[(0, 0), "globalness"] == pytest.approx((math.log(4) + math.log(9)) / 2, rel=1e-5)
    assert g.loc[(0, 1), "globalness"] == pytest.approx(0.0, abs=1e-6)
    assert g.loc[(1, 0), "verticality"] == pytest.approx(0.0, abs=1e-6)
    assert g.loc[(0, 1), "diagonality"] == pytest.approx(0.0, abs=1e-6)
    assert g.loc[(0, 1), "category"] == "diagonal"
    assert g.loc[(1, 0), "category"] == "vertical"
    assert g.loc[(0, 0), "category"] == "global"


def test_head_metrics_merge_equals_sequential():
    rng = np.random.default_rng(1)
    stacks = []
    for T in (5, 8, 6):
        s = rng.random((2, 2, T, T))
        stacks.append(s / s.sum(-1, keepdims=True))
    seq, a, b = am.HeadMetrics(), am.HeadMetrics(), am.HeadMetrics()
    for s in stacks:
        seq.update(s)
    a.update(stacks[0])
    b.update(stacks[1])
    b.update(stacks[2])
    merged = a.merge(b).table()
    pd.testing.assert_frame_equal(merged, seq.table())


def test_head_metrics_rejects_shape_change():
    acc = am.HeadMetrics()
    acc.update(np.full((1, 2, 3, 3), 1 / 3))
    with pytest.raises(ValueError):
        acc.update(np.full((1, 3, 3, 3), 1 / 3))


def test_category_assignment_on_constructed_table():
    # ranks (0 = best) per metric, descending values:
    # globalness:  h0 > h1 > h2 > h3   -> ranks 0 1 2 3
    # verticality: h1 > h3 > h0 > h2   -> ranks 2 0 3 1
    # diagonality: h2 > h3 > h1 > h0   -> ranks 3 2 0 1
    table = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "head": [0, 1, 0, 1],
            "globalness": [4.0, 3.0, 2.0, 1.0],
            "verticality": [-3.0, -1.0, -4.0, -2.0],
            "diagonality": [-4.0, -3.0, -1.0, -2.0],
        }
    )
    cats = am.categorize(table)
    # h0: min rank 0 in globalness -> global; h1: rank 0 in verticality -> vertical
    # h2: rank 0 in diagonality -> diagonal; h3: rank 1 in verticality and in diagonality
    #     -> tie, verticality listed first -> vertical
    assert cats.tolist() == ["global", "vertical", "diagonal", "vertical"]


def test_category_ties_in_values_follow_table_order():
    table = pd.DataFrame(
        {
            "layer": [0, 0],
            "head": [0, 1],
            "globalness": [1.0, 1.0],  # tie: head 0 gets rank 0, head 1 rank 1
            "verticality": [0.0, 0.0],  # tie: same
            "diagonality": [-1.0, 0.0],  # head 1 rank 0
        }
    )
    assert am.categorize(table).tolist() == ["global", "diagonal"]


# --------------------------------------------------------------------------- relation maps


PHONES = ("AA", "B", "S")


def test_uniform_attention_gives_zero_relation():
    acc = rel.PhoneRelations(PHONES)
    labels1 = ["AA", "AA", "B", "sil", "B", "AA"]
    labels2 = ["S", "S", "AA", "AA"]
    for labels in (labels1, labels2):
        T = len(labels)
        acc.update(np.broadcast_to(uniform(T), (2, 3, T, T)), labels)
    P = acc.relation()
    assert P.shape == (2, 3, 3, 3)
    finite = ~np.isnan(P)
    assert np.allclose(P[finite], 0.0)
    # S and B never share an utterance: P_U = 0 there, so P is NaN
    assert np.isnan(P[..., 1, 2]).all() and np.isnan(P[..., 2, 1]).all()
    C = acc.concentration()
    assert C.shape == (2, 3, 3)
    assert np.allclose(C, 0.0)


def test_relation_map_hand_computed():
    labels = ["AA", "AA", "B"]
    T = 3
    A = np.eye(T)  # each frame attends to itself
    acc = rel.PhoneRelations(("AA", "B"))
    acc.update(A[None, None], labels)
    obs = acc.observed()[0, 0]
    # P'[AA,AA] = (1/3) * 2, P'[B,B] = 1/3, off-diagonal 0
    assert np.allclose(obs, [[2 / 3, 0], [0, 1 / 3]])
    uni = acc.uniform()
    assert np.allclose(uni, np.outer([2, 1], [2, 1]) / 9)
    P = acc.relation()[0, 0]
    assert P[0, 0] == pytest.approx((2 / 3 - 4 / 9) / (4 / 9))
    assert P[0, 1] == pytest.approx(-1.0)
    assert P[1, 1] == pytest.approx((1 / 3 - 1 / 9) / (1 / 9))
    C = acc.concentration()[0, 0]
    assert C[0] == pytest.approx((P[0, 0] + P[1, 0]) / 2)


def test_relation_vectorised_matches_loop():
    rng = np.random.default_rng(3)
    T, M = 7, 3
    A = rng.random((T, T))
    A /= A.sum(1, keepdims=True)
    y = rng.integers(0, M, T)
    Y = rel.one_hot([PHONES[i] for i in y], PHONES)
    obs, _ = rel.relation_sums(A, Y)
    loop = np.zeros((M, M))
    for q in range(T):
        for k in range(T):
            loop[y[q], y[k]] += A[q, k] / T
    assert np.allclose(obs, loop)


def test_relation_label_length_mismatch():
    acc = rel.PhoneRelations(PHONES)
    with pytest.raises(ValueError, match="frame labels"):
        acc.update(np.full((1, 1, 3, 3), 1 / 3), ["AA", "B"])


# --------------------------------------------------------------------------- ranking / masks


@pytest.fixture
def head_table() -> pd.DataFrame:
    L, H = 3, 4
    rng = np.random.default_rng(7)
    layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
    return pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": head.ravel(),
            "globalness": rng.random(L * H),
            "verticality": -rng.random(L * H),
            "diagonality": -rng.random(L * H),
            "max_weight": rng.random(L * H),
        }
    )


@pytest.mark.parametrize("metric", rk.RANKINGS)
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.7, 1.0])
def test_mask_removes_rounded_fraction(head_table, metric, fraction):
    ranking = rk.rank_heads(head_table, metric, seed=3)
    mask = rk.head_mask(ranking, fraction, 3, 4)
    assert mask.shape == (3, 4)
    assert int((mask == 0).sum()) == int(math.floor(fraction * 12 + 0.5))


def test_masks_are_nested_and_follow_direction(head_table):
    ranking = rk.rank_heads(head_table, "globalness")
    assert ranking["score"].is_monotonic_decreasing  # most global removed first
    masks = rk.head_masks(ranking, [0.25, 0.5, 0.75], 3, 4)
    assert np.all(masks[0.5] <= masks[0.25]) and np.all(masks[0.75] <= masks[0.5])
    top = ranking.iloc[0]
    assert masks[0.25][int(top["layer"]), int(top["head"])] == 0
    low = rk.rank_heads(head_table, "globalness", remove_first="low")
    assert low["score"].is_monotonic_increasing
    assert rk.rank_heads(head_table, "diagonality")["score"].is_monotonic_increasing


def test_random_ranking_is_seeded(head_table):
    a = rk.rank_heads(head_table, "random", seed=5)
    b = rk.rank_heads(head_table, "random", seed=5)
    c = rk.rank_heads(head_table, "random", seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["layer", "head"]].equals(c[["layer", "head"]])
    assert sorted(zip(a["layer"], a["head"])) == sorted(zip(head_table["layer"], head_table["head"]))


def test_n_removed_rounds_half_up():
    assert rk.n_removed(0.5, 3) == 2
    assert rk.n_removed(0.35, 10) == 4
    assert rk.n_removed(0.3, 144) == 43
    with pytest.raises(ValueError):
        rk.n_removed(1.5, 10)


def test_unknown_ranking(head_table):
    with pytest.raises(ValueError, match="unknown head ranking"):
        rk.rank_heads(head_table, "entropy")
