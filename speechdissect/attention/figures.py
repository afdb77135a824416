"""Figures of the attention-head study (Yang, Liu & Lee, 2020).

Pure functions: each takes tables or arrays and returns a matplotlib figure
drawn with seaborn's theme (see :mod:`speechdissect.plots`); nothing is read or
written here. Save them with :func:`speechdissect.plots.save_figure`.

Large ``T x T`` attention maps are drawn with ``imshow`` (one raster image per
panel) rather than ``sns.heatmap``: a per-cell vector mesh would make the SVG
megabytes large. Small grids (heads, 39 x 39 phone maps) use ``sns.heatmap``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from speechdissect import plots as _plots  # noqa: F401  (sets the seaborn theme and the Agg backend)

from ..downstream.aggregate import with_readout
from .metrics import CATEGORIES, METRICS

__all__ = [
    "METRIC_LABELS",
    "metric_heatmaps",
    "example_maps",
    "segmentation_curve",
    "relation_maps",
    "concentration_heatmap",
    "pruning_curves_figure",
]

#: Axis/panel labels of the per-head scores.
METRIC_LABELS: dict[str, str] = {
    "globalness": "globalness G",
    "verticality": "verticality V",
    "diagonality": "diagonality D",
    "max_weight": "max weight",
}
_CATEGORY_COLORS = dict(zip(CATEGORIES, sns.color_palette("Set2", len(CATEGORIES))))


def _tidy_heatmap(ax) -> None:
    """No theme grid over cells, grey for missing (NaN) cells, cells rasterized (small SVGs)."""
    ax.grid(False)
    ax.set_facecolor("0.85")
    if ax.collections:
        ax.collections[0].set_rasterized(True)


def _grid(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """``[layer, head]`` pivot of one column of a per-head table."""
    return table.pivot(index="layer", columns="head", values=column).sort_index().sort_index(axis=1)


def metric_heatmaps(table: pd.DataFrame, title: str = "", columns: Sequence[str] = (*METRICS, "max_weight")):
    """One heat map per metric (layers as rows, heads as columns) plus the head categories.

    Parameters
    ----------
    table
        Per-head table with ``layer``, ``head``, the metric columns and
        ``category`` (as from :meth:`~speechdissect.attention.metrics.HeadMetrics.table`).
    title
        Figure title.
    columns
        Metric columns to draw, one panel each; a last panel shows the category.
    """
    L, H = table["layer"].nunique(), table["head"].nunique()
    annotate = L * H <= 64
    n = len(columns) + 1
    w = max(2.6, 0.45 * H + 1.4)
    fig, axes = plt.subplots(1, n, figsize=(w * n, max(2.4, 0.4 * L + 1.2)), squeeze=False)
    for ax, col in zip(axes[0], columns):
        sns.heatmap(_grid(table, col), ax=ax, cmap="viridis", annot=annotate, fmt=".2f",
                    annot_kws={"fontsize": 6}, cbar_kws={"shrink": 0.8})
        ax.set_title(METRIC_LABELS.get(col, col))
        ax.invert_yaxis()
        _tidy_heatmap(ax)
    codes = table.assign(code=table["category"].map({c: i for i, c in enumerate(CATEGORIES)}))
    ax = axes[0, -1]
    cmap = sns.color_palette([_CATEGORY_COLORS[c] for c in CATEGORIES], as_cmap=True)
    labels = _grid(table, "category").map(lambda c: str(c)[0].upper()) if annotate else False
    sns.heatmap(_grid(codes, "code"), ax=ax, cmap=cmap, vmin=-0.5, vmax=len(CATEGORIES) - 0.5,
                annot=labels, fmt="", annot_kws={"fontsize": 7},
                cbar_kws={"ticks": list(range(len(CATEGORIES))), "shrink": 0.8})
    ax.collections[0].colorbar.set_ticklabels(list(CATEGORIES))
    ax.set_title("category")
    ax.invert_yaxis()
    _tidy_heatmap(ax)
    for ax in axes[0]:
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def example_maps(maps: Sequence[tuple[str, np.ndarray]], title: str = "", phones: Sequence[str] | None = None):
    """Attention maps side by side (query frame as rows, key frame as columns).

    Parameters
    ----------
    maps
        ``(panel title, [T, T] map)`` pairs, e.g. the most global, vertical and
        diagonal head on one utterance.
    phones
        Optional per-frame phone labels; phone boundaries are then marked on
        the key axis as ticks with the phone of each segment.
    """
    n = max(1, len(maps))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    for ax, (name, A) in zip(axes[0], maps):
        A = np.asarray(A, dtype=np.float32)
        im = ax.imshow(A, origin="upper", cmap="viridis", aspect="equal", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.75)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key frame")
        ax.set_ylabel("query frame")
        ax.grid(False)
        if phones is not None and len(phones) == A.shape[-1]:
            lab = np.asarray(phones, dtype=object)
            starts = np.r_[0, np.flatnonzero(lab[1:] != lab[:-1]) + 1]
            ends = np.r_[starts[1:], lab.size]
            sec = ax.secondary_xaxis("top")
            sec.set_xticks((starts + ends - 1) / 2.0)
            sec.set_xticklabels([str(lab[s]) for s in starts], fontsize=4, rotation=90)
            sec.tick_params(length=0)
    for ax in axes[0][len(maps):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _x_position(row: pd.Series) -> float:
    """Transformer depth of a segmentation feature: attention of layer l sits at l + 1 (its output)."""
    if row["feature"] == "attention":
        return float(row["layer"]) + 1.0
    return float(row["layer"])


def segmentation_curve(table: pd.DataFrame, title: str = "", value: str = "r_value"):
    """Segmentation quality per layer: attention heads and hidden states vs the MFCC baseline.

    Parameters
    ----------
    table
        One row per feature with ``feature`` (``attention``, ``hidden``,
        ``mfcc``), ``layer``, ``head`` and ``value``; attention rows may carry a
        boolean ``best_in_layer`` (the head chosen on the tuning split), drawn
        as a line; every head is drawn as a dot.
    value
        Column on the y axis (``r_value`` by default).

    The x axis is the transformer depth: hidden state ``l`` (0 = encoder input)
    at ``l``, attention of (0-based) encoder layer ``l`` at ``l + 1``, so an
    attention layer sits at the hidden state it produces.
    """
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    t = table.copy()
    colors = sns.color_palette("deep", 3)
    att = t[t["feature"] == "attention"]
    if len(att):
        att = att.assign(depth=att.apply(_x_position, axis=1))
        # heads side by side at fixed offsets (seaborn's random jitter would change the figure on every run)
        heads = att["head"].astype(float)
        offset = (heads - (heads.max() + heads.min()) / 2) * (0.16 / max(1.0, heads.max() - heads.min()))
        ax.scatter(att["depth"] + offset, att[value], color=colors[0], alpha=0.45, s=16, label="attention head")
        best = att[att["best_in_layer"].astype(bool)] if "best_in_layer" in att else att.loc[att.groupby("layer")[value].idxmax()]
        sns.lineplot(best.sort_values("depth"), x="depth", y=value, marker="o", ax=ax, color=colors[0],
                     label="attention (best head per layer)")
    hid = t[t["feature"] == "hidden"]
    if len(hid):
        hid = hid.assign(depth=hid["layer"].astype(float))
        sns.lineplot(hid.sort_values("depth"), x="depth", y=value, marker="s", ax=ax, color=colors[1],
                     label="hidden state")
    mfcc = t[t["feature"] == "mfcc"]
    if len(mfcc):
        ax.axhline(float(mfcc[value].iloc[0]), color=colors[2], ls="--", label="MFCC baseline")
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, object] = {}
    for h, l in zip(handles, labels):
        seen.setdefault(l, h)
    ax.legend(seen.values(), seen.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("layer (hidden state index; attention of layer l at l + 1)")
    ax.set_ylabel({"r_value": "R-value"}.get(value, value))
    depths = pd.concat([att.get("depth", pd.Series(dtype=float)), hid.get("depth", pd.Series(dtype=float))])
    if len(depths):
        ax.set_xticks(sorted(set(int(d) for d in depths)))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def relation_maps(maps: Sequence[tuple[str, np.ndarray]], phones: Sequence[str], title: str = "",
                  limit: float | None = None):
    """Phone relation maps ``P`` (query phone rows, key phone columns), one panel per head.

    Parameters
    ----------
    maps
        ``(panel title, [M, M] P)`` pairs; NaN cells (phone pairs never seen
        together) are grey.
    phones
        The ``M`` phone names.
    limit
        Symmetric colour limit; by default the 98th percentile of ``|P|`` over
        all panels, so one rare pair does not wash out the maps.
    """
    n = max(1, len(maps))
    M = len(phones)
    size = max(3.2, 0.12 * M + 1.4)
    fig, axes = plt.subplots(1, n, figsize=(size * n + 0.6, size), squeeze=False)
    if limit is None:
        vals = np.concatenate([np.abs(np.asarray(P, dtype=np.float64)).ravel() for _, P in maps]) if maps else np.zeros(1)
        vals = vals[np.isfinite(vals)]
        limit = float(np.percentile(vals, 98)) if vals.size else 1.0
        limit = limit if limit > 0 else 1.0
    for ax, (name, P) in zip(axes[0], maps):
        frame = pd.DataFrame(np.asarray(P, dtype=np.float64), index=list(phones), columns=list(phones))
        sns.heatmap(frame, ax=ax, cmap="RdBu_r", center=0.0, vmin=-limit, vmax=limit, square=True,
                    xticklabels=True, yticklabels=True, cbar_kws={"shrink": 0.7, "label": "P"})
        ax.tick_params(labelsize=5)
        _tidy_heatmap(ax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key phone")
        ax.set_ylabel("query phone")
    for ax in axes[0][len(maps):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def concentration_heatmap(table: pd.DataFrame, title: str = "", phones: Sequence[str] | None = None,
                          categories: pd.DataFrame | None = None):
    """Concentration ``C`` of every head (rows ``L{layer}H{head}``) on every phone (columns).

    Parameters
    ----------
    table
        Long table ``layer, head, phone, concentration``.
    phones
        Column order (default: order of first appearance in ``table``).
    categories
        Optional per-head ``layer, head, category`` table; the category is
        appended to the row labels.
    """
    t = table.copy()
    t["row"] = "L" + t["layer"].astype(str) + "H" + t["head"].astype(str)
    if categories is not None:
        cat = {(int(r.layer), int(r.head)): str(r.category) for r in categories.itertuples()}
        t["row"] = t["row"] + " " + [cat.get((int(l), int(h)), "")[:1] for l, h in zip(t["layer"], t["head"])]
    order_rows = t.drop_duplicates("row").sort_values(["layer", "head"])["row"].tolist()
    cols = list(phones) if phones is not None else list(dict.fromkeys(t["phone"]))
    grid = t.pivot(index="row", columns="phone", values="concentration").reindex(index=order_rows, columns=cols)
    vals = np.abs(grid.to_numpy(dtype=np.float64))
    vals = vals[np.isfinite(vals)]
    limit = float(np.percentile(vals, 98)) if vals.size else 1.0
    limit = limit if limit > 0 else 1.0
    fig, ax = plt.subplots(figsize=(max(5.0, 0.16 * len(cols) + 2.0), max(2.5, 0.16 * len(order_rows) + 1.2)))
    sns.heatmap(grid, ax=ax, cmap="RdBu_r", center=0.0, vmin=-limit, vmax=limit, xticklabels=True,
                yticklabels=True, cbar_kws={"shrink": 0.7, "label": "concentration C"})
    ax.tick_params(labelsize=5)
    _tidy_heatmap(ax)
    ax.set_xlabel("key phone")
    ax.set_ylabel("head")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def pruning_curves_figure(curves: pd.DataFrame, title: str = "", max_loss: float | None = 1.0,
                          points_per_unit: float = 100.0):
    """Downstream score against the fraction of heads removed, one panel per task, one line per ranking.

    Parameters
    ----------
    curves
        Output of :func:`speechdissect.attention.pruning.pruning_curves` for one
        upstream: ``task``, ``metric``, ``higher_is_better``, ``ranking``,
        ``fraction``, ``mean``, ``ci_low``, ``ci_high`` (fraction 0 = original).
    max_loss
        Draw the band edge ``original ∓ max_loss`` points as a dotted line (None: no line).
    points_per_unit
        Points per unit of the score (100: percentage points).
    """
    if "readout" in curves and len(curves):  # one panel per task and readout
        curves = curves.assign(task=with_readout(curves["task"], curves["readout"]))
    tasks = list(dict.fromkeys(curves["task"]))
    rankings = list(dict.fromkeys(curves["ranking"]))
    palette = dict(zip(rankings, sns.color_palette("colorblind", len(rankings))))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)) + 1.2, 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = curves[curves["task"] == task].sort_values(["ranking", "fraction"])
        sns.lineplot(part, x="fraction", y="mean", hue="ranking", hue_order=rankings, palette=palette,
                     marker="o", errorbar=None, ax=ax, legend=ax is axes[0, 0])
        for ranking, g in part.groupby("ranking", sort=False):
            if g["ci_low"].notna().any():
                ax.fill_between(g["fraction"], g["ci_low"], g["ci_high"], color=palette[ranking], alpha=0.15, lw=0)
        original = part.loc[part["fraction"] == 0, "mean"]
        if max_loss is not None and len(original):
            higher = bool(part["higher_is_better"].iloc[0]) if "higher_is_better" in part else True
            edge = float(original.iloc[0]) - (1 if higher else -1) * max_loss / points_per_unit
            ax.axhline(edge, color="0.3", ls=":", lw=1)
            ax.text(0.99, edge, f"{max_loss:g} point{'s' if max_loss != 1 else ''} {'below' if higher else 'above'} original",
                    transform=ax.get_yaxis_transform(), ha="right", va="bottom" if higher else "top", fontsize=6, color="0.3")
        metric = str(part["metric"].iloc[0]) if "metric" in part else "score"
        ax.set_title(task)
        ax.set_xlabel("fraction of heads removed (0 = original)")
        ax.set_ylabel(f"test {metric} (mean, 95% CI)")
        ax.set_xticks(sorted(part["fraction"].unique()))
    if axes[0, 0].get_legend() is not None:
        sns.move_legend(axes[0, 0], "upper left", bbox_to_anchor=(0.0, -0.22), ncol=min(len(rankings), 5),
                        frameon=False, title="ranking (removal order)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
