"""Per-head attention metrics of Yang, Liu & Lee (Interspeech 2020).

An attention map ``A`` is a ``T x T`` array whose row ``q`` is the distribution
over keys ``k`` that query frame ``q`` attends to (rows sum to 1). Three scalar
summaries place every head on the axes the paper uses to explain what heads do:

Globalness    ``G = E_u[(1/T) sum_q H(A[q, :])]``
    mean row entropy (natural log): high when each query spreads its attention
    over the whole utterance (uniform map: ``log T``; identity map: 0).
Verticality   ``V = E_u[-H((1/T) sum_q A[q, :])]``
    negative entropy of the mean row: high (at most 0) when every query looks at
    the same few keys, i.e. the map is made of vertical stripes.
Diagonality   ``D = E_u[-(1/T^2) sum_q sum_k |q - k| A[q, k]]``
    minus the mean query-key distance, normalised by ``T``: high (at most 0)
    when attention stays close to the diagonal, i.e. looks at neighbours.

``E_u`` is the plain mean over utterances (every utterance weighs the same,
whatever its length), as in the paper.

The functions on single maps accept any leading batch shape ``[..., T, T]`` so
the same code scores one map or a whole ``[n_layers, n_heads, T, T]`` stack.
:class:`HeadMetrics` streams over utterances of varying ``T`` and returns the
per-head table with a category and the max-weight baseline score.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import xlogy

__all__ = [
    "METRICS",
    "CATEGORIES",
    "row_entropy",
    "globalness",
    "verticality",
    "diagonality",
    "max_weight",
    "map_metrics",
    "categorize",
    "HeadMetrics",
]

#: Metric columns of the head table, in the order used to break category ties.
METRICS: tuple[str, ...] = ("globalness", "verticality", "diagonality")
#: Category names, aligned with :data:`METRICS`.
CATEGORIES: tuple[str, ...] = ("global", "vertical", "diagonal")


def _check_maps(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"attention maps must have shape [..., T, T], got {A.shape}")
    if not np.issubdtype(A.dtype, np.floating) or A.dtype == np.float16:
        # float16 caches lose precision in the entropy sums; compute in float32 at least.
        A = A.astype(np.float32)
    return A


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy (nats) along ``axis`` with ``0 log 0 = 0``."""
    return -xlogy(p, p).sum(axis=axis)


def row_entropy(A: np.ndarray) -> np.ndarray:
    """Entropy (nats) of every row of ``A`` — the spread of each query's attention.

    Returns shape ``A.shape[:-1]``.
    """
    A = _check_maps(A)
    return _entropy(A, axis=-1)


def globalness(A: np.ndarray) -> np.ndarray:
    """Mean row entropy of one map (or of each map in a batch ``[..., T, T]``).

    High for heads that spread attention over the whole utterance: a uniform map
    scores ``log T``, an identity (or any one-hot-row) map scores 0.
    """
    return row_entropy(A).mean(axis=-1)


def verticality(A: np.ndarray) -> np.ndarray:
    """Negative entropy of the query-averaged attention distribution.

    High (0 at most) when all queries attend to the same keys (vertical stripes);
    a uniform map scores ``-log T``.
    """
    A = _check_maps(A)
    return -_entropy(A.mean(axis=-2), axis=-1)


@lru_cache(maxsize=64)
def _abs_offsets(T: int) -> np.ndarray:
    """``|q - k|`` for a ``T x T`` map, cached because utterance lengths repeat."""
    r = np.arange(T, dtype=np.float64)
    out = np.abs(r[:, None] - r[None, :])
    out.setflags(write=False)
    return out


def diagonality(A: np.ndarray) -> np.ndarray:
    """Minus the mean query-key distance, ``-(1/T^2) sum |q-k| A[q,k]``.

    High (0 at most) for heads that look at neighbouring frames; the identity map
    scores 0. Dividing by ``T^2`` (not ``T``) keeps the value on the scale of a
    fraction of the utterance, so utterances of different lengths average fairly.
    """
    A = _check_maps(A)
    T = A.shape[-1]
    dist = _abs_offsets(T).astype(A.dtype, copy=False)
    return -np.einsum("...qk,qk->...", A, dist) / float(T * T)


def max_weight(A: np.ndarray) -> np.ndarray:
    """Mean over queries of the largest attention weight of the row.

    This is the "confidence" baseline of Voita et al. (2019): a head that puts
    most of each row on one key is treated as important. Averaging the row
    maxima (rather than taking one global maximum) keeps a single spike from
    deciding the score.
    """
    A = _check_maps(A)
    return A.max(axis=-1).mean(axis=-1)


def map_metrics(A: np.ndarray) -> dict[str, np.ndarray]:
    """All per-map scores at once: ``globalness``, ``verticality``, ``diagonality``, ``max_weight``.

    Each value has shape ``A.shape[:-2]`` (a 0-d array for a single map).
    """
    A = _check_maps(A)
    return {
        "globalness": globalness(A),
        "verticality": verticality(A),
        "diagonality": diagonality(A),
        "max_weight": max_weight(A),
    }


