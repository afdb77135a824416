"""Graph convexity of labelled representations (one layer at a time).

Dorszewski, Tětková & Hansen (MLSP 2024, arXiv:2408.11858) measure how convex
the regions of phones, words and speakers are in each layer of a speech
transformer with the *graph convexity* of Tětková et al. ("On convex decision
regions in deep network representations", Nat. Commun. 2025), whose reference
implementation is ``nnconvexity.graph.compute_graph_convexity`` (PyPI package
``nnconvexity`` 0.1.1). This module computes the same number, faster and in
less memory.

The definition, matched line by line against ``nnconvexity.graph``:

1. **Graph** (``get_nearest_neighbors`` + ``Graph.Weighted_Adjacency``): for
   every point ``i`` take the ``n_neighbors + 1`` points nearest to it in
   Euclidean distance, *counting ``i`` itself* (``distances.nsmallest(n + 1)``
   over the full ``cdist`` row; ties go to the lower index, as pandas'
   ``keep="first"``), drop those at distance exactly 0 (``if val > 0``: the
   point itself and any exact duplicate), and add an edge ``i - j`` weighted by
   the float64 Euclidean distance. The graph is the *union* (not the mutual)
   kNN graph: ``np.maximum(G, G.T)``. Edges carry distances, not unit weights.
   Exact duplicates are therefore never joined directly, and a point with more
   than ``n_neighbors`` duplicates has no edge at all, as in the reference.
2. **Pairs** (``compute_paths``): for each class with ``m`` points, the
   candidate pairs are the ``m (m - 1)`` *ordered* pairs
   ``itertools.permutations(indices, 2)``; ``min(m (m - 1), max_paths)`` of
   them are drawn without replacement.
3. **Path score** (``is_path_in_concept``): the shortest weighted path from
   the first to the second point of a pair scores the fraction of its
   *interior* vertices (endpoints excluded) that carry the class label; a path
   with no interior vertex (an edge) scores 1; an unreachable pair scores 0.
4. **Averages** (``compute_graph_convexity``): per-class score = mean over
   that class's paths × 100; overall score = mean over *all* paths pooled
   (not the mean of the class scores), × 100. A class with fewer than two
   points has no pair: its score is NaN and it adds nothing to the pooled
   mean (the reference gives the same NaN, with a warning).

Differences from the reference, all deliberate:

* The reference rounds every score to 2 decimals; we return full precision
  (round to compare: the two then agree to the last digit whenever the same
  pairs are evaluated).
* The reference's class loop compares the labels to the *enumeration index*
  of ``set(labels)`` (``labels == i``), so it is only right for integer labels
  ``0..C-1``. Here labels may be any hashable values (ints, strings); classes
  are taken in ``np.unique`` order and ``per_class`` is keyed by the original
  values.
* The reference samples from numpy's *global*, unseeded RNG. Here sampling is
  deterministic for ``seed``. ``sampling="nnconvexity"`` reproduces the
  reference's draw exactly: it evaluates the very pairs that
  ``np.random.seed(seed); compute_graph_convexity(X, y)`` evaluates (with ``y``
  encoded ``0..C-1`` in sorted order), at the reference's O(m²) memory cost
  per class (it materialises a permutation of all ordered pairs).
  ``sampling="fast"`` (default) draws the same kind of sample (ordered pairs,
  uniformly, without replacement) with O(max_paths) memory.
* When several paths are *equally* short the reference (igraph) and scipy may
  pick different ones; with real-valued distances this practically only
  happens around exact duplicates.

Why it is faster (the reference is O(N²) in memory and makes one Dijkstra call
and one Python loop per pair):

* kNN: exact brute force in row blocks, never an N × N matrix: float32 BLAS
  on centred data finds ``2 k + 1`` candidates per point, which are re-ranked
  with float64 distances as the reference's ``cdist`` computes them; a
  rigorous float32 error bound proves for each point that no non-candidate
  could have made the cut, and the rare points it cannot prove (near-ties,
  far outliers) are recomputed from full float64 ``cdist`` rows. So the graph
  is the reference's, up to float64 rounding. Above ``exact_max_n`` points,
  candidates come from pynndescent instead (high-recall settings; the
  benchmark reports its recall), because brute force grows as N²; that graph
  is approximate.
* Shortest paths: one ``scipy.sparse.csgraph.dijkstra`` run per *source*
  (``indices=`` a block of sources, ``return_predecessors=True``) serves all
  the pairs that start there; ordered pairs ``(a, b)`` and ``(b, a)`` share
  one run, and each unordered pair is oriented so that few distinct sources
  cover all pairs (greedy vertex cover), since every run costs a whole
  single-source Dijkstra.
* Path scores: the predecessor arrays of all pairs in a block are walked
  simultaneously with numpy (one vectorised step per hop, over the pairs whose
  path is not finished), instead of a Python loop per path and per vertex.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Hashable, Literal, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

__all__ = [
    "ConvexityResult",
    "graph_convexity",
    "knn_graph",
    "KnnGraph",
    "sample_pairs",
    "path_scores",
]

#: Above this many points ``knn="auto"`` takes its candidates from
#: pynndescent. Brute force is exact but O(N²): ~7 s at N = 10k, D = 768 on 2
#: cores, so ~12 min at 100k, where pynndescent's time (about 3x brute force at
#: 10k, growing ~N^1.1) is several times lower. Below this the exact search is
#: never the bottleneck: the per-source Dijkstra runs are (also O(N²)).
EXACT_MAX_N = 100_000

_NO_PRED = -9999  # scipy.sparse.csgraph's "no predecessor" marker


@dataclass(frozen=True)
class ConvexityResult:
    """Graph convexity of one set of representations.

    Attributes
    ----------
    score
        Mean path score over all evaluated paths of all classes, in percent
        (``[0, 100]``); NaN when no class has two points.
    per_class
        Original label value -> mean path score of that class, in percent
        (NaN for a class with fewer than two points).
    n_paths
        Number of (ordered) pairs evaluated in total.
    n_paths_per_class
        Original label value -> number of pairs evaluated for that class.
    n_unreachable
        Pairs whose endpoints are in different connected components (each
        scored 0).
    n_neighbors
        ``k`` of the kNN graph.
    knn_method
        ``"exact"`` or ``"nndescent"``: how the kNN candidates were found.
    sampling
        ``"fast"`` or ``"nnconvexity"``: how pairs were drawn.
    seed
        Seed of the pair sampling (and of pynndescent).
    """

    score: float
    per_class: dict
    n_paths: int
    n_paths_per_class: dict
    n_unreachable: int
    n_neighbors: int
    knn_method: str
    sampling: str
    seed: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (labels become strings, NaN becomes None)."""

        def clean(v):
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, np.generic):
                return clean(v.item())
            return v

        d = asdict(self)
        d["score"] = clean(self.score)
        d["per_class"] = {str(k): clean(v) for k, v in self.per_class.items()}
        d["n_paths_per_class"] = {str(k): int(v) for k, v in self.n_paths_per_class.items()}
        return d


