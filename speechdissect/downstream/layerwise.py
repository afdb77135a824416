"""Layer-wise probes: the test score of each hidden state probed alone, next to the convexity of that layer.

The rule ``layerwise_probes`` reads the ``results.json`` of every original upstream whose probes ran
with readout ``each`` (one s3prl run per hidden state and seed, ``-l k``) and of the baseline upstreams
(s3prl's ``mfcc`` / ``fbank``: one hidden state, their weighted-sum score is their only score). It
gives one accuracy-vs-layer curve per upstream and task, with the baselines as horizontal lines, so a
reader sees at once whether a layer knows more than its input features.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .aggregate import aggregate

__all__ = ["TASK_PROPERTY", "layerwise_table", "layerwise_figure"]

#: the convexity property drawn next to each layer-wise task
TASK_PROPERTY = {"phone_linear": "phone", "phone_1hidden": "phone", "speaker_linear_utter": "speaker", "word": "word"}


def layerwise_table(runs: pd.DataFrame, baselines: Iterable[str] = (), confidence: float = 0.95) -> pd.DataFrame:
    """Mean and CI over seeds per (upstream, task, layer); baselines get ``layer`` NaN and ``baseline`` True.

    ``runs``: one row per run (``upstream, variant, task, readout, seed, score, ...``) of original
    variants. Rows with readout ``L{k}`` become layer ``k``; a baseline's ``weighted`` rows its line.
    """
    baselines = set(baselines)
    runs = runs[runs["variant"] == "original"]
    single = runs["readout"].astype(str).str.fullmatch(r"L\d+")
    base = runs["upstream"].isin(baselines) & (runs["readout"] == "weighted")
    summary = aggregate(runs[single | base], confidence)
    summary["baseline"] = summary["upstream"].isin(baselines)
    summary["layer"] = [np.nan if b else float(r[1:]) for b, r in zip(summary["baseline"], summary["readout"])]
    best = summary[~summary["baseline"]].groupby(["upstream", "task"])["mean"].transform("max")
    summary["best_layer"] = False
    summary.loc[best.index, "best_layer"] = summary.loc[best.index, "mean"] == best
    lead = ["upstream", "task", "layer", "baseline", "best_layer", "n", "mean", "ci_low", "ci_high", "ci_half"]
    return summary[[c for c in lead if c in summary] + [c for c in summary.columns if c not in lead]].sort_values(
        ["task", "baseline", "upstream", "layer"]).reset_index(drop=True)


def layerwise_figure(table: pd.DataFrame, convexity: Mapping[str, pd.DataFrame] | None = None, title: str = ""):
    """Top row: probe score vs layer per task (lines per upstream, 95 % CI bands, baselines dashed);
    bottom row: graph convexity of the task's property vs layer (``convexity``: upstream -> summary.tsv)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    tasks = sorted(table["task"].unique()) if len(table) else []
    ups = sorted(table.loc[~table["baseline"], "upstream"].unique()) if len(table) else []
    palette = dict(zip(ups, sns.color_palette("colorblind", len(ups))))
    nrow = 2 if convexity else 1
    fig, axes = plt.subplots(nrow, max(1, len(tasks)), figsize=(4.4 * max(1, len(tasks)), 3.3 * nrow), squeeze=False)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        part = table[table["task"] == task]
        for up in ups:
            g = part[(part["upstream"] == up) & ~part["baseline"]].sort_values("layer")
            ax.plot(g["layer"], g["mean"], marker="o", color=palette[up], label=up)
            if g["ci_low"].notna().any():
                ax.fill_between(g["layer"], g["ci_low"], g["ci_high"], color=palette[up], alpha=0.15, lw=0)
        for k, (_, b) in enumerate(part[part["baseline"]].iterrows()):
            ax.axhline(b["mean"], color="0.25", ls=["--", ":", "-."][k % 3], lw=1.2, label=f"{b['upstream']} (baseline)")
        if "chance" in part and part["chance"].notna().any():
            ax.axhline(float(part["chance"].dropna().iloc[0]), color="0.6", lw=0.8, label="chance")
        ax.set_title(task)
        ax.set_xlabel("hidden state (0 = CNN output)")
        ax.set_ylabel(f"test {part['metric'].iloc[0]} (mean, 95% CI)")
        ax.legend(fontsize=6)
        if nrow == 2:
            ax2, prop = axes[1, j], TASK_PROPERTY.get(task)
            for up in ups:
                conv = (convexity or {}).get(up)
                if conv is None or prop is None:
                    continue
                c = conv[conv["property"] == prop].sort_values("layer")
                ax2.plot(c["layer"], c["mean"], marker="s", color=palette[up], label=up)
                if c["ci_low"].notna().any():
                    ax2.fill_between(c["layer"], c["ci_low"], c["ci_high"], color=palette[up], alpha=0.15, lw=0)
            ax2.set_title(f"{prop} convexity" if prop else "")
            ax2.set_xlabel("hidden state")
            ax2.set_ylabel("graph convexity (%)")
    if not tasks:
        axes[0, 0].text(0.5, 0.5, "no layer-wise probes", ha="center", va="center", transform=axes[0, 0].transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
