"""Convexity-based layer pruning (Dorszewski et al. 2024): pruned vs full model, and every truncation depth.

The workflow evaluates, per task, the full upstream (variant ``original``), the upstream cut after its
most convex layer for the task's property (``convex-{property}``: encoder layers ``0..L*-1`` kept, so
its last hidden state is hidden state ``L*``) and every truncation depth (``layers-N``), with a frozen
upstream and, for the pruned-vs-full comparison, fine-tuned (upstream trainable). This module turns
those runs into

* :func:`pruning_table`: one row per task and mode (``frozen`` / ``finetuned``): ``L*``, layers kept,
  parameters, accuracy full vs pruned (mean and CI over seeds), training time, inference time
  (upstream forward latency) and their relative change;
* :func:`depth_table`: one row per task and depth: accuracy (frozen) next to the convexity of the
  hidden state the truncated model ends in, with the best depth and whether the most convex layer
  is the cut the accuracies would choose;
* :func:`plot_depths`: accuracy vs convexity per depth (the seed's Fig. 2) and accuracy vs depth.

Inputs are plain tables, so the logic is tested on fixed numbers without any model.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from speechdissect.stats import mean_ci

MODES = ("frozen", "finetuned")
RUN_COLUMNS = ("task", "variant", "mode", "seed", "score", "train_seconds", "upstream_latency_ms",
               "upstream_params", "metric", "higher_is_better")


def load_runs(paths: Iterable[str | os.PathLike], mode: str) -> pd.DataFrame:
    """One row per seed from ``results.json`` files of ``s3prl_downstream`` / ``s3prl_finetune``.

    Parameters
    ----------
    paths : iterable of paths
        ``{"variant_spec": ..., "runs": [result, ...]}`` documents.
    mode : str
        ``frozen`` or ``finetuned`` (recorded in column ``mode``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`RUN_COLUMNS` plus ``layers_kept`` (from the variant spec when it was a layer cut)
        and ``result_path``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = []
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        if "runs" not in doc:
            raise ValueError(f"{path}: not a downstream results.json (no 'runs'); rerun its s3prl_downstream job")
        applied = (doc.get("variant_spec") or {}).get("applied") or ""
        kept = int(applied.split("-", 1)[1]) if applied.startswith("layers-") else None
        for run in doc["runs"]:
            if run.get("readout", "weighted") != "weighted":  # the cut is scored as the seeds do: weighted sum
                continue
            row = {c: run.get(c) for c in RUN_COLUMNS if c != "mode"}
            row.update(mode=mode, layers_kept=kept, result_path=str(path))
            rows.append(row)
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, "layers_kept", "result_path"])


def _change(new: float, old: float) -> float:
    """Relative change in percent, NaN when undefined."""
    if old is None or new is None or not (math.isfinite(old) and math.isfinite(new)) or old == 0:
        return float("nan")
    return 100.0 * (new - old) / old


def _mean(part: pd.DataFrame, col: str) -> float:
    vals = pd.to_numeric(part[col], errors="coerce").dropna() if col in part else pd.Series(dtype=float)
    return float(vals.mean()) if len(vals) else float("nan")


