"""Head-pruning curves: downstream score against the fraction of heads removed, per ranking.

Yang, Liu & Lee (2020) remove heads cumulatively in the order of a ranking
(:mod:`.ranking`) and watch a probe's score as the removed fraction grows. The
workflow evaluates each ``heads-{ranking}_{fraction}`` variant with s3prl's
downstream runner (several seeds); this module turns those runs into

* :func:`pruning_curves` — mean and t confidence interval of the score per
  (upstream, task, ranking, fraction), fraction 0 being the unpruned
  ``original`` (shared by every ranking), with the loss against it in points;
* :func:`max_fraction_within` — per (upstream, task, ranking) the largest
  fraction reached with at most ``max_loss`` points lost.

Scores are the runner's (accuracy or PER as fractions in [0, 1]); a *point* is
``1 / points_per_unit`` of that scale (default 100: one percentage point). The
loss is signed so that positive means worse, whatever the metric's direction.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["HEAD_VARIANT", "head_variant", "parse_head_variant", "pruning_curves", "max_fraction_within"]

#: ``heads-{ranking}_{fraction}``; the ranking may itself hold underscores (``max_weight``).
HEAD_VARIANT = re.compile(r"^heads-(?P<ranking>[A-Za-z0-9_]+)_(?P<fraction>[0-9]*\.?[0-9]+)$")

CURVE_COLUMNS = ["upstream", "task", "readout", "metric", "higher_is_better", "ranking", "fraction", "variant", "n_removed",
                 "n", "mean", "std", "ci_low", "ci_high", "ci_half", "seeds", "loss"]


def head_variant(ranking: str, fraction: float) -> str:
    """Variant name of ``ranking`` at ``fraction``; fraction 0 is the ``original`` model."""
    return "original" if float(fraction) == 0.0 else f"heads-{ranking}_{float(fraction):g}"


def parse_head_variant(variant: str) -> tuple[str | None, float] | None:
    """``'original'`` → ``(None, 0.0)``; ``'heads-max_weight_0.5'`` → ``('max_weight', 0.5)``; else ``None``."""
    if variant == "original":
        return None, 0.0
    m = HEAD_VARIANT.match(variant)
    if not m:
        return None
    return m.group("ranking"), float(m.group("fraction"))


def _mean_ci(values: Sequence[float], confidence: float) -> dict:
    from speechdissect.downstream.aggregate import mean_ci

    return mean_ci(list(values), confidence)


def pruning_curves(
    runs: pd.DataFrame,
    rankings: Sequence[str] | None = None,
    *,
    n_removed: Mapping[tuple[str, float], int] | None = None,
    confidence: float = 0.95,
    points_per_unit: float = 100.0,
) -> pd.DataFrame:
    """Score against removed fraction, one row per (upstream, task, ranking, fraction).

    Parameters
    ----------
    runs
        One row per downstream run (seed): ``upstream``, ``task``, ``variant``
        (``original`` or ``heads-{ranking}_{fraction}``), ``score``, and
        optionally ``seed``, ``metric``, ``higher_is_better`` (default True).
        Rows of other variants are ignored.
    rankings
        Rankings to draw; the ``original`` row is repeated for each as its
        fraction 0. Default: every ranking found in ``runs``.
    n_removed
        ``(ranking, fraction) -> heads removed``, copied into ``n_removed``
        (0 at fraction 0; missing entries are NaN).
    confidence
        Level of the t interval over seeds.
    points_per_unit
        Points per unit of the score (100: percentage points of an accuracy).

    Returns
    -------
    DataFrame with columns :data:`CURVE_COLUMNS`, sorted by upstream, task,
    ranking, fraction. ``loss`` is ``(original mean − mean) × points_per_unit``
    (sign flipped when lower is better): positive means worse.

    Raises
    ------
    ValueError
        If an (upstream, task) with pruned variants has no ``original`` runs.
    """
    missing = [c for c in ("upstream", "task", "variant", "score") if c not in runs.columns]
    if missing:
        raise ValueError(f"downstream runs lack columns {missing}")
    if "readout" not in runs:  # s3prl's weighted sum
        runs = runs.assign(readout="weighted")
    parsed = runs["variant"].map(parse_head_variant)
    keep = parsed.notna()
    pruned_readouts = set(runs.loc[keep & (runs["variant"] != "original"), "readout"])
    if pruned_readouts:  # not the original's layer-wise probes
        keep &= runs["readout"].isin(pruned_readouts)
    df = runs[keep].copy()
    df["ranking"] = [p[0] for p in parsed[keep]]
    df["fraction"] = [p[1] for p in parsed[keep]]
    found = list(dict.fromkeys(r for r in df["ranking"] if r is not None))
    rankings = list(rankings) if rankings is not None else found
    n_removed = {(r, float(f)): int(k) for (r, f), k in (n_removed or {}).items()}
    rows = []
    for (upstream, task, readout), part in df.groupby(["upstream", "task", "readout"], sort=True):
        pruned = part[part["ranking"].notna()]
        original = part[part["variant"] == "original"]
        if original.empty:
            if pruned.empty:
                continue
            raise ValueError(f"{upstream} / {task}: head-pruned variants but no 'original' runs to compare with "
                             "(fraction 0 of every curve is the original model)")
        metric = str(part["metric"].iloc[0]) if "metric" in part else "score"
        higher = bool(part["higher_is_better"].iloc[0]) if "higher_is_better" in part else True
        sign = 1.0 if higher else -1.0
        base = _mean_ci(original["score"].astype(float), confidence)
        for ranking in rankings:
            groups = [(0.0, "original", original)]
            sub = pruned[pruned["ranking"] == ranking]
            for fraction, g in sub.groupby("fraction", sort=True):
                if float(fraction) > 0:
                    groups.append((float(fraction), str(g["variant"].iloc[0]), g))
            for fraction, variant, g in groups:
                stats = _mean_ci(g["score"].astype(float), confidence)
                seeds = ",".join(str(s) for s in sorted(g["seed"].tolist())) if "seed" in g else ""
                rows.append({
                    "upstream": upstream, "task": task, "readout": readout, "metric": metric, "higher_is_better": higher,
                    "ranking": ranking, "fraction": fraction, "variant": variant,
                    "n_removed": 0 if fraction == 0 else n_removed.get((ranking, fraction), math.nan),
                    **{k: stats[k] for k in ("n", "mean", "std", "ci_low", "ci_high", "ci_half")},
                    "seeds": seeds, "loss": sign * (base["mean"] - stats["mean"]) * points_per_unit,
                })
    out = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return out.sort_values(["upstream", "task", "readout", "ranking", "fraction"], kind="stable").reset_index(drop=True)


def max_fraction_within(curves: pd.DataFrame, max_loss: float = 1.0) -> pd.DataFrame:
    """Largest fraction of heads removed with at most ``max_loss`` points lost, per curve.

    Parameters
    ----------
    curves
        Output of :func:`pruning_curves`.
    max_loss
        Allowed loss in points (``loss`` column) against the original.

    Returns
    -------
    One row per (upstream, task, ranking): ``original`` (mean score at fraction
    0), ``max_fraction`` (largest evaluated fraction such that it and every
    smaller evaluated fraction lose at most ``max_loss``: the curve stays
    within the band up to there), ``n_removed``, ``score`` and ``loss`` at that
    fraction, ``max_fraction_any`` (largest evaluated fraction within the band,
    ignoring dips before it), ``largest_evaluated``, ``fractions`` (the
    evaluated ones, comma-joined) and ``max_loss``. A curve with only fraction
    0 gets ``max_fraction`` 0.
    """
    if max_loss < 0:
        raise ValueError(f"max_loss must be >= 0 points, got {max_loss}")
    rows = []
    if "readout" not in curves:
        curves = curves.assign(readout="weighted")
    for (upstream, task, readout, ranking), c in curves.groupby(["upstream", "task", "readout", "ranking"], sort=True):
        c = c.sort_values("fraction")
        ok = (c["loss"].to_numpy(dtype=float) <= max_loss + 1e-12)
        # contiguous from fraction 0: cut at the first fraction outside the band
        first_bad = int(np.argmin(ok)) if not ok.all() else len(ok)
        reached = c.iloc[max(first_bad - 1, 0)]
        within = c[ok]
        rows.append({
            "upstream": upstream, "task": task, "readout": readout, "ranking": ranking, "metric": c["metric"].iloc[0],
            "original": float(c.loc[c["fraction"] == 0, "mean"].iloc[0]) if (c["fraction"] == 0).any() else math.nan,
            "max_fraction": float(reached["fraction"]), "n_removed": reached["n_removed"],
            "score": float(reached["mean"]), "loss": float(reached["loss"]),
            "max_fraction_any": float(within["fraction"].max()) if len(within) else math.nan,
            "largest_evaluated": float(c["fraction"].max()),
            "fractions": ",".join(f"{f:g}" for f in c["fraction"]), "max_loss": float(max_loss),
        })
    return pd.DataFrame(rows)
