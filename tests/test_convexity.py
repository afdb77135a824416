"""Graph convexity: known answers, edge cases, and equality with nnconvexity."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from speechdissect.convexity import (
    ConvexityResult,
    graph_convexity,
    knn_graph,
    path_scores,
    sample_pairs,
)


def blobs(n_per=60, dim=5, sep=20.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_per, dim))
    b = rng.normal(size=(n_per, dim)) + sep
    return np.concatenate([a, b]).astype(np.float32), np.repeat([0, 1], n_per)


def two_moons(n=300, noise=0.08, seed=0):
    rng = np.random.default_rng(seed)
    h = n // 2
    t1 = rng.uniform(0, np.pi, h)
    t2 = rng.uniform(0, np.pi, n - h)
    a = np.c_[np.cos(t1), np.sin(t1)]
    b = np.c_[1 - np.cos(t2), 0.5 - np.sin(t2)]
    x = np.concatenate([a, b]) + rng.normal(scale=noise, size=(n, 2))
    return x, np.repeat([0, 1], [h, n - h])


def test_separated_convex_blobs_score_100():
    x, y = blobs()
    r = graph_convexity(x, y, n_neighbors=5, max_paths=500, seed=0)
    assert isinstance(r, ConvexityResult)
    assert r.score == pytest.approx(100.0)
    assert r.per_class == {0: pytest.approx(100.0), 1: pytest.approx(100.0)}
    assert r.n_paths == 1000 and r.n_unreachable == 0


def test_curved_but_connected_classes_are_graph_convex():
    # two moons are not convex in Euclidean space but are along the kNN graph
    x, y = two_moons()
    assert graph_convexity(x, y, n_neighbors=10, max_paths=1000, seed=0).score > 99.0


def checkerboard(n=800, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 4, size=(n, 2))
    return x, (np.floor(x[:, 0]) + np.floor(x[:, 1])).astype(int) % 2


def test_interleaved_classes_score_clearly_below_100():
    # checkerboard: same-class cells are joined only through other cells
    x, y = checkerboard()
    board = graph_convexity(x, y, n_neighbors=8, max_paths=2000, seed=0)
    assert 40.0 < board.score < 80.0
    # alternating stripes: a path between stripes must cross the other class
    rng = np.random.default_rng(2)
    xs = rng.uniform(0, 1, size=(600, 2))
    ys = np.floor(xs[:, 0] * 6).astype(int) % 2
    assert graph_convexity(xs, ys, n_neighbors=8, max_paths=2000).score < 80.0
    # random labels: about half of every path is out of class
    yr = rng.integers(0, 2, len(x))
    assert graph_convexity(x, yr, n_neighbors=8, max_paths=2000).score < 65.0


def test_disconnected_graph_scores_unreachable_pairs_zero():
    # one class in two far clusters; each cluster a chain with growing gaps, so
    # with k=2 each cluster is connected and the two are separate components
    pos = np.cumsum(1.0 + 0.1 * np.arange(10))
    chain = np.c_[pos, np.zeros(10)]
    x = np.concatenate([chain, chain + 1000.0])
    y = np.zeros(20, dtype=int)
    r = graph_convexity(x, y, n_neighbors=2, max_paths=10_000, seed=0)
    # all 20*19 ordered pairs; the 2*10*10 cross pairs are unreachable (0),
    # the rest stay in the class (1)
    assert r.n_paths == 380
    assert r.n_unreachable == 200
    assert r.score == pytest.approx(100.0 * 180 / 380)


def test_path_scores_hand_checked_chain():
    # a chain 0-1-2-3-4 on a line, labels A A B A A (k=1 -> path graph)
    x = np.array([[0.0], [1.0], [2.1], [3.3], [4.6]])
    codes = np.array([0, 0, 1, 0, 0])
    g = knn_graph(x, n_neighbors=1).graph
    assert g.nnz == 8  # 4 undirected edges
    src = np.array([0, 0, 1, 4, 3])
    dst = np.array([1, 4, 3, 0, 1])
    cls = codes[src]
    s = path_scores(g, src, dst, cls, codes)
    # 0->1 edge: 1; 0->4 interior 1,2,3: 2/3; 1->3 interior 2: 0; 4->0: 2/3; 3->1: 0
    np.testing.assert_allclose(s, [1.0, 2 / 3, 0.0, 2 / 3, 0.0])


def test_string_labels_keyed_by_original_values():
    x, y = blobs(n_per=30)
    names = np.where(y == 0, "aa", "zz")
    r = graph_convexity(x, names.tolist(), n_neighbors=5, max_paths=200, seed=0)
    assert set(r.per_class) == {"aa", "zz"}
    assert r.score == pytest.approx(100.0)
    d = r.to_dict()
    assert d["per_class"] == {"aa": pytest.approx(100.0), "zz": pytest.approx(100.0)}
    # non-contiguous integer labels too
    r2 = graph_convexity(x, np.where(y == 0, 7, -3), n_neighbors=5, max_paths=200)
    assert set(r2.per_class) == {7, -3}


def test_singleton_class_is_nan_and_excluded():
    x, y = blobs(n_per=20)
    y = y.copy()
    y[0] = 5  # a class of one point: no pair
    r = graph_convexity(x, y, n_neighbors=4, max_paths=100)
    assert math.isnan(r.per_class[5]) and r.n_paths_per_class[5] == 0
    assert not math.isnan(r.score)
    assert r.to_dict()["per_class"]["5"] is None


def test_deterministic_for_a_seed():
    x, y = checkerboard(n=500)
    a = graph_convexity(x, y, n_neighbors=6, max_paths=300, seed=11)
    b = graph_convexity(x, y, n_neighbors=6, max_paths=300, seed=11)
    c = graph_convexity(x, y, n_neighbors=6, max_paths=300, seed=12)
    assert a == b
    assert a.score != c.score  # another sample of pairs


def test_sample_pairs_matches_itertools_permutations_order():
    codes = np.array([1, 0, 1, 1, 0, 1])
    s, d, c = sample_pairs(codes, 2, max_paths=1000, seed=0, sampling="fast")
    got = {(int(a), int(b)) for a, b in zip(s, d)}
    idx0, idx1 = [1, 4], [0, 2, 3, 5]
    want = set(itertools.permutations(idx0, 2)) | set(itertools.permutations(idx1, 2))
    assert got == want and len(s) == len(want)
    # the reference's draw: permutation of all ordered pairs on the legacy RNG
    rs = np.random.RandomState(4)
    s, d, c = sample_pairs(codes, 2, max_paths=5, seed=4, sampling="nnconvexity")
    all0 = list(itertools.permutations(idx0, 2))
    pick0 = [all0[i] for i in rs.choice(list(range(len(all0))), 2, replace=False)]
    all1 = list(itertools.permutations(idx1, 2))
    pick1 = [all1[i] for i in rs.choice(list(range(len(all1))), 5, replace=False)]
    assert list(zip(s.tolist(), d.tolist())) == pick0 + pick1


def test_knn_graph_is_union_of_knn_with_duplicates_dropped():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    x[5] = x[6]  # exact duplicate: never an edge (distance 0), as in the reference
    r = knn_graph(x, n_neighbors=3, method="exact")
    g = r.graph
    assert r.method == "exact" and r.n_neighbors == 3
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    want = np.zeros_like(d)
    for i in range(len(x)):
        order = np.lexsort((np.arange(len(x)), d[i]))[:4]  # 3 + itself, ties to lower index
        for j in order:
            if d[i, j] > 0:
                want[j, i] = d[i, j]
    want = np.maximum(want, want.T)
    # same edges; weights equal up to float64 summation order
    np.testing.assert_array_equal(g.toarray() > 0, want > 0)
    np.testing.assert_allclose(g.toarray(), want, rtol=1e-12)
    assert g[5, 6] == 0


@pytest.mark.parametrize("k,max_paths,seed", [(10, 300, 0), (3, 10_000, 1)])
def test_equals_nnconvexity_reference(k, max_paths, seed, monkeypatch):
    import nnconvexity.graph as nng

    # the reference rounds its results to 2 decimals: compare unrounded too
    rng = np.random.default_rng(seed)
    c, n, dim = 4, 100, 8
    means = rng.normal(size=(c, dim)) * 2.0
    y = rng.integers(0, c, n)
    x = (means[y] + rng.normal(size=(n, dim))).astype(np.float32)
    x[-3:] = x[:3]  # duplicates: the reference's zero-distance rule matters
    y[-3:] = y[:3]
    ours = graph_convexity(x, y, n_neighbors=k, max_paths=max_paths, seed=seed, sampling="nnconvexity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(seed)
        ref_score, ref_per_class = nng.compute_graph_convexity(x, y, n_neighbors=k, max_n_paths=max_paths)
        monkeypatch.setattr(nng, "round", lambda v, nd=None: v, raising=False)
        np.random.seed(seed)
        raw_score, raw_per_class = nng.compute_graph_convexity(x, y, n_neighbors=k, max_n_paths=max_paths)
    assert round(ours.score, 2) == ref_score
    assert {k_: round(v, 2) for k_, v in ours.per_class.items()} == ref_per_class
    assert ours.score == pytest.approx(raw_score, abs=1e-9)
    for label, v in raw_per_class.items():
        assert ours.per_class[label] == pytest.approx(v, abs=1e-9)
    if max_paths >= n * n:  # all pairs: any sampling gives the same numbers
        fast = graph_convexity(x, y, n_neighbors=k, max_paths=max_paths, seed=seed + 1)
        assert fast.score == pytest.approx(raw_score, abs=1e-9)


def test_exact_knn_falls_back_to_float64_where_float32_is_not_provably_exact():
    # a far outlier and near-ties: float32 candidate search cannot be trusted
    # everywhere; the rows it cannot prove are recomputed from cdist rows
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6))
    x[0] *= 1e6
    x[1:40] = x[1] + rng.normal(scale=1e-7, size=(39, 6))  # tiny-gap cluster
    r = knn_graph(x, n_neighbors=4, method="exact")
    assert r.n_exact_fallback > 0
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    want = np.zeros_like(d)
    for i in range(len(x)):
        for j in np.lexsort((np.arange(len(x)), d[i]))[:5]:
            if d[i, j] > 0:
                want[j, i] = d[i, j]
    want = np.maximum(want, want.T)
    np.testing.assert_array_equal(r.graph.toarray() > 0, want > 0)


def test_nndescent_candidates_are_reranked_exactly(monkeypatch):
    """The pynndescent branch without numba: a stand-in NNDescent returns
    candidate lists that miss the point itself, repeat an index and pad with
    -1 (all of which pynndescent can do); the graph must still be exact."""
    import sys
    import types

    x, _ = blobs(n_per=40, dim=4, sep=3.0)

    class FakeNNDescent:
        def __init__(self, data, n_neighbors, **kwargs):
            d = ((data[:, None, :] - data[None]) ** 2).sum(-1)
            np.fill_diagonal(d, np.inf)  # no self
            idx = np.argsort(d, axis=1)[:, :n_neighbors].copy()
            idx[:, -1] = idx[:, 0]  # a repeated candidate
            idx[::7, -2] = -1  # unfilled slots
            self.neighbor_graph = (idx, np.take_along_axis(d, idx.clip(0), 1))

    monkeypatch.setitem(sys.modules, "pynndescent", types.SimpleNamespace(NNDescent=FakeNNDescent))
    g_exact = knn_graph(x, n_neighbors=5, method="exact").graph
    g_nnd, m, _, _ = knn_graph(x, n_neighbors=5, method="nndescent", seed=0)
    assert m == "nndescent"
    assert (g_exact != g_nnd).nnz == 0
    # "auto" switches to the approximate candidates above exact_max_n
    m = knn_graph(x, n_neighbors=5, exact_max_n=10).method
    assert m == "nndescent"


@pytest.mark.slow
def test_real_pynndescent_gives_the_exact_graph_on_easy_data():
    # slow only because numba compiles pynndescent on first use (~1-2 min)
    import pynndescent  # noqa: F401

    x, _ = blobs(n_per=150, dim=8, sep=6.0)
    g_exact = knn_graph(x, n_neighbors=5, method="exact").graph
    g_nnd, m, _, _ = knn_graph(x, n_neighbors=5, method="nndescent", seed=0)
    assert m == "nndescent"
    assert (g_exact != g_nnd).nnz == 0


def test_bad_inputs_name_the_problem():
    x, y = blobs(n_per=5)
    with pytest.raises(ValueError, match="one label per row"):
        graph_convexity(x, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        graph_convexity(x[0], y[:1])
    with pytest.raises(ValueError, match="sampling"):
        graph_convexity(x, y, sampling="magic")
    with pytest.raises(ValueError, match="unlabelled frames"):
        graph_convexity(x, ["a"] * 5 + [None] * 5)
    with pytest.raises(ValueError, match="NaN"):
        graph_convexity(np.where(np.arange(10)[:, None] == 3, np.nan, x), y)
    with pytest.raises(ValueError, match="n_neighbors=4"):
        graph_convexity(x, y, n_neighbors=4, graph=knn_graph(x, 3))


def test_graph_reused_across_label_sets():
    x, y = checkerboard(n=300)
    g = knn_graph(x, 6)
    other = (x[:, 0] > 2).astype(int)
    for labels in (y, other):
        assert graph_convexity(x, labels, n_neighbors=6, graph=g) == graph_convexity(x, labels, n_neighbors=6)


def test_exact_graph_reused_across_seeds():
    """layer_convexity reuses one exact graph for the repeats that draw the same units: the seed only draws pairs."""
    x, y = checkerboard(n=300)
    g = knn_graph(x, 6, method="exact")
    for seed in (0, 1, 1002):
        assert graph_convexity(x, y, n_neighbors=6, seed=seed, graph=g) == graph_convexity(x, y, n_neighbors=6, seed=seed)