def pruning_table(runs: pd.DataFrame, tasks: Mapping[str, str], best_layers: Mapping[str, int],
                  n_layers: int, confidence: float = 0.95, latency: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Full vs convexity-pruned model per task and mode.

    Parameters
    ----------
    runs : pandas.DataFrame
        Rows of :func:`load_runs` (frozen and fine-tuned together), variants ``original`` and
        ``convex-{property}``.
    tasks : mapping
        Task -> property whose most convex layer sets the cut (``pruning.layers.tasks``).
    best_layers : mapping
        Property -> most convex hidden state ``L*`` (``best_layers.json``).
    n_layers : int
        Encoder layers of the full model.
    confidence : float
        Level of the t-interval over seeds.
    latency : mapping, optional
        Variant -> forward latency (ms) measured side by side
        (:func:`speechdissect.upstreams.registry.paired_latency`); replaces the latencies the
        separate downstream jobs measured (``latency_source`` says which was used).

    Returns
    -------
    pandas.DataFrame
        One row per (task, mode) with both models present: ``task``, ``property``, ``mode``,
        ``most_convex_layer``, ``layers_kept``, ``layers_total``, ``metric``, ``n_seeds``,
        ``full_mean``/``full_ci_half``, ``pruned_mean``/``pruned_ci_half``, ``accuracy_change_points``
        (pruned - full, in points of 100), ``accuracy_change_pct`` (relative), ``full_params``,
        ``pruned_params``, ``params_change_pct``, ``full_train_seconds``, ``pruned_train_seconds``,
        ``train_time_change_pct``, ``full_latency_ms``, ``pruned_latency_ms``, ``latency_change_pct``.
    """
    rows = []
    for task, prop in tasks.items():
        variant = f"convex-{prop}"
        for mode in MODES:
            part = runs[(runs["task"] == task) & (runs["mode"] == mode)]
            full, pruned = part[part["variant"] == "original"], part[part["variant"] == variant]
            if full.empty or pruned.empty:
                continue
            f, p = (mean_ci(x["score"].astype(float).tolist(), confidence) for x in (full, pruned))
            best = best_layers.get(prop)
            kept = pruned["layers_kept"].dropna()
            kept = int(kept.iloc[0]) if len(kept) else (max(1, int(best)) if best is not None else None)
            row = {
                "task": task, "property": prop, "mode": mode,
                "most_convex_layer": None if best is None else int(best),
                "layers_kept": kept, "layers_total": int(n_layers),
                "metric": full["metric"].iloc[0] if "metric" in full else "score",
                "n_seeds": int(min(f["n"], p["n"])),
                "full_mean": f["mean"], "full_ci_half": f["ci_half"],
                "pruned_mean": p["mean"], "pruned_ci_half": p["ci_half"],
                "accuracy_change_points": 100.0 * (p["mean"] - f["mean"]),
                "accuracy_change_pct": _change(p["mean"], f["mean"]),
            }
            for name, col in (("params", "upstream_params"), ("train_seconds", "train_seconds"), ("latency_ms", "upstream_latency_ms")):
                a, b = _mean(full, col), _mean(pruned, col)
                row[f"full_{name}"], row[f"pruned_{name}"] = a, b
                key = {"params": "params_change_pct", "train_seconds": "train_time_change_pct", "latency_ms": "latency_change_pct"}[name]
                row[key] = _change(b, a)
            row["latency_source"] = "per_job"
            if latency and "original" in latency and variant in latency:
                row["full_latency_ms"], row["pruned_latency_ms"] = float(latency["original"]), float(latency[variant])
                row["latency_change_pct"] = _change(row["pruned_latency_ms"], row["full_latency_ms"])
                row["latency_source"] = "paired"
            rows.append(row)
    return pd.DataFrame(rows)


def depth_table(runs: pd.DataFrame, convexity: pd.DataFrame, tasks: Mapping[str, str],
                best_layers: Mapping[str, int], n_layers: int, mode: str = "frozen",
                confidence: float = 0.95, latency: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Accuracy of every truncation depth next to the convexity of the hidden state it ends in.

    Depth ``N`` (variant ``layers-N``, ``original`` as depth ``n_layers``, and ``convex-{property}`` as the
    depth it keeps when that ``layers-N`` was not run) outputs hidden state ``N``;
    its row carries that hidden state's convexity for the task's property (``convexity`` is the
    ``summary.tsv`` of ``layer_convexity``: ``layer``, ``property``, ``mean``, ``ci_half``).
    ``latency`` (variant -> ms, as in :func:`pruning_table`) replaces the per-job latencies.

    Returns
    -------
    pandas.DataFrame
        One row per (task, depth): ``task``, ``property``, ``depth``, ``variant``, ``convexity``,
        ``convexity_ci_half``, ``mean``, ``ci_half``, ``n_seeds``, ``upstream_params``,
        ``upstream_latency_ms``, ``is_convex_cut`` (the depth ``convex-{property}`` keeps),
        ``best_depth`` (highest mean accuracy; lower is better for PER), ``convex_cut_is_best``,
        ``convex_cut_within_ci`` (the cut's mean lies inside the best depth's interval),
        ``spearman`` (accuracy vs convexity over the depths).
    """
    from scipy import stats

    rows = []
    for task, prop in tasks.items():
        part = runs[(runs["task"] == task) & (runs["mode"] == mode)]
        depths: dict[int, tuple[str, pd.DataFrame]] = {}
        for variant, g in part.groupby("variant"):
            if variant == "original":
                depths[int(n_layers)] = (variant, g)
            elif variant.startswith("layers-"):
                depths[int(variant.split("-", 1)[1])] = (variant, g)
        convex = part[part["variant"] == f"convex-{prop}"]
        kept = convex["layers_kept"].dropna() if "layers_kept" in convex else pd.Series(dtype=float)
        if len(kept) and int(kept.iloc[0]) not in depths:  # the convex cut is that depth's model
            depths[int(kept.iloc[0])] = (f"convex-{prop}", convex)
        if set(depths) <= {int(n_layers)}:  # no truncation of this task was evaluated
            continue
        conv = convexity[convexity["property"] == prop].set_index("layer")
        best = best_layers.get(prop)
        cut = None if best is None else min(max(1, int(best)), int(n_layers))
        task_rows = []
        for depth in sorted(depths):
            variant, g = depths[depth]
            s = mean_ci(g["score"].astype(float).tolist(), confidence)
            task_rows.append({
                "task": task, "property": prop, "depth": depth,
                "variant": variant,
                "convexity": float(conv.loc[depth, "mean"]) if depth in conv.index else float("nan"),
                "convexity_ci_half": float(conv.loc[depth, "ci_half"]) if depth in conv.index and "ci_half" in conv else float("nan"),
                "mean": s["mean"], "ci_half": s["ci_half"], "n_seeds": s["n"],
                "upstream_params": _mean(g, "upstream_params"), "upstream_latency_ms": float((latency or {}).get(variant, _mean(g, "upstream_latency_ms"))),
                "is_convex_cut": depth == cut,
            })
        t = pd.DataFrame(task_rows)
        higher = bool(part["higher_is_better"].dropna().iloc[0]) if part["higher_is_better"].notna().any() else True
        best_row = t.loc[t["mean"].idxmax() if higher else t["mean"].idxmin()]
        t["best_depth"] = int(best_row["depth"])
        t["convex_cut_is_best"] = cut is not None and cut == int(best_row["depth"])
        cut_rows = t[t["depth"] == cut]
        half = best_row["ci_half"]
        t["convex_cut_within_ci"] = bool(len(cut_rows)) and math.isfinite(half) and abs(float(cut_rows["mean"].iloc[0]) - best_row["mean"]) <= half
        ok = t[["convexity", "mean"]].dropna()
        t["spearman"] = float(stats.spearmanr(ok["convexity"], ok["mean"])[0]) if len(ok) >= 3 and ok["convexity"].nunique() > 1 and ok["mean"].nunique() > 1 else float("nan")
        rows.append(t)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def plot_depths(depths: pd.DataFrame, convexity: pd.DataFrame | None = None, title: str | None = None):
    """Per task: accuracy vs convexity of the depths (Fig. 2 of the seed), and accuracy / convexity vs depth.

    Returns the matplotlib figure (save it with :func:`speechdissect.plots.save_figure`).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from speechdissect import plots  # noqa: F401 - the project's seaborn style

    tasks = list(dict.fromkeys(depths["task"])) if len(depths) else []
    fig, axes = plt.subplots(2, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 6.6), squeeze=False)
    for j, task in enumerate(tasks):
        d = depths[depths["task"] == task].sort_values("depth")
        ax = axes[0, j]
        sns.scatterplot(d, x="convexity", y="mean", hue="depth", palette="viridis", s=60, ax=ax, legend="full")
        ax.errorbar(d["convexity"], d["mean"], yerr=d["ci_half"].fillna(0), xerr=d["convexity_ci_half"].fillna(0),
                    fmt="none", ecolor="grey", lw=0.8, capsize=2)
        cut = d[d["is_convex_cut"]]
        if len(cut):
            ax.scatter(cut["convexity"], cut["mean"], s=180, facecolors="none", edgecolors="red", lw=1.5, label="convex cut")
            ax.legend(fontsize=7, title="layers kept", title_fontsize=7)
        ax.set_xlabel(f"convexity of {d['property'].iloc[0]} regions at the cut (%)")
        ax.set_ylabel("test accuracy (frozen, mean ± 95% CI)")
        ax.set_title(task)
        ax = axes[1, j]
        ax.errorbar(d["depth"], d["mean"], yerr=d["ci_half"].fillna(0), marker="o", capsize=3, label="accuracy")
        ax.set_xlabel("layers kept")
        ax.set_ylabel("test accuracy")
        ax.set_xticks(d["depth"])
        if len(cut):
            ax.axvline(float(cut["depth"].iloc[0]), color="red", ls="--", lw=1, label="most convex layer")
        twin = ax.twinx()
        twin.plot(d["depth"], d["convexity"], color="tab:orange", marker="s", ls=":", label="convexity")
        twin.set_ylabel("convexity (%)", color="tab:orange")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower right")
        twin.grid(False)
    if not tasks:
        axes[0, 0].text(0.5, 0.5, "no truncation depths evaluated (pruning.layers.depths)", ha="center", va="center")
        axes[0, 0].set_axis_off()
        axes[1, 0].set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pruning_summary(table: pd.DataFrame, depths: pd.DataFrame) -> dict:
    """JSON-ready digest: per task and mode the cut and the changes; per task the depth check."""
    out: dict = {"tasks": {}}
    for _, r in table.iterrows():
        entry = out["tasks"].setdefault(r["task"], {"property": r["property"], "most_convex_layer": r["most_convex_layer"],
                                                    "layers_kept": r["layers_kept"], "layers_total": r["layers_total"]})
        entry[r["mode"]] = {k: _jsonable(r[k]) for k in (
            "full_mean", "full_ci_half", "pruned_mean", "pruned_ci_half", "accuracy_change_points",
            "accuracy_change_pct", "params_change_pct", "train_time_change_pct", "latency_change_pct", "n_seeds")}
    for task, d in (depths.groupby("task") if len(depths) else []):
        entry = out["tasks"].setdefault(task, {})
        entry["depths"] = {"best_depth": int(d["best_depth"].iloc[0]), "convex_cut_is_best": bool(d["convex_cut_is_best"].iloc[0]),
                           "convex_cut_within_ci": bool(d["convex_cut_within_ci"].iloc[0]),
                           "spearman_accuracy_convexity": _jsonable(d["spearman"].iloc[0])}
    return out


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    return v


__all__: Sequence[str] = ("MODES", "load_runs", "pruning_table", "depth_table", "plot_depths", "pruning_summary")
