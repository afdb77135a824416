"""Seeds -> mean and 95 % confidence interval per (upstream, variant, task); tables and a figure."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from speechdissect.stats import mean_ci  # noqa: F401 - re-exported (it lives in speechdissect.stats)

GROUP = ("upstream", "variant", "task", "readout")  # readout: weighted | last | L{k} (runner.readout_name)
EXTRA_MEANS = ("wall_seconds", "cpu_seconds", "train_seconds", "trainable_params", "upstream_params", "effective_params", "upstream_latency_ms")


def load_results(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per result JSON written by :func:`speechdissect.downstream.runner.run_task`."""
    rows = []
    for p in paths:
        with open(p) as fh:
            row = json.load(fh)
        row.pop("history", None)
        row.pop("upstream_latency_runs_ms", None)
        row["result_path"] = str(p)
        rows.append(row)
    return pd.DataFrame(rows)


def with_readout(names: Iterable[str], readouts: Iterable[str]) -> list[str]:
    """Figure labels of rows probed on several readouts: ``name`` for the weighted sum, ``name [last]`` otherwise."""
    return [n if r == "weighted" else f"{n} [{r}]" for n, r in zip(names, readouts)]


def aggregate(
    results: pd.DataFrame | Sequence[Mapping],
    confidence: float = 0.95,
    value: str = "score",
    chance: Mapping[str, float | Mapping] | None = None,
) -> pd.DataFrame:
    """Mean and CI of ``value`` over seeds per (upstream, variant, task).

    Columns: upstream, variant, task, metric, higher_is_better, n, mean, std, sem, ci_low, ci_high,
    ci_half, seeds, and the mean of the cost columns present (wall_seconds, trainable_params,
    upstream_params, upstream_latency_ms, ...).

    ``chance`` maps a task to its chance level (a number, or the dict of
    :func:`speechdissect.downstream.tasks.chance_level`): columns ``chance``, ``chance_kind``
    (``majority``: majority-class accuracy of the test split; ``empty_output`` for PER) and
    ``chance_uniform`` (1 / classes). Group scores of the results (``score_by_{key}``: a dict
    group -> test score, e.g. ``score_by_gender`` ``{"M": .., "F": ..}``) get ``mean_by_{key}_{group}``
    and ``ci_half_by_{key}_{group}`` columns.
    """
    df = results if isinstance(results, pd.DataFrame) else pd.DataFrame(list(results))
    if "readout" not in df.columns:  # results written before readouts existed: s3prl's weighted sum
        df = df.assign(readout="weighted")
    missing = [c for c in (*GROUP, value) if c not in df.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}")
    by_cols = [c for c in df.columns if c.startswith(f"{value}_by_")]
    rows = []
    for key, part in df.groupby(list(GROUP), sort=True, dropna=False):
        row = dict(zip(GROUP, key))
        row["metric"] = part["metric"].iloc[0] if "metric" in part else value
        if "higher_is_better" in part:
            row["higher_is_better"] = bool(part["higher_is_better"].iloc[0])
        row.update(mean_ci(part[value].astype(float).tolist(), confidence))
        row["seeds"] = ",".join(str(s) for s in sorted(part["seed"].tolist())) if "seed" in part else ""
        if chance is not None and row["task"] in chance:
            c = chance[row["task"]]
            c = c if isinstance(c, Mapping) else {"chance": c}
            row["chance"] = float(c["chance"])
            row["chance_kind"] = c.get("chance_kind", "")
            row["chance_uniform"] = float(c.get("chance_uniform", float("nan")))
        for col in by_cols:
            dicts = [d for d in part[col] if isinstance(d, Mapping)]
            for group in sorted({g for d in dicts for g in d}):
                stats = mean_ci([float(d[group]) for d in dicts if d.get(group) is not None], confidence)
                name = col[len(value) + 1:]  # by_gender
                row[f"mean_{name}_{group}"] = stats["mean"]
                row[f"ci_half_{name}_{group}"] = stats["ci_half"]
        for col in EXTRA_MEANS:
            if col in part and part[col].notna().any():
                row[col] = float(part[col].astype(float).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _write_tsv_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_task_tables(summary: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """One TSV per task, ``out_dir/{task}.tsv``, written atomically; returns task -> path."""
    out_dir = Path(out_dir)
    paths = {}
    for task, part in summary.groupby("task", sort=True):
        path = out_dir / f"{task}.tsv"
        _write_tsv_atomic(part.sort_values(["upstream", "variant"]).reset_index(drop=True), path)
        paths[task] = path
    return paths


def summarize(
    result_paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    confidence: float = 0.95,
    task_data: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Path]:
    """Result JSONs -> one TSV per task (``out_dir/{task}.tsv``); ``task_data`` (task -> task data dir)
    adds the chance level of each task (see :func:`aggregate`)."""
    chance = task_chance(task_data) if task_data else None
    return write_task_tables(aggregate(load_results(result_paths), confidence, chance=chance), out_dir)


def task_chance(task_data: Mapping[str, str | os.PathLike]) -> dict[str, dict]:
    """Task -> :func:`speechdissect.downstream.tasks.chance_level` of its task data dir."""
    from speechdissect.downstream.tasks import chance_level

    return {task: chance_level(task, data) for task, data in task_data.items()}


def plot_scores(summary: pd.DataFrame, out_path: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Bar chart of mean test score with CI error bars: one panel per task, bars per variant (``original``
    first), hue upstream; a dashed line at the task's ``chance`` level when the summary has one.

    Writes ``out_path`` with suffixes ``.png`` and ``.svg``; returns both paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if "readout" in summary:  # weighted sum and last layer side by side; single layers have their own figure
        summary = summary[summary["readout"].isin(["weighted", "last"])].copy()
        summary["variant"] = with_readout(summary["variant"], summary["readout"])
    tasks = sorted(summary["task"].unique())
    upstreams = sorted(summary["upstream"].unique())
    seen = list(dict.fromkeys(summary["variant"]))
    variants = [v for v in ("original",) if v in seen] + [v for v in seen if v != "original"]
    palette = dict(zip(upstreams, sns.color_palette("colorblind", len(upstreams))))
    panel_width = max(3.2, 1.2 + 0.55 * len(variants) * max(1, len(upstreams) / 2))
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(tasks), figsize=(panel_width * len(tasks), 3.6), squeeze=False)
    width = 0.8 / len(upstreams)
    for ax, task in zip(axes[0], tasks):
        part = summary[summary["task"] == task]
        for j, up in enumerate(upstreams):
            for i, var in enumerate(variants):
                row = part[(part["upstream"] == up) & (part["variant"] == var)]
                if row.empty:
                    continue
                x = i - 0.4 + width * (j + 0.5)
                mean, half = float(row["mean"].iloc[0]), float(row["ci_half"].iloc[0])
                ax.bar(x, mean, width=width * 0.95, color=palette[up], label=up if up not in ax.get_legend_handles_labels()[1] else None)
                if np.isfinite(half):
                    ax.errorbar(x, mean, yerr=half, fmt="none", ecolor="black", capsize=3, lw=1)
        metric = part["metric"].iloc[0] if "metric" in part else "score"
        if "chance" in part and part["chance"].notna().any():
            level = float(part["chance"].dropna().iloc[0])
            kind = str(part["chance_kind"].dropna().iloc[0]) if "chance_kind" in part and part["chance_kind"].notna().any() else ""
            label = {"majority": "chance (majority class)", "empty_output": "chance (empty output)"}.get(kind, "chance")
            ax.axhline(level, color="0.3", ls="--", lw=1.2, zorder=3, label=label)
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_title(task)
        ax.set_ylabel(f"test {metric} (mean, 95% CI)")
    first: dict = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            first.setdefault(lab, h)
    labels, handles = list(first), list(first.values())
    fig.legend(handles, labels, title="upstream", loc="upper center", ncol=min(len(labels), 6),
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    from speechdissect.plots import save_figure

    out = Path(out_path)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    save_figure(fig, *paths)
    return paths