# --------------------------------------------------------------------------- kNN


def _candidates_exact(x32: np.ndarray, n_cand: int, block_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_cand`` nearest points of every row (self included), float32.

    Squared distances ``|x|² + |y|² - 2 x·y`` in float32 BLAS (twice as fast
    as float64 on the same cores), a block of rows at a time so that memory
    stays ``O(block × N)``, never ``N × N``. The diagonal is forced to -1 so
    that a point is always its own candidate whatever the rounding. The
    ranking only picks candidates: the caller re-ranks them in float64 and
    uses ``worst`` (the largest float32 squared distance among each row's
    candidates) to prove that no non-candidate could have made the cut.

    Returns
    -------
    cand, worst
        ``(N, n_cand)`` int64 indices and ``(N,)`` float64.
    """
    n = x32.shape[0]
    sq = np.einsum("ij,ij->i", x32, x32)
    rows = max(1, min(n, block_bytes // (4 * max(n, 1))))
    cand = np.empty((n, n_cand), dtype=np.int64)
    worst = np.full(n, np.inf)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        d = x32[start:stop] @ x32.T
        d *= -2.0
        d += sq[start:stop, None]
        d += sq[None, :]
        d[np.arange(stop - start), np.arange(start, stop)] = -1.0
        if n_cand < n:
            part = np.argpartition(d, n_cand - 1, axis=1)[:, :n_cand]
            worst[start:stop] = np.take_along_axis(d, part, axis=1).max(axis=1)
        else:
            part = np.broadcast_to(np.arange(n), (stop - start, n))
        cand[start:stop] = part
    return cand, worst


def _provably_exact(norms: np.ndarray, dim: int, worst: np.ndarray, kth_sq: np.ndarray) -> np.ndarray:
    """Rows whose float32 candidate search provably missed no neighbour.

    A non-candidate ``j`` of row ``i`` has float32 squared distance
    ``>= worst[i]``. Rounding the centred inputs to float32, float32 dot
    products of length D (error at most ``D u |x||y|`` for any BLAS summation
    order, u the unit roundoff) and three additions make that value wrong by
    less than ``c (|x_i| + |x_j|)²`` with ``c = 1.05 (D + 8) eps`` (eps = 2u).
    So for any radius R, ``j`` with ``|x_j| <= R`` is truly farther than the
    k1-th exact neighbour if ``worst[i] - c (|x_i| + R)² > kth_sq[i]``, and
    ``j`` with ``|x_j| > R`` is if ``(R - |x_i|)² > kth_sq[i]`` with
    ``R > |x_i|`` (triangle inequality). A row is proven if some R among a few
    norm quantiles satisfies both (R = max norm needs only the first), so a
    few outlying points do not void the proof for everyone. ``norms`` are
    the float64 norms of the centred points.
    """
    c = 1.05 * (dim + 8) * float(np.finfo(np.float32).eps)
    kth = kth_sq * (1 + 1e-12)
    ok = np.zeros(norms.shape[0], dtype=bool)
    n_max = norms.max()
    for q in (1.0, 0.999, 0.99, 0.9, 0.5):
        r = float(np.quantile(norms, q)) if q < 1.0 else n_max
        cond = worst - c * (norms + r) ** 2 > kth
        if r < n_max:
            cond &= (r > norms) & ((r - norms) ** 2 > kth)
        ok |= cond
    return ok


def _exact_rows(x64: np.ndarray, rows: np.ndarray, k1: int, block_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k1`` (distance, index)-ordered neighbours of ``rows`` from full
    ``scipy.spatial.distance.cdist`` rows: the reference's own arithmetic,
    used where the float32 candidate search cannot be proven exact."""
    from scipy.spatial.distance import cdist

    n = x64.shape[0]
    nbr = np.empty((rows.size, k1), dtype=np.int64)
    dist = np.empty((rows.size, k1), dtype=np.float64)
    step = max(1, block_bytes // (8 * n))
    idx = np.arange(n)
    for s0 in range(0, rows.size, step):
        r = rows[s0 : s0 + step]
        d = cdist(x64[r], x64)
        order = np.lexsort((np.broadcast_to(idx, d.shape), d), axis=1)[:, :k1]
        nbr[s0 : s0 + r.size] = order
        dist[s0 : s0 + r.size] = np.take_along_axis(d, order, axis=1)
    return nbr, dist


def _candidates_nndescent(x32: np.ndarray, n_cand: int, seed: int) -> np.ndarray:
    """Approximate kNN candidates from pynndescent (imported lazily: numba JIT).

    Settings favour recall over speed: ``n_cand`` (``max(60, 6 k)``)
    neighbours are searched although only ``k + 1`` are kept, more trees and
    iterations than the defaults, and a small convergence threshold. Measured
    at N = 10k, k = 10 (benchmarks/bench_convexity.py): edge recall 0.991 on
    768-dim Gaussian data (the hardest case: high intrinsic dimension; 0.858
    when searching only 2 k + 1), 1.000 on 768-dim data of intrinsic
    dimension 16; about 3x the time of the exact search at that size, plus
    a one-off numba compilation of 1-2 minutes per process.
    """
    from pynndescent import NNDescent

    n = x32.shape[0]
    index = NNDescent(
        x32,
        metric="euclidean",
        n_neighbors=n_cand,
        random_state=seed,
        n_trees=max(8, min(64, 5 + int(round(n**0.25)))),
        n_iters=max(10, int(round(math.log2(n)))),
        max_candidates=max(60, 2 * n_cand),
        delta=0.0005,
        low_memory=True,
        compressed=False,
        verbose=False,
    )
    idx, _ = index.neighbor_graph
    idx = np.asarray(idx, dtype=np.int64)
    # pynndescent may leave -1 for points it could not fill; force self first
    idx = np.where(idx < 0, np.arange(n)[:, None], idx)
    return np.concatenate([np.arange(n)[:, None], idx], axis=1)


class KnnGraph(NamedTuple):
    """Result of :func:`knn_graph`."""

    graph: sp.csr_matrix
    """``(N, N)`` symmetric CSR matrix of float64 Euclidean edge weights."""
    method: str
    """``"exact"`` or ``"nndescent"``."""
    n_exact_fallback: int
    """Rows whose float32 candidate search could not be proven exact and were
    recomputed from full float64 distance rows (``method="exact"`` only)."""
    n_neighbors: int
    """``k``."""


def knn_graph(
    features: np.ndarray,
    n_neighbors: int = 10,
    method: Literal["auto", "exact", "nndescent"] = "auto",
    seed: int = 0,
    exact_max_n: int = EXACT_MAX_N,
    block_bytes: int = 64 << 20,
) -> KnnGraph:
    """Symmetric (union) kNN graph with float64 Euclidean edge weights.

    Exactly the graph of ``nnconvexity.graph.compute_graph_convexity``: the
    ``n_neighbors + 1`` nearest points of each point counting itself (ties to
    the lower index), minus those at distance 0, joined by edges weighted by
    their float64 distance; an edge exists if either end chose the other.

    Parameters
    ----------
    features
        ``(N, D)`` array (any float dtype; distances are computed in float64
        like ``scipy.spatial.distance.cdist``).
    n_neighbors
        ``k``.
    method
        ``"exact"`` (blocked brute force), ``"nndescent"`` (pynndescent
        candidates), or ``"auto"``: exact up to ``exact_max_n`` points.
    seed
        Random state of pynndescent.
    block_bytes
        Memory budget of one block of the brute-force distance matrix.

    Returns
    -------
    KnnGraph
        ``(graph, method, n_exact_fallback, n_neighbors)``. With ``method="exact"`` the
        graph is provably the reference's up to float64 rounding: float32
        candidates (``2 k + 1`` per point) are re-ranked in float64, and any
        point for which a rigorous float32 error bound cannot exclude a
        missed neighbour is recomputed with full ``cdist`` rows.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {x.shape}")
    n = x.shape[0]
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    if method == "auto":
        method = "exact" if n <= exact_max_n else "nndescent"
    if method not in ("exact", "nndescent"):
        raise ValueError(f"unknown kNN method {method!r}: use 'auto', 'exact' or 'nndescent'")
    if n <= 1:
        return KnnGraph(sp.csr_matrix((n, n), dtype=np.float64), method, 0, int(n_neighbors))

    x64 = np.ascontiguousarray(x, dtype=np.float64)
    if not np.isfinite(x64).all():
        raise ValueError("features contain NaN or infinite values: drop or fix those rows first")
    # centring does not change distances but removes the common offset that
    # would otherwise eat float32 precision in |x|² + |y|² - 2 x·y
    mean = x64.mean(axis=0)
    x32 = np.empty(x64.shape, dtype=np.float32)
    norms = np.empty(n)
    step = max(1, (32 << 20) // (8 * x64.shape[1]))
    for s0 in range(0, n, step):  # no second float64 copy of the data
        xc = x64[s0 : s0 + step] - mean
        x32[s0 : s0 + step] = xc
        norms[s0 : s0 + step] = np.sqrt(np.einsum("ij,ij->i", xc, xc))
    del xc
    k1 = min(n_neighbors + 1, n)
    worst = None
    if method == "exact":
        cand, worst = _candidates_exact(x32, min(n, 2 * n_neighbors + 1), block_bytes)
    else:
        cand = _candidates_nndescent(x32, min(n - 1, max(60, 6 * n_neighbors)), seed)
    del x32

    nbr, dist = _rerank(x64, cand, k1)
    n_fallback = 0
    if worst is not None:
        # exact unless some non-candidate's float32 distance could be wrong by
        # enough to beat the k1-th exact one; recompute those rows in full
        unsafe = np.flatnonzero(~_provably_exact(norms, x64.shape[1], worst, dist[:, -1] ** 2))
        if unsafe.size:
            nbr[unsafe], dist[unsafe] = _exact_rows(x64, unsafe, k1, block_bytes)
        n_fallback = int(unsafe.size)

    keep = (dist > 0) & np.isfinite(dist)
    rows_i = np.repeat(np.arange(n), k1)[keep.ravel()]
    cols_j = nbr.ravel()[keep.ravel()]
    w = dist.ravel()[keep.ravel()]
    g = sp.coo_matrix((w, (rows_i, cols_j)), shape=(n, n)).tocsr()
    g = g.maximum(g.T).tocsr()
    g.sort_indices()
    return KnnGraph(g, method, n_fallback, int(n_neighbors))


def _rerank(x64: np.ndarray, cand: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank each row's candidates by exact float64 distance, ties to the lower
    index (pandas ``nsmallest(keep="first")``), and keep the first ``k1``.

    A candidate listed twice (pynndescent output plus the forced self) is
    counted once. Runs in row blocks of at most ~64 MB of differences.
    """
    n, n_c = cand.shape
    k1 = min(k1, n_c)
    rows = max(1, min(n, (64 << 20) // (8 * n_c * x64.shape[1] + 1)))
    nbr = np.empty((n, k1), dtype=np.int64)
    dist = np.empty((n, k1), dtype=np.float64)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        c = cand[start:stop]
        diff = x64[c] - x64[start:stop, None, :]
        d = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        del diff
        order = np.lexsort((c, d), axis=1)
        sc = np.take_along_axis(c, order, axis=1)
        dup = np.zeros(sc.shape, dtype=bool)
        dup[:, 1:] = sc[:, 1:] == sc[:, :-1]  # same index -> same distance -> adjacent
        if dup.any():
            d_sorted = np.take_along_axis(d, order, axis=1)
            d_sorted[dup] = np.inf
            c = sc
            d = d_sorted
            order = np.lexsort((c, d), axis=1)
        top = order[:, :k1]
        nbr[start:stop] = np.take_along_axis(c, top, axis=1)
        dist[start:stop] = np.take_along_axis(d, top, axis=1)
    return nbr, dist


# ------------------------------------------------------------------ sampling


def sample_pairs(
    codes: np.ndarray,
    n_classes: int,
    max_paths: int = 5000,
    seed: int = 0,
    sampling: Literal["fast", "nnconvexity"] = "fast",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ordered same-class pairs, as ``nnconvexity.graph.compute_paths``.

    For each class ``c = 0..n_classes-1`` with sorted member indices
    ``idx`` (``m`` points), pair number ``t`` of
    ``itertools.permutations(idx, 2)`` is ``(idx[a], idx[b])`` with
    ``a = t // (m-1)`` and ``b = t % (m-1)`` shifted past ``a``; the first
    ``min(m (m-1), max_paths)`` numbers of a random draw without replacement
    are decoded this way, without building the list of pairs.

    ``sampling="nnconvexity"``: one ``np.random.RandomState(seed)`` consumed
    class by class with ``permutation(m (m-1))[:n]`` -- exactly what the
    reference's ``np.random.choice(range(L), n, replace=False)`` does on the
    global RNG after ``np.random.seed(seed)``. Memory O(m²) per class.
    ``sampling="fast"``: ``np.random.default_rng(seed).choice(L, n,
    replace=False)``, memory O(n).

    Returns
    -------
    sources, targets, classes
        int64 arrays of equal length, in class order.
    """
    if sampling not in ("fast", "nnconvexity"):
        raise ValueError(f"unknown sampling {sampling!r}: use 'fast' or 'nnconvexity'")
    if max_paths < 0:
        raise ValueError(f"max_paths must be >= 0, got {max_paths}")
    rs = np.random.RandomState(seed) if sampling == "nnconvexity" else None
    rng = np.random.default_rng(seed) if sampling == "fast" else None
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_classes + 1))
    src, dst, cls = [], [], []
    for c in range(n_classes):
        idx = order[bounds[c] : bounds[c + 1]]  # sorted member indices
        m = idx.size
        total = m * (m - 1)
        n = min(total, max_paths)
        if sampling == "nnconvexity":
            flat = rs.permutation(total)[:n]
        elif n == total:
            flat = np.arange(total, dtype=np.int64)
        else:
            flat = rng.choice(total, size=n, replace=False)
        if n == 0:
            continue
        flat = np.asarray(flat, dtype=np.int64)
        a = flat // (m - 1)
        b = flat % (m - 1)
        b = b + (b >= a)
        src.append(idx[a])
        dst.append(idx[b])
        cls.append(np.full(n, c, dtype=np.int64))
    if not src:
        e = np.empty(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    return np.concatenate(src), np.concatenate(dst), np.concatenate(cls)


# --------------------------------------------------------------------- paths


def _orient(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orient unordered pairs so that few distinct vertices are sources.

    Greedy vertex cover of the pair graph: repeatedly take the vertex with the
    most still-uncovered pairs and make it the source of all of them. Each
    distinct source costs one full single-source Dijkstra, so fewer sources is
    directly less time; in an undirected graph the path ``b -> a`` is the path
    ``a -> b`` reversed, with the same interior vertices.
    """
    n_pairs = u.size
    if n_pairs == 0:
        return u, v
    nodes, inv = np.unique(np.concatenate([u, v]), return_inverse=True)
    iu, iv = inv[:n_pairs], inv[n_pairs:]
    n_nodes = nodes.size
    # incidence lists (CSR) of pair ids per node
    ends = np.concatenate([iu, iv])
    pid = np.concatenate([np.arange(n_pairs), np.arange(n_pairs)])
    o = np.argsort(ends, kind="stable")
    ptr = np.searchsorted(ends[o], np.arange(n_nodes + 1))
    inc = pid[o]
    deg = np.diff(ptr).astype(np.int64)
    covered = np.zeros(n_pairs, dtype=bool)
    src = np.empty(n_pairs, dtype=np.int64)
    dst = np.empty(n_pairs, dtype=np.int64)
    heap = [(-int(deg[i]), i) for i in range(n_nodes)]
    heapq.heapify(heap)
    left = n_pairs
    while left:
        negd, i = heapq.heappop(heap)
        if -negd != deg[i]:  # stale entry
            if deg[i] > 0:
                heapq.heappush(heap, (-int(deg[i]), i))
            continue
        if deg[i] == 0:
            continue
        ps = inc[ptr[i] : ptr[i + 1]]
        ps = ps[~covered[ps]]
        covered[ps] = True
        other = np.where(iu[ps] == i, iv[ps], iu[ps])
        src[ps] = nodes[i]
        dst[ps] = nodes[other]
        np.subtract.at(deg, other, 1)
        deg[i] = 0
        left -= ps.size
    return src, dst


def path_scores(
    graph: sp.csr_matrix,
    sources: np.ndarray,
    targets: np.ndarray,
    classes: np.ndarray,
    codes: np.ndarray,
    block_bytes: int = 64 << 20,
    progress: bool = False,
) -> np.ndarray:
    """Score of each pair's shortest path: share of interior vertices in class.

    ``nnconvexity.graph.is_path_in_concept`` on the shortest weighted path from
    ``sources[i]`` to ``targets[i]``: 1 if the path has no interior vertex, 0
    if ``targets[i]`` is unreachable, else (#interior vertices with
    ``codes == classes[i]``) / (#interior vertices).

    Pairs are deduplicated and oriented (see :func:`_orient`), and Dijkstra
    runs once per distinct source on blocks of sources sized to
    ``block_bytes`` (its distance + predecessor output is ``block × N`` ×
    12 bytes). Within a block all predecessor chains advance together, one
    numpy step per hop.
    """
    n = graph.shape[0]
    sources = np.asarray(sources, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    out = np.zeros(sources.size, dtype=np.float64)
    if sources.size == 0:
        return out
    if np.any(sources == targets):
        raise ValueError("a pair has the same source and target")
    # (a, b) and (b, a) are one undirected pair: evaluate once
    lo, hi = np.minimum(sources, targets), np.maximum(sources, targets)
    key = (classes * n + lo) * n + hi
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    src, dst = _orient(lo[first], hi[first])  # keeps the pair order
    u_cls = classes[first]

    order = np.argsort(src, kind="stable")
    src, dst, u_cls = src[order], dst[order], u_cls[order]
    uniq_src, start_idx = np.unique(src, return_index=True)
    start_idx = np.append(start_idx, src.size)
    per_block = max(1, min(uniq_src.size, block_bytes // (12 * n)))
    frac = np.empty(src.size, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)

    blocks = range(0, uniq_src.size, per_block)
    if progress:
        from tqdm import tqdm

        blocks = tqdm(blocks, desc="graph convexity: shortest paths", unit="block")
    for b0 in blocks:
        b1 = min(uniq_src.size, b0 + per_block)
        s_block = uniq_src[b0:b1]
        _, pred = csgraph.dijkstra(
            graph, directed=True, indices=s_block, return_predecessors=True
        )
        p0, p1 = start_idx[b0], start_idx[b1]
        row = np.repeat(np.arange(b1 - b0), np.diff(start_idx[b0 : b1 + 1]))
        s = src[p0:p1]
        c = u_cls[p0:p1]
        flat = pred.ravel()
        base = row * n
        cur = flat[base + dst[p0:p1]].astype(np.int64)
        reachable = cur != _NO_PRED
        interior = np.zeros(cur.size, dtype=np.int64)
        inside = np.zeros(cur.size, dtype=np.int64)
        act = np.flatnonzero(reachable & (cur != s))
        while act.size:
            node = cur[act]
            interior[act] += 1
            inside[act] += codes[node] == c[act]
            nxt = flat[base[act] + node]
            cur[act] = nxt
            act = act[nxt != s[act]]
        f = np.where(interior > 0, inside / np.maximum(interior, 1), 1.0)
        frac[p0:p1] = np.where(reachable, f, 0.0)
        del pred, flat

    # back to the unique-pair order, then to the caller's pair order
    u_frac = np.empty(src.size, dtype=np.float64)
    u_frac[order] = frac
    return u_frac[inv]


# -------------------------------------------------------------------- public


def graph_convexity(
    features: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    n_neighbors: int = 10,
    max_paths: int = 5000,
    seed: int = 0,
    *,
    sampling: Literal["fast", "nnconvexity"] = "fast",
    knn: Literal["auto", "exact", "nndescent"] = "auto",
    exact_max_n: int = EXACT_MAX_N,
    block_bytes: int = 64 << 20,
    progress: bool = False,
    graph: KnnGraph | None = None,
) -> ConvexityResult:
    """Graph convexity (%) of the classes of ``labels`` in ``features``.

    The score of Tětková et al. / Dorszewski et al. as computed by
    ``nnconvexity.graph.compute_graph_convexity`` (see the module docstring
    for the exact definition and the few deliberate differences): build the
    union kNN graph with Euclidean edge weights, draw up to ``max_paths``
    ordered pairs of points per class, and average over all drawn pairs the
    share of each shortest path's interior vertices that stay in the class.

    Parameters
    ----------
    features
        ``(N, D)`` representations (e.g. one layer's frames).
    labels
        ``N`` labels of any hashable type (ints, strings, ...).
    n_neighbors
        ``k`` of the kNN graph (reference default 10).
    max_paths
        Maximum number of pairs per class (reference default 5000).
    seed
        Seed of the pair draw (and of pynndescent): same seed, same result.
    sampling
        ``"fast"`` (default) or ``"nnconvexity"`` to evaluate exactly the
        pairs the reference draws after ``np.random.seed(seed)``.
    knn
        ``"auto"`` (exact up to ``exact_max_n`` points, pynndescent above),
        ``"exact"`` or ``"nndescent"``.
    block_bytes
        Memory budget of one block of kNN distances / Dijkstra output.
    progress
        Show a tqdm bar over the Dijkstra blocks.
    graph
        A :func:`knn_graph` of these ``features`` to reuse (the graph depends
        on the features and ``n_neighbors`` only, not on the labels: compute it
        once per layer for phones, words and speakers). Must have N nodes.

    Returns
    -------
    ConvexityResult
        ``score`` and ``per_class`` in percent, plus path counts.
    """
    x = np.asarray(features)
    lab = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {x.shape}")
    if lab.ndim != 1 or lab.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per row of features: got {lab.shape} for {x.shape[0]} rows"
        )
    try:
        uniq, codes = np.unique(lab, return_inverse=True)
    except TypeError as e:  # e.g. None among strings
        raise ValueError(
            f"labels cannot be sorted ({e}): they mix types, e.g. None for unlabelled frames; "
            "drop those frames before computing convexity"
        ) from None
    codes = codes.astype(np.int64).ravel()
    if graph is None:
        graph = knn_graph(x, n_neighbors, method=knn, seed=seed, exact_max_n=exact_max_n, block_bytes=block_bytes)
    elif (
        not isinstance(graph, KnnGraph)
        or graph.graph.shape != (x.shape[0], x.shape[0])
        or graph.n_neighbors != n_neighbors
    ):
        raise ValueError(
            f"graph must be the KnnGraph of these {x.shape[0]} points with n_neighbors={n_neighbors} "
            "(from knn_graph(features, n_neighbors))"
        )
    graph, method, n_fallback, _ = graph
    src, dst, cls = sample_pairs(codes, len(uniq), max_paths=max_paths, seed=seed, sampling=sampling)
    scores = path_scores(graph, src, dst, cls, codes, block_bytes=block_bytes, progress=progress)

    reachable = _reachable(graph, src, dst)
    counts = np.bincount(cls, minlength=len(uniq))
    sums = np.bincount(cls, weights=scores, minlength=len(uniq))
    per_class, n_per_class = {}, {}
    for c, value in enumerate(uniq):
        key = value.item() if isinstance(value, np.generic) else value
        per_class[key] = float(100.0 * sums[c] / counts[c]) if counts[c] else float("nan")
        n_per_class[key] = int(counts[c])
    score = float(100.0 * scores.mean()) if scores.size else float("nan")
    return ConvexityResult(
        score=score,
        per_class=per_class,
        n_paths=int(scores.size),
        n_paths_per_class=n_per_class,
        n_unreachable=int((~reachable).sum()),
        n_neighbors=int(n_neighbors),
        knn_method=method,
        sampling=sampling,
        seed=int(seed),
        extra={"n_points": int(x.shape[0]), "n_edges": int(graph.nnz // 2), "n_exact_fallback": n_fallback},
    )


def _reachable(graph: sp.csr_matrix, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Whether each pair lies in one connected component."""
    if src.size == 0:
        return np.zeros(0, dtype=bool)
    _, comp = csgraph.connected_components(graph, directed=False)
    return comp[src] == comp[dst]
