"""Head rankings for pruning, and the head masks they induce.

A ranking is a removal order: position 0 is the first head to remove. Pruning
a fraction ``f`` removes the first ``round(f * n_layers * n_heads)`` heads, so
the masks for increasing ``f`` are nested (cumulative removal), which is how
Yang, Liu & Lee (2020) draw their pruning curves.

Direction (which end of a metric is removed first) follows the paper's reading
that global attention matters least and local/focused attention most: Yang et
al. found that removing the most global heads costs little (and removing global
heads can even help), while diagonal heads carry the phonetic detail. The three
metrics are consistent with one "importance" axis — a uniform, global map has
the highest globalness but the lowest verticality and diagonality — so the
defaults remove the *least important* end first:

=============  ================  =============================================
metric         removed first     why
=============  ================  =============================================
globalness     highest values    most global heads are the least useful
verticality    lowest values     least focused on specific keys (closest to uniform)
diagonality    lowest values     least local (farthest from the diagonal)
max_weight     lowest values     least confident heads (Voita et al., 2019 baseline)
random         seeded permutation
=============  ================  =============================================

Pass ``remove_first="high"`` or ``"low"`` to reverse any of them, e.g. to show
that removing the most diagonal heads first hurts the most. Ties in value are
broken by table order (layer-major, then head) through a stable sort.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

__all__ = ["RANKINGS", "DEFAULT_REMOVE_FIRST", "rank_heads", "n_removed", "head_mask", "head_masks"]

Direction = Literal["high", "low"]
#: Names accepted by :func:`rank_heads`.
RANKINGS: tuple[str, ...] = ("globalness", "verticality", "diagonality", "max_weight", "random")
#: Default removal direction per metric (see module docstring).
DEFAULT_REMOVE_FIRST: dict[str, Direction] = {
    "globalness": "high",
    "verticality": "low",
    "diagonality": "low",
    "max_weight": "low",
}


def rank_heads(
    metrics: pd.DataFrame,
    metric: str,
    *,
    remove_first: Direction | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Removal order of all heads by ``metric``.

    Parameters
    ----------
    metrics
        Per-head table with ``layer``, ``head`` and the metric columns (as from
        :meth:`speechdissect.attention.metrics.HeadMetrics.table`).
    metric
        One of :data:`RANKINGS`.
    remove_first
        ``"high"`` removes the largest values first, ``"low"`` the smallest;
        ``None`` uses :data:`DEFAULT_REMOVE_FIRST`. Ignored for ``"random"``.
    seed
        Seed of the ``"random"`` permutation (numpy ``default_rng``).

    Returns
    -------
    DataFrame with ``rank`` (0 = removed first), ``layer``, ``head``, ``score``
    (the metric value; NaN for random), sorted by ``rank``.
    """
    if metric not in RANKINGS:
        raise ValueError(f"unknown head ranking {metric!r}; choose one of {list(RANKINGS)}")
    for col in ("layer", "head"):
        if col not in metrics.columns:
            raise KeyError(f"metrics table lacks column {col!r}")
    n = len(metrics)
    if metric == "random":
        order = np.random.default_rng(seed).permutation(n)
        score = np.full(n, np.nan)
    else:
        if metric not in metrics.columns:
            raise KeyError(f"metrics table lacks column {metric!r}")
        direction = remove_first or DEFAULT_REMOVE_FIRST[metric]
        if direction not in ("high", "low"):
            raise ValueError(f"remove_first must be 'high' or 'low', got {direction!r}")
        score = metrics[metric].to_numpy(dtype=np.float64)
        if np.isnan(score).any():
            raise ValueError(f"metric {metric!r} has NaN values; cannot rank heads")
        order = np.argsort(-score if direction == "high" else score, kind="stable")
    out = pd.DataFrame(
        {
            "rank": np.arange(n),
            "layer": metrics["layer"].to_numpy()[order].astype(int),
            "head": metrics["head"].to_numpy()[order].astype(int),
            "score": score[order],
        }
    )
    return out


def n_removed(fraction: float, n_total: int) -> int:
    """Heads removed at ``fraction``: ``round(fraction * n_total)``, halves rounded up.

    Half-up (not Python's banker's rounding) so that e.g. 0.5 of 3 heads removes
    2; a 1e-9 slack absorbs float error such as ``0.35 * 10 = 3.4999999999999996``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1], got {fraction}")
    return min(n_total, int(np.floor(fraction * n_total + 0.5 + 1e-9)))


def head_mask(ranking: pd.DataFrame, fraction: float, n_layers: int, n_heads: int) -> np.ndarray:
    """``[n_layers, n_heads]`` int8 mask (1 = keep, 0 = removed) after removing the top ``fraction``.

    Removes the first :func:`n_removed` heads of ``ranking`` (from
    :func:`rank_heads`). A layer may lose all of its heads; callers that cannot
    run such a layer must handle it.
    """
    total = n_layers * n_heads
    if len(ranking) != total:
        raise ValueError(f"ranking has {len(ranking)} heads but the model has {n_layers} x {n_heads} = {total}")
    ranked = ranking.sort_values("rank", kind="stable")
    k = n_removed(fraction, total)
    mask = np.ones((n_layers, n_heads), dtype=np.int8)
    mask[ranked["layer"].to_numpy()[:k], ranked["head"].to_numpy()[:k]] = 0
    return mask


def head_masks(ranking: pd.DataFrame, fractions: Sequence[float], n_layers: int, n_heads: int) -> dict[float, np.ndarray]:
    """Masks for several fractions; nested because they share one removal order."""
    return {float(f): head_mask(ranking, f, n_layers, n_heads) for f in fractions}
