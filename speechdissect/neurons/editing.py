"""Editing and pruning summaries of the property-neuron study: downstream results in, tables and figures out.

Editing (Lin et al., 2024, Sec. 5): the original upstream vs the upstream with
a property's neurons removed (``edit-remove_{property}``) vs the same number
of random neurons removed in every layer (``edit-random_{property}``; draws
``edit-random_{property}_r{k}`` are pooled), on the tasks the edit is
evaluated on. Pruning: downstream score, parameters and forward latency vs
FFN sparsity for every method (``ffn-{method}_{sparsity}``; the original is
sparsity 0 of every method).

Conventions
-----------
* Input rows are the runs of the ``results.json`` files the
  ``s3prl_downstream`` rule writes (one per seed), with the variant's
  ``parameters`` (stored / effective) from its spec.
* Means and 95 % CIs over seeds (and random draws) come from
  :func:`speechdissect.downstream.aggregate.aggregate`; group scores such as
  ``score_by_gender`` give ``mean_by_gender_{g}`` columns when present.
* ``delta`` is the mean minus the original's mean on the same task, in the
  task's metric (for accuracies: negative = the edit hurts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..downstream.aggregate import aggregate, with_readout
from ..plots import plt, sns

EDIT = re.compile(r"^edit-(?P<kind>remove|random)_(?P<entry>[A-Za-z0-9_.-]+?)(?:_r(?P<draw>\d+))?$")
FFN = re.compile(r"^ffn-(?P<method>[A-Za-z_]+?)_(?P<sparsity>[0-9.]+)$")
CONDITION_ORDER = ("original", "remove", "random")


def variant_info(variant: str) -> dict:
    """What a variant name says: ``{'study', 'condition', 'entry', 'draw', 'method', 'sparsity'}``.

    ``original`` -> study ``None``; ``edit-remove_gender`` -> editing, remove, gender;
    ``edit-random_gender_r2`` -> editing, random, gender, draw 2; ``ffn-norm_0.5`` -> pruning, norm, 0.5.
    Any other variant -> study ``None``.
    """
    info = {"study": None, "condition": None, "entry": None, "draw": None, "method": None, "sparsity": None}
    if variant == "original":
        return info | {"condition": "original", "sparsity": 0.0}
    m = EDIT.match(variant)
    if m:
        return info | {"study": "editing", "condition": m["kind"], "entry": m["entry"], "draw": int(m["draw"] or 0)}
    m = FFN.match(variant)
    if m:
        return info | {"study": "pruning", "method": m["method"], "sparsity": float(m["sparsity"])}
    return info


def runs_table(docs: Iterable[Mapping]) -> pd.DataFrame:
    """One row per seed of the ``results.json`` documents, with ``stored_params`` and ``effective_params``."""
    rows = []
    for doc in docs:
        params = (doc.get("variant_spec") or {}).get("parameters") or {}
        for run in doc["runs"]:
            run = {k: v for k, v in run.items() if k not in ("history", "upstream_latency_runs_ms", "versions")}
            rows.append(run | {"stored_params": params.get("stored", run.get("upstream_params")),
                               "effective_params": params.get("effective", run.get("upstream_params"))})
    if not rows:
        raise ValueError("no downstream runs given: the results.json files hold no runs")
    return pd.DataFrame(rows)


def _scored_readouts(runs: pd.DataFrame, info: pd.DataFrame, study: str) -> pd.DataFrame:
    """Rows of the readouts the study's variants were probed on (not the original's layer-wise probes)."""
    if "readout" not in runs:
        return runs.assign(readout="weighted")
    wanted = set(runs.loc[info["study"] == study, "readout"])
    return runs[runs["readout"].isin(wanted)]


def _with_original_delta(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    key = ["upstream", "task", "readout"]
    orig = table[table["condition"] == "original"].set_index(key)
    by_cols = [c for c in table.columns if c.startswith("mean_by_")]
    for col in ["mean", *by_cols]:
        ref = [orig[col].get(k, np.nan) if col in orig else np.nan for k in zip(*(table[c] for c in key))]
        table["delta" if col == "mean" else "delta" + col[len("mean"):]] = table[col].to_numpy(dtype=float) - np.asarray(ref, dtype=float)
    return table


def editing_table(runs: pd.DataFrame, masks: pd.DataFrame | None = None, confidence: float = 0.95) -> pd.DataFrame:
    """Original vs ``edit-remove_*`` vs ``edit-random_*`` (draws pooled) per upstream, task and removal entry.

    Parameters
    ----------
    runs
        :func:`runs_table` rows (``upstream, variant, task, score, seed, ...``).
    masks
        Optional ``neurons/masks/masks.tsv`` table; adds ``n_neurons_removed``
        (sum over layers) per condition.
    confidence
        CI level.

    Returns
    -------
    pandas.DataFrame
        ``upstream, task, entry, condition, variant, n, mean, ci_low, ci_high,
        ci_half, delta`` (+ ``mean_by_*`` / ``delta_by_*`` group columns,
        ``n_neurons_removed``, ``effective_params``); the original appears once
        per entry, so each entry's block compares the three conditions.
    """
    info = pd.DataFrame([variant_info(v) for v in runs["variant"]], index=runs.index)
    keep = (info["study"] == "editing") | (info["condition"] == "original")
    runs, info = runs[keep].copy(), info[keep]
    runs = _scored_readouts(runs, info, "editing").copy()
    info = info.loc[runs.index]
    if not (info["study"] == "editing").any():
        return pd.DataFrame(columns=["upstream", "task", "entry", "condition", "variant", "n", "mean", "ci_low", "ci_high", "delta"])
    # pool the random draws of an entry: one variant name per (condition, entry)
    runs["variant"] = [v if c == "original" else f"edit-{c}_{e}" for v, c, e in zip(runs["variant"], info["condition"], info["entry"])]
    summary = aggregate(runs, confidence)
    parsed = pd.DataFrame([variant_info(v) for v in summary["variant"]])
    summary["condition"], summary["entry"] = parsed["condition"].to_numpy(), parsed["entry"].to_numpy()
    summary = _with_original_delta(summary)
    if masks is not None and len(masks):
        removed = masks.groupby("mask")["n_pruned"].sum().to_dict()  # random_{entry} removes as many as remove_{entry}
        summary["n_neurons_removed"] = [0 if c == "original" else removed.get(f"{c}_{e}", np.nan)
                                        for c, e in zip(summary["condition"], summary["entry"])]
    blocks = []
    for (up, task, readout), part in summary.groupby(["upstream", "task", "readout"], sort=True):
        orig = part[part["condition"] == "original"]
        for entry in sorted(part["entry"].dropna().unique()):
            block = pd.concat([orig.assign(entry=entry), part[part["entry"] == entry]])
            block["_order"] = block["condition"].map({c: i for i, c in enumerate(CONDITION_ORDER)})
            blocks.append(block.sort_values("_order").drop(columns="_order"))
    out = pd.concat(blocks, ignore_index=True)
    lead = ["upstream", "task", "readout", "entry", "condition", "variant", "metric", "n", "mean", "ci_low", "ci_high", "ci_half", "delta"]
    return out[[c for c in lead if c in out] + [c for c in out.columns if c not in lead]]


def pruning_table(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Score, parameters and latency vs FFN sparsity per method (the original is sparsity 0 of every method).

    Returns
    -------
    pandas.DataFrame
        ``upstream, task, method, sparsity, variant, n, mean, ci_low, ci_high,
        ci_half, delta, stored_params, effective_params, upstream_latency_ms``.
    """
    info = pd.DataFrame([variant_info(v) for v in runs["variant"]], index=runs.index)
    keep = (info["study"] == "pruning") | (info["condition"] == "original")
    runs = _scored_readouts(runs[keep], info[keep], "pruning")
    methods = sorted(info.loc[info["study"] == "pruning", "method"].unique())
    cols = ["upstream", "task", "readout", "method", "sparsity", "variant", "n", "mean", "ci_low", "ci_high", "delta"]
    if not methods:
        return pd.DataFrame(columns=cols)
    summary = aggregate(runs, confidence)
    params = runs.groupby(["upstream", "variant"], as_index=False)[["stored_params", "effective_params"]].first()
    summary = summary.drop(columns=[c for c in ("stored_params", "effective_params") if c in summary])
    summary = summary.merge(params, on=["upstream", "variant"], how="left")
    parsed = pd.DataFrame([variant_info(v) for v in summary["variant"]])
    summary["condition"] = parsed["condition"].fillna("pruned").to_numpy()
    summary = _with_original_delta(summary)
    summary["method"], summary["sparsity"] = parsed["method"].to_numpy(), parsed["sparsity"].to_numpy()
    tasks_with_pruning = set(summary.loc[summary["method"].notna(), "task"])
    orig = summary[(summary["condition"] == "original") & summary["task"].isin(tasks_with_pruning)]
    out = pd.concat([summary[summary["method"].notna()], *(orig.assign(method=m) for m in methods)], ignore_index=True)
    out = out.drop(columns="condition").sort_values(["upstream", "task", "readout", "method", "sparsity"]).reset_index(drop=True)
    return out[[c for c in cols if c in out] + [c for c in out.columns if c not in cols]]


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_tasks(table: pd.DataFrame) -> pd.DataFrame:
    """One figure panel per task and readout: ``task`` becomes ``phone_linear [last]`` for non-weighted readouts."""
    if "readout" not in table or not len(table):
        return table
    return table.assign(task=with_readout(table["task"], table["readout"]))