def categorize(table: pd.DataFrame) -> pd.Series:
    """Assign each head (row) the category of the metric in which it ranks best.

    For each metric the heads are sorted in descending order and a head's rank
    is its position in that list (0 = highest value). The head's category is the
    metric with the smallest rank, mapped ``globalness -> global``,
    ``verticality -> vertical``, ``diagonality -> diagonal``.

    Ties are broken deterministically:

    * equal metric values: the stable sort keeps table order, so the head that
      comes first in ``table`` (layer-major, then head, for :class:`HeadMetrics`)
      gets the better rank;
    * equal ranks in two or three metrics: the first metric in :data:`METRICS`
      wins (global before vertical before diagonal).

    Returns a Series of category names aligned with ``table.index``.
    """
    missing = [m for m in METRICS if m not in table.columns]
    if missing:
        raise KeyError(f"metrics table lacks column(s) {missing}; expected {list(METRICS)}")
    n = len(table)
    ranks = np.empty((n, len(METRICS)), dtype=np.int64)
    for j, m in enumerate(METRICS):
        values = table[m].to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            raise ValueError(f"metric {m!r} has NaN values; cannot rank heads")
        order = np.argsort(-values, kind="stable")
        ranks[order, j] = np.arange(n)
    best = np.argmin(ranks, axis=1)  # argmin returns the first minimum: global < vertical < diagonal
    return pd.Series(np.asarray(CATEGORIES, dtype=object)[best], index=table.index, name="category")


class HeadMetrics:
    """Streaming accumulator of the per-head metrics over utterances.

    Feed one ``[n_layers, n_heads, T, T]`` stack per utterance (``T`` may vary,
    float16 memory maps are fine); memory stays at one layer of one utterance.
    :meth:`table` returns the mean over utterances per head.

    Parameters
    ----------
    renormalize
        Divide every row by its sum before scoring. Caches store float16
        probabilities whose rows sum to 1 only up to ~1e-3; renormalising keeps
        the entropies exact. All-zero rows (padding) are left at zero.
    """

    columns: tuple[str, ...] = ("globalness", "verticality", "diagonality", "max_weight")

    def __init__(self, renormalize: bool = True) -> None:
        self.renormalize = renormalize
        self.n_utterances = 0
        self._sums: dict[str, np.ndarray] | None = None
        self._shape: tuple[int, int] | None = None

    def _prepare(self, A: np.ndarray) -> np.ndarray:
        A = np.asarray(A, dtype=np.float32)
        if self.renormalize:
            s = A.sum(axis=-1, keepdims=True)
            A = np.divide(A, s, out=np.zeros_like(A), where=s > 0)
        return A

    def update(self, stack: np.ndarray) -> None:
        """Add one utterance's attention stack ``[n_layers, n_heads, T, T]``."""
        if stack.ndim != 4 or stack.shape[-1] != stack.shape[-2]:
            raise ValueError(f"expected an attention stack [n_layers, n_heads, T, T], got shape {stack.shape}")
        L, H = stack.shape[:2]
        if self._shape is None:
            self._shape = (L, H)
            self._sums = {c: np.zeros((L, H), dtype=np.float64) for c in self.columns}
        elif self._shape != (L, H):
            raise ValueError(f"stack has {L} layers x {H} heads, earlier stacks had {self._shape[0]} x {self._shape[1]}")
        assert self._sums is not None
        for layer in range(L):  # one layer at a time bounds memory at H*T*T floats
            scores = map_metrics(self._prepare(stack[layer]))
            for c in self.columns:
                self._sums[c][layer] += scores[c]
        self.n_utterances += 1

    def merge(self, other: "HeadMetrics") -> "HeadMetrics":
        """Fold another accumulator (e.g. from a parallel shard) into this one."""
        if other._sums is None:
            return self
        if self._sums is None:
            self._shape = other._shape
            self._sums = {c: v.copy() for c, v in other._sums.items()}
        else:
            if self._shape != other._shape:
                raise ValueError(f"cannot merge accumulators of shapes {self._shape} and {other._shape}")
            for c in self.columns:
                self._sums[c] += other._sums[c]
        self.n_utterances += other.n_utterances
        return self

    def means(self) -> dict[str, np.ndarray]:
        """Per-head means over utterances, each ``[n_layers, n_heads]``."""
        if self._sums is None or self.n_utterances == 0:
            raise ValueError("HeadMetrics has seen no utterances; call update() first")
        return {c: v / self.n_utterances for c, v in self._sums.items()}

    def table(self) -> pd.DataFrame:
        """One row per head: ``layer, head, globalness, verticality, diagonality, max_weight, category``.

        Rows are layer-major then head, which is also the tie-break order of
        :func:`categorize`.
        """
        means = self.means()
        assert self._shape is not None
        L, H = self._shape
        layer, head = np.meshgrid(np.arange(L), np.arange(H), indexing="ij")
        df = pd.DataFrame({"layer": layer.ravel(), "head": head.ravel()})
        for c in self.columns:
            df[c] = means[c].ravel()
        df["category"] = categorize(df)
        return df