def editing_figure(table: pd.DataFrame, title: str = ""):
    """Bars of the mean score (95 % CI) of original / remove / random per task and removal entry.

    When the table has per-gender columns (``mean_by_gender_*``, e.g. speaker
    accuracy on male and female speakers), a second row shows each
    condition's change vs the original per gender.
    """
    table = _panel_tasks(table)
    tasks = sorted(table["task"].unique()) if len(table) else []
    by_gender = sorted(c[len("delta_by_gender_"):] for c in table.columns if c.startswith("delta_by_gender_"))
    gender_tasks = [t for t in tasks if by_gender and table.loc[table["task"] == t, [f"delta_by_gender_{g}" for g in by_gender]].notna().any().any()]
    nrow = 2 if gender_tasks else 1
    fig, axes = plt.subplots(nrow, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.3 * nrow), squeeze=False)
    if not tasks:
        _empty(axes[0, 0], "no editing results")
    palette = dict(zip(CONDITION_ORDER, sns.color_palette("colorblind", 3)))
    for j, task in enumerate(tasks):
        part = table[table["task"] == task]
        entries = list(dict.fromkeys(part["entry"]))
        ax = axes[0, j]
        width = 0.8 / len(CONDITION_ORDER)
        for i, cond in enumerate(CONDITION_ORDER):
            sub = part[part["condition"] == cond].set_index("entry").reindex(entries)
            x = np.arange(len(entries)) + (i - 1) * width
            err = sub["ci_half"].to_numpy(dtype=float) if "ci_half" in sub else None
            ax.bar(x, sub["mean"].to_numpy(dtype=float), width, yerr=None if err is None or np.isnan(err).all() else np.nan_to_num(err),
                   color=palette[cond], label=cond, capsize=2)
        ax.set_xticks(np.arange(len(entries)))
        ax.set_xticklabels(entries)
        metric = str(part["metric"].iloc[0]) if "metric" in part else "score"
        ax.set_ylabel(metric)
        ax.set_title(task)
        if j == 0:
            ax.legend(fontsize=7, title=None)
        if nrow == 2:
            ax2 = axes[1, j]
            if task not in gender_tasks:
                _empty(ax2, "no per-gender scores")
                continue
            cols = [f"delta_by_gender_{g}" for g in by_gender]
            tidy = part.loc[part["condition"] != "original", ["entry", "condition", *cols]].melt(
                id_vars=["entry", "condition"], value_vars=cols, var_name="gender", value_name="change")
            tidy["gender"] = tidy["gender"].str[len("delta_by_gender_"):]
            tidy["bar"] = tidy["condition"] + " " + tidy["entry"].astype(str)
            sns.barplot(tidy, x="bar", y="change", hue="gender", ax=ax2)
            ax2.axhline(0, lw=0.6, color="0.4")
            ax2.set_xlabel("")
            ax2.set_ylabel(f"change of {metric} vs original")
            ax2.set_title(f"{task}: per gender")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pruning_figure(table: pd.DataFrame, title: str = ""):
    """Score (95 % CI band), effective parameters and forward latency vs FFN sparsity, one line per method."""
    table = _panel_tasks(table)
    tasks = sorted(table["task"].unique()) if len(table) else []
    fig, axes = plt.subplots(1, len(tasks) + 2, figsize=(3.5 * (len(tasks) + 2), 3.2), squeeze=False)
    axes = axes[0]
    if not tasks:
        for ax in axes:
            _empty(ax, "no pruning results")
        return fig
    methods = sorted(table["method"].dropna().unique())
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task]
        for m in methods:
            sub = part[part["method"] == m].sort_values("sparsity")
            ax.plot(sub["sparsity"], sub["mean"], marker="o", color=palette[m], label=m)
            if sub[["ci_low", "ci_high"]].notna().all().all():
                ax.fill_between(sub["sparsity"], sub["ci_low"], sub["ci_high"], color=palette[m], alpha=0.2, lw=0)
        ax.set_xlabel("FFN sparsity (share of neurons pruned per layer)")
        ax.set_ylabel(str(part["metric"].iloc[0]) if "metric" in part else "score")
        ax.set_title(task)
        ax.legend(fontsize=7)
    cost_cols = [c for c in ("stored_params", "effective_params", "upstream_latency_ms") if c in table]
    cost = table.groupby(["method", "sparsity"], as_index=False)[cost_cols].mean().sort_values("sparsity")  # mean over tasks
    for ax, col, label in ((axes[-2], "effective_params", "effective parameters"), (axes[-1], "upstream_latency_ms", "forward latency (ms)")):
        if col not in cost or cost[col].isna().all():
            _empty(ax, f"no {label}")
            continue
        for m in methods:
            sub = cost[cost["method"] == m]
            ax.plot(sub["sparsity"], sub[col], marker="o", color=palette[m], label=m)
        ax.set_xlabel("FFN sparsity")
        ax.set_ylabel(label)
        ax.set_title(label)
    if "stored_params" in cost and cost["stored_params"].notna().any():
        for m in methods:
            sub = cost[cost["method"] == m]
            axes[-2].plot(sub["sparsity"], sub["stored_params"], ls=":", color=palette[m], label=f"{m} (stored)")
        axes[-2].legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
