"""Findings page: does each claim of the three seed studies hold on this run's own tables?

One function per claim, registered with :func:`finding` in :data:`FINDINGS` (adding a finding =
one decorated function). A claim function reads the workflow's tables through a
:class:`Context` and returns rows (usually one per upstream) with the measured value, a 95 %
confidence half-width where the tables have one, and a verdict:

* ``holds``: the effect is in the claimed direction and, where the claim is a comparison, the
  95 % CIs of the two sides do not overlap;
* ``does not hold``: the effect is absent, in the wrong direction, or the CIs overlap;
* ``not testable``: the table is not produced by this config, or its input is degenerate (no
  gender neurons, one seed so no CI, a grid that cannot reach the claim, ...); ``detail`` says why.

The claims, thresholds and verdict rules are listed in ``docs/findings.md``. A claim function
never raises for missing or degenerate input: :class:`NotTestable` (and any error reading a
table) becomes a ``not testable`` row that names the table.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "VERDICTS", "TABLES", "FINDINGS", "Context", "NotTestable", "finding",
           "findings_table", "findings_markdown", "findings_html", "table_paths"]

VERDICTS = ("holds", "does not hold", "not testable")
#: the columns of findings.tsv: the seven the issue names, the evidence, then our extras
COLUMNS = ["study", "claim", "seed_value", "upstream", "measured", "ci_half", "verdict", "evidence",
           "id", "task", "readout", "detail", "latency"]
# ``latency``: timing-dependent numbers (forward latency, training time), apart from ``detail`` because they
# vary between identical runs; no verdict depends on them (tests/outputs.py skips timing-named columns).

NEURONS, ATTENTION, CONVEXITY, QUALITY = ("Property neurons (Lin et al. 2024)", "Self-attention (Yang et al. 2020)",
                                          "Convexity (Dorszewski et al. 2024)", "Upstream quality (issue 15)")

#: the workflow's tables the claims read (paths relative to the working directory)
TABLES = {
    "counts": "results/{upstream}/{corpus}/neurons/counts.tsv",
    "overlaps": "results/{upstream}/{corpus}/neurons/overlaps.tsv",
    "geometry": "results/{upstream}/{corpus}/neurons/geometry.tsv",
    "editing": "results/{upstream}/neuron_editing/editing.tsv",
    "ffn_pruning": "results/{upstream}/neuron_editing/pruning.tsv",
    "head_fractions": "results/{upstream}/{corpus}/attention/head_pruning_fractions.tsv",
    "head_curves": "results/{upstream}/{corpus}/attention/head_pruning.tsv",
    "segmentation": "results/attention/segmentation_summary.tsv",
    "convexity": "results/{upstream}/{corpus}/convexity/summary.tsv",
    "convexity_pruning": "results/{upstream}/{corpus}/convexity/pruning.tsv",
    "models": "results/neurons/{corpus}/models.tsv",
    "layerwise": "results/downstream/layerwise.tsv",
    "downstream": "results/downstream/{task}.tsv",
}

# Thresholds of the verdicts (docs/findings.md states each with its reason).
SILHOUETTE_MIN = 0.1        # best-layer MDS silhouette: groups with no structure give ~0; both seed values exceed it
KEEP_POINTS = 1.0           # convexity pruning keeps accuracy: at most 1 point lost (or CIs overlap)
SAVING_PCT = 10.0           # "large" compute saving: >= 10 % fewer upstream parameters (more than one layer of 12)
PHONE_MARGIN_POINTS = 5.0   # best layer vs MFCC on phone_linear: at least 5 points (issue 15 target)
SPEARMAN_ALPHA = 0.05       # convexity and probe accuracy rise together: rho > 0 with p < 0.05
MIN_LAYERS_SPEARMAN = 4     # fewer hidden states give no meaningful rank correlation
HALF = 0.5                  # "more than half of the heads"
NEURON_SHARE_MIN = 1.0      # gender / pitch property neurons: >= 1 % of d_ffn in some layer (issue 15 target)
CONVEXITY_RANGE_MIN = 10.0  # convexity varies across layers by >= 10 points (issue 15 target)
EDIT_MARGIN_POINTS = 3.0    # removing phone-type neurons: >= 3 points below the random control (issue 15 target)
LOWER_IS_BETTER = {"per", "wer", "cer", "eer", "loss"}
#: a removal entry's property -> the downstream tasks that "match" it (claim: removal hurts them most)
MATCHING_TASKS = {"phone_type": ("phone_linear", "phone_1hidden"), "gender": ("gender",)}
PRIMARY_READOUTS = ("last", "weighted")  # edit-sensitive readout first, s3prl's weighted sum second


class NotTestable(Exception):
    """The claim cannot be tested on this run; the message says why (becomes ``detail``)."""

    def __init__(self, reason: str, evidence: str = ""):
        super().__init__(reason)
        self.evidence = evidence


@dataclass
class Context:
    """Where a claim finds its tables.

    Parameters
    ----------
    root
        Working directory of the run (paths in :data:`TABLES` are relative to it).
    corpus
        The analysis corpus.
    upstreams
        Upstreams to report per-upstream claims for (analysis, downstream and pruning upstreams).
    baselines
        Baseline upstreams of the downstream tables (``downstream.baselines``, e.g. mfcc, fbank).
    available
        Relative paths this config produces; None = any file that exists under ``root``. A table
        outside it is "not configured" even if an old file lies there.
    """

    root: Path
    corpus: str
    upstreams: Sequence[str]
    baselines: Sequence[str] = ("mfcc", "fbank")
    available: frozenset[str] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def path(self, key: str, **fmt) -> str:
        return TABLES[key].format(corpus=self.corpus, **fmt)

    def has(self, key: str, **fmt) -> bool:
        rel = self.path(key, **fmt)
        return (self.available is None or rel in self.available) and (Path(self.root) / rel).is_file()

    def read(self, key: str, **fmt) -> tuple[pd.DataFrame, str]:
        """The table and its relative path; :class:`NotTestable` when it is not there or unreadable."""
        rel = self.path(key, **fmt)
        if self.available is not None and rel not in self.available:
            raise NotTestable(f"{rel} is not produced by this config")
        full = Path(self.root) / rel
        if not full.is_file():
            raise NotTestable(f"{rel} is missing")
        if rel not in self._cache:
            try:
                self._cache[rel] = pd.read_csv(full, sep="\t")
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
                raise NotTestable(f"{rel} cannot be read: {e}", rel) from e
        table = self._cache[rel]
        if table.empty:
            raise NotTestable(f"{rel} has no rows", rel)
        return table.copy(), rel

    def with_table(self, key: str, upstreams: Iterable[str] | None = None) -> list[str]:
        """Upstreams (of ``upstreams``, default all) whose ``key`` table exists."""
        return [u for u in (self.upstreams if upstreams is None else upstreams) if self.has(key, upstream=u)]


@dataclass(frozen=True)
class Finding:
    id: str
    study: str
    claim: str
    seed_value: str
    func: Callable[[Context], list[dict]]


FINDINGS: list[Finding] = []


def finding(id: str, study: str, claim: str, seed_value: str = ""):
    """Register a claim function ``f(ctx) -> list of row dicts`` (see :func:`_row`)."""
    def register(func):
        FINDINGS.append(Finding(id, study, claim, seed_value, func))
        return func
    return register


def _row(verdict: str, upstream: str = "", measured: float | None = None, ci_half: float | None = None,
         evidence: str | Sequence[str] = "", detail: str = "", task: str = "", readout: str = "", latency: str = "") -> dict:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    ev = evidence if isinstance(evidence, str) else ";".join(dict.fromkeys(e for e in evidence if e))
    return {"upstream": upstream, "measured": _num(measured), "ci_half": _num(ci_half), "verdict": verdict,
            "evidence": ev, "detail": detail, "task": task, "readout": readout, "latency": latency}


def _num(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _int(x) -> str:
    return str(int(float(x))) if _finite(x) else "-"


def _finite(*xs) -> bool:
    return all(math.isfinite(_num(x)) for x in xs)


def _untestable(reason: str, evidence="", upstream: str = "", task: str = "", readout: str = "") -> dict:
    return _row("not testable", upstream=upstream, evidence=evidence, detail=reason, task=task, readout=readout)


def _higher_is_better(frame: pd.DataFrame | pd.Series) -> bool:
    if "higher_is_better" in frame and pd.notna(np.asarray(frame["higher_is_better"]).ravel()[0]):
        v = np.asarray(frame["higher_is_better"]).ravel()[0]
        return str(v).lower() in ("true", "1", "1.0")
    if "metric" in frame:
        return str(np.asarray(frame["metric"]).ravel()[0]).lower() not in LOWER_IS_BETTER
    return True


def _combined_half(*halves) -> float:
    """Half-width of the CI of a difference of independent means (quadrature sum)."""
    h = [_num(x) for x in halves]
    return math.sqrt(sum(x * x for x in h)) if all(math.isfinite(x) for x in h) else math.nan


def _compare(better, worse, hib: bool, what_better: str, what_worse: str, scale: float = 100.0,
             margin: float = 0.0) -> tuple[str, float, float, str]:
    """Is ``better`` better than ``worse`` (rows with mean, ci_low, ci_high, ci_half), CIs disjoint?

    Returns ``verdict, measured (better - worse in the good direction, x scale), ci_half, text``.
    ``margin`` (same units as measured) is required on top of the separation.
    """
    sign = 1.0 if hib else -1.0
    diff = sign * (float(better["mean"]) - float(worse["mean"])) * scale
    half = _combined_half(better.get("ci_half"), worse.get("ci_half")) * scale
    text = (f"{what_better} {_fmt_ci(better, scale)} vs {what_worse} {_fmt_ci(worse, scale)}"
            f" ({'higher' if hib else 'lower'} is better)")
    if not (diff > margin):
        return "does not hold", diff, half, text + (f"; difference {diff:+.2f} is not above {margin:g}" if margin else "")
    if not _finite(better.get("ci_low"), better.get("ci_high"), worse.get("ci_low"), worse.get("ci_high")):
        return "not testable", diff, half, text + "; no 95% CI (one seed?): the direction is right but untested"
    separated = (float(better["ci_low"]) > float(worse["ci_high"])) if hib else (float(better["ci_high"]) < float(worse["ci_low"]))
    if not separated:
        return "does not hold", diff, half, text + "; the 95% CIs overlap"
    return "holds", diff, half, text + "; 95% CIs disjoint"


def _fmt_ci(r, scale: float = 100.0) -> str:
    m, h = _num(r.get("mean")) * scale, _num(r.get("ci_half")) * scale
    return f"{m:.2f}" + (f" ± {h:.2f}" if math.isfinite(h) else " (no CI)")


def _readouts(table: pd.DataFrame) -> list[str]:
    """Readouts of a table in report order: ``last`` (primary when present), ``weighted``, others."""
    if "readout" not in table:
        return ["weighted"]
    present = list(dict.fromkeys(table["readout"].dropna().astype(str)))
    return [r for r in PRIMARY_READOUTS if r in present] + [r for r in present if r not in PRIMARY_READOUTS]


def _at_largest_level(part: pd.DataFrame, level: str, method: str, a: str, b: str):
    """``(level, row of a, row of b)`` at the largest ``level`` > 0 that both methods were evaluated at, or None
    (e.g. protected vs plain norm pruning at the highest sparsity, globalness vs random at the largest fraction)."""
    part = part[part[level].astype(float) > 0]
    common = set(part.loc[part[method] == a, level]) & set(part.loc[part[method] == b, level])
    if not common:
        return None
    x = max(common)
    at = part[part[level] == x]
    return x, at[at[method] == a].iloc[0], at[at[method] == b].iloc[0]


def _method_vs_method(ctx: "Context", table: str, level: str, method: str, a: str, b: str, *, missing: str,
                      no_level: str, measured: str, no_table: str) -> list[dict]:
    """Method ``a`` against ``b`` at the largest ``level`` both were evaluated at, per upstream, task and readout.

    ``missing`` (may use ``{found}``, the methods present), ``no_level`` and ``no_table`` are the reasons
    of the not-testable rows; ``measured`` names the difference reported.
    """
    rows = []
    for up in ctx.with_table(table):
        t, ev = ctx.read(table, upstream=up)
        found = set(t[method].dropna().astype(str))
        if not {a, b} <= found:
            rows.append(_untestable(missing.format(found=sorted(found)), ev, up))
            continue
        for task in dict.fromkeys(t["task"]):
            for readout in _readouts(t[t["task"] == task]):
                pair = _at_largest_level(_by_readout(t[t["task"] == task], readout), level, method, a, b)
                if pair is None:
                    rows.append(_untestable(no_level, ev, up, task, readout))
                    continue
                x, row_a, row_b = pair
                verdict, diff, half, text = _compare(row_a, row_b, _higher_is_better(row_a), a, b)
                rows.append(_row(verdict, up, diff, half, ev, f"{level} {x:g} on {task}: {text} (measured = {measured}, points)",
                                 task, readout))
    return rows or [_untestable(no_table)]


def _by_readout(table: pd.DataFrame, readout: str) -> pd.DataFrame:
    return table if "readout" not in table else table[table["readout"].astype(str) == readout]


# --------------------------------------------------------------------------- property neurons


@finding("neurons.lower_layers", NEURONS, "more property neurons in the lower half of the layers than in the upper half "
         "(pooled over properties)", "more in lower layers")
def lower_layers(ctx: Context) -> list[dict]:
    rows = []
    for up in ctx.upstreams:
        if not ctx.has("counts", upstream=up):
            continue
        t, ev = ctx.read("counts", upstream=up)
        t = t[t["group"].astype(str) == "all"]
        layers = sorted(t["layer"].unique())
        if len(layers) < 2:
            rows.append(_untestable(f"{len(layers)} layer(s): no lower and upper half", ev, up))
            continue
        half = len(layers) // 2  # an odd middle layer belongs to neither half
        lower, upper = set(layers[:half]), set(layers[-half:])
        per = t.groupby("property")["n_property_neurons"]
        n_low = int(t.loc[t["layer"].isin(lower), "n_property_neurons"].sum())
        n_up = int(t.loc[t["layer"].isin(upper), "n_property_neurons"].sum())
        by_prop = ", ".join(f"{p} {int(g[t.loc[g.index, 'layer'].isin(lower)].sum())}/{int(g[t.loc[g.index, 'layer'].isin(upper)].sum())}"
                            for p, g in per)
        detail = (f"lower layers {sorted(map(int, lower))}: {n_low}, upper layers {sorted(map(int, upper))}: {n_up} "
                  f"property neurons (lower/upper per property: {by_prop})")
        if n_low + n_up == 0:
            rows.append(_untestable("no property neurons in any layer; " + detail, ev, up))
            continue
        share = n_low / (n_low + n_up)
        rows.append(_row("holds" if n_low > n_up else "does not hold", up, share, None, ev,
                         f"share in the lower half {share:.2f}; " + detail))
    return rows or [_untestable("no neuron counts table (neurons stage of analysis_upstreams)")]


@finding("neurons.gender_pitch_overlap", NEURONS, "the gender ∩ pitch overlap is the largest overlap between two "
         "properties' neuron sets (Jaccard pooled over layers)", "gender ∩ pitch largest")
def gender_pitch_overlap(ctx: Context) -> list[dict]:
    rows = []
    for up in ctx.upstreams:
        if not ctx.has("overlaps", upstream=up):
            continue
        t, ev = ctx.read("overlaps", upstream=up)
        if "level" in t:
            t = t[t["level"].astype(str) == "property"]
        pairs = {}
        for (a, b), g in t.groupby(["a", "b"]):
            union = float(g["union"].sum())
            pairs[frozenset((a, b))] = (float(g["intersection"].sum()), union, {a: float(g["n_a"].sum()), b: float(g["n_b"].sum())})
        key = frozenset(("gender", "pitch"))
        if key not in pairs:
            rows.append(_untestable("no gender–pitch pair in the table (neurons.properties must list gender and pitch)", ev, up))
            continue
        inter, union, sizes = pairs[key]
        if min(sizes.values()) == 0:
            empty = " and ".join(p for p in ("gender", "pitch") if sizes[p] == 0)
            rows.append(_untestable(f"no {empty} property neurons in any layer", ev, up))
            continue
        jac = {k: (i / u if u else 0.0) for k, (i, u, _) in pairs.items()}
        others = {k: v for k, v in jac.items() if k != key}
        text = "; ".join(f"{'∩'.join(sorted(k))} {v:.3f} ({int(pairs[k][0])}/{int(pairs[k][1])})" for k, v in sorted(jac.items(), key=lambda kv: -kv[1]))
        best_other = max(others.values()) if others else -math.inf
        holds = jac[key] > best_other and inter > 0
        rows.append(_row("holds" if holds else "does not hold", up, jac[key], None, ev,
                         f"pooled Jaccard (intersection/union summed over layers): {text}"))
    return rows or [_untestable("no neuron overlaps table (neurons stage of analysis_upstreams)")]


@finding("neurons.silhouette", NEURONS, f"the property's groups separate on the MDS map of its best layer "
         f"(silhouette ≥ {SILHOUETTE_MIN:g}, all neurons)", "hubert_base: gender 0.365, pitch 0.182")
def silhouette(ctx: Context) -> list[dict]:
    seeds = {"gender": 0.365, "pitch": 0.182}
    rows = []
    for up in ctx.upstreams:
        if not ctx.has("geometry", upstream=up):
            continue
        t, ev = ctx.read("geometry", upstream=up)
        if "neuron_set" in t:
            t = t[t["neuron_set"].astype(str) == "all"]
        for prop, g in t.groupby("property", sort=False):
            g = g[pd.to_numeric(g["silhouette_mds"], errors="coerce").notna()]
            if g.empty:
                rows.append(_untestable(f"{prop}: silhouette undefined in every layer (too few rows or no neuron above chance)",
                                        ev, up, task=prop))
                continue
            best = g.loc[g["silhouette_mds"].astype(float).idxmax()]
            s = float(best["silhouette_mds"])
            seed = f"; seed hubert_base {seeds[prop]:.3f}" if prop in seeds else ""
            rows.append(_row("holds" if s >= SILHOUETTE_MIN else "does not hold", up, s, None, ev,
                             f"{prop}: best layer {int(best['layer'])} silhouette {s:.3f} (threshold {SILHOUETTE_MIN:g}; "
                             f"layers: {', '.join(f'{float(x):.3f}' for x in g.sort_values('layer')['silhouette_mds'])}){seed}",
                             task=prop))
    return rows or [_untestable("no neuron geometry table (neurons stage of analysis_upstreams)")]


@finding("neurons.remove_vs_random", NEURONS, "removing a property's neurons lowers the matching task more than "
         "removing as many random neurons (95% CIs disjoint)", "remove < random")
def remove_vs_random(ctx: Context) -> list[dict]:
    return _remove_vs_random(ctx)


def _remove_vs_random(ctx: Context, margin: float = 0.0, properties: Sequence[str] | None = None) -> list[dict]:
    """Removal vs its random control on each matching task and readout; ``margin`` points required on top."""
    rows = []
    for up in ctx.with_table("editing"):
        t, ev = ctx.read("editing", upstream=up)
        for entry in dict.fromkeys(t["entry"].dropna().astype(str)):
            prop = entry.split("-")[0]
            if properties is not None and prop not in properties:
                continue
            matching = [task for task in MATCHING_TASKS.get(prop, ()) if task in set(t["task"])]
            if not matching:
                rows.append(_untestable(f"removal of {entry} is evaluated on {sorted(set(t['task']))}, none of its matching "
                                        f"tasks {list(MATCHING_TASKS.get(prop, ())) or '(none defined)'}", ev, up))
                continue
            for task in matching:
                part = t[(t["task"] == task) & (t["entry"].astype(str) == entry)]
                for readout in _readouts(part):
                    conds = {r["condition"]: r for _, r in _by_readout(part, readout).iterrows()}
                    if "remove" not in conds or "random" not in conds:
                        rows.append(_untestable(f"{entry}: no {'random control' if 'remove' in conds else 'removal'} row "
                                                "(pruning.edit.random)", ev, up, task, readout))
                        continue
                    rem, rnd = conds["remove"], conds["random"]
                    n_removed = _num(rem.get("n_neurons_removed"))
                    if n_removed == 0:
                        rows.append(_untestable(f"{entry}: the mask removes no neuron (no {prop} property neurons)", ev, up, task, readout))
                        continue
                    # the random control must be the worse-off one for the claim: random is "better" than remove
                    verdict, diff, half, text = _compare(rnd, rem, _higher_is_better(rem), "random", f"remove_{entry}", margin=margin)
                    orig = conds.get("original")
                    extra = f"; original {_fmt_ci(orig)}" if orig is not None else ""
                    extra += f"; {int(n_removed)} neurons removed" if math.isfinite(n_removed) else ""
                    rows.append(_row(verdict, up, 0.0 - diff, half, ev, f"{entry} on {task}: {text}{extra} (measured = remove − random, points)",
                                     task, readout))
    what = f"removal of {' or '.join(properties)} neurons" if properties else "editing table"
    return rows or [_untestable(f"no {what}: set pruning.upstreams and pruning.edit (remove, tasks, random: true)")]


@finding("neurons.gender_erasure", NEURONS, "removing male (female) gender neurons lowers speaker ID on male (female) "
         "speakers more than on the other gender (95% CIs disjoint)", "gender-specific erasure")
def gender_erasure(ctx: Context) -> list[dict]:
    rows = []
    for up in ctx.with_table("editing"):
        t, ev = ctx.read("editing", upstream=up)
        entries = [e for e in dict.fromkeys(t["entry"].dropna().astype(str)) if e in ("gender-M", "gender-F")]
        if not entries:
            rows.append(_untestable("no per-gender removal: add gender:M and gender:F to neurons.masks.remove and "
                                    "pruning.edit.remove", ev, up))
            continue
        for entry in entries:
            own, other = entry[-1], "F" if entry[-1] == "M" else "M"
            part = t[t["entry"].astype(str) == entry]
            tasks = [k for k in dict.fromkeys(part["task"]) if f"delta_by_gender_{own}" in part
                     and part.loc[part["task"] == k, f"delta_by_gender_{own}"].notna().any()]
            if not tasks:
                rows.append(_untestable(f"{entry}: no task scored per speaker gender (speaker_linear_utter in pruning.edit.tasks)", ev, up))
                continue
            for task in sorted(tasks, key=lambda k: k != "speaker_linear_utter"):
                for readout in _readouts(part[part["task"] == task]):
                    conds = {r["condition"]: r for _, r in _by_readout(part[part["task"] == task], readout).iterrows()}
                    rem, orig = conds.get("remove"), conds.get("original")
                    if rem is None or orig is None:
                        rows.append(_untestable(f"{entry}: no removal or original row", ev, up, task, readout))
                        continue
                    if _num(rem.get("n_neurons_removed")) == 0:
                        rows.append(_untestable(f"{entry}: no {'male' if own == 'M' else 'female'} gender neurons to remove", ev, up, task, readout))
                        continue
                    d_own, d_other = _num(rem[f"delta_by_gender_{own}"]), _num(rem.get(f"delta_by_gender_{other}"))
                    h_own = _combined_half(rem.get(f"ci_half_by_gender_{own}"), orig.get(f"ci_half_by_gender_{own}"))
                    h_other = _combined_half(rem.get(f"ci_half_by_gender_{other}"), orig.get(f"ci_half_by_gender_{other}"))
                    hib = _higher_is_better(rem)
                    worse_own = (d_own < d_other) if hib else (d_own > d_other)
                    gap = (d_other - d_own if hib else d_own - d_other) * 100
                    text = (f"{entry} on {task}: change on {own} speakers {100 * d_own:+.2f} ± {100 * h_own:.2f}, on {other} "
                            f"speakers {100 * d_other:+.2f} ± {100 * h_other:.2f} points")
                    if not _finite(d_own, d_other):
                        rows.append(_untestable(text + "; a per-gender change is missing", ev, up, task, readout))
                        continue
                    if not worse_own:
                        verdict = "does not hold"
                    elif not _finite(h_own, h_other):
                        verdict, text = "not testable", text + "; no 95% CI (one seed?)"
                    else:
                        sep = (d_own + h_own < d_other - h_other) if hib else (d_own - h_own > d_other + h_other)
                        verdict, text = ("holds", text + "; CIs disjoint") if sep else ("does not hold", text + "; the 95% CIs overlap")
                    rows.append(_row(verdict, up, gap, _combined_half(h_own, h_other) * 100, ev,
                                     text + " (measured = how much more the own gender loses, points)", task, readout))
    return rows or [_untestable("no editing table: set pruning.upstreams and pruning.edit")]


@finding("neurons.protected_pruning", NEURONS, "at the highest FFN sparsity, pruning that protects property neurons scores "
         "above plain norm pruning (95% CIs disjoint)", "protected_norm > norm")
def protected_pruning(ctx: Context) -> list[dict]:
    return _method_vs_method(
        ctx, "ffn_pruning", "sparsity", "method", "protected_norm", "norm",
        missing="methods {found}: need norm and protected_norm in pruning.ffn.methods",
        no_level="no sparsity evaluated with both methods", measured="protected − norm",
        no_table="no FFN pruning table: set pruning.ffn (methods norm and protected_norm, sparsities, tasks)")


# --------------------------------------------------------------------------- attention


@finding("attention.globalness_half", ATTENTION, "more than half of the heads can be removed by globalness with little "
         "loss (≤ pruning.heads.max_loss points)", "> 50% of heads")
def globalness_half(ctx: Context) -> list[dict]:
    rows = []
    for up in ctx.with_table("head_fractions"):
        t, ev = ctx.read("head_fractions", upstream=up)
        g = t[t["ranking"].astype(str) == "globalness"]
        if g.empty:
            rows.append(_untestable("no globalness ranking in pruning.heads.rankings", ev, up))
            continue
        rnd = t[t["ranking"].astype(str) == "random"]
        for _, r in g.iterrows():
            task, readout = r["task"], str(r.get("readout", "weighted"))
            text = (f"globalness: up to {float(r['max_fraction']):g} of the heads within {float(r['max_loss']):g} point(s) "
                    f"(score {100 * float(r['score']):.2f} vs original {100 * float(r['original']):.2f}, loss {float(r['loss']):.2f}; "
                    f"fractions {r['fractions']})")
            rr = rnd[(rnd["task"] == task) & (rnd.get("readout", readout) == readout)] if len(rnd) else rnd
            if len(rr):
                text += f"; random: up to {float(rr.iloc[0]['max_fraction']):g}"
            if float(r["max_fraction"]) > HALF:
                rows.append(_row("holds", up, float(r["max_fraction"]), None, ev, text, task, readout))
            elif float(r["largest_evaluated"]) <= HALF:
                rows.append(_untestable(text + f"; the grid stops at {float(r['largest_evaluated']):g}: add a fraction > 0.5 "
                                        "to pruning.heads.fractions", ev, up, task, readout))
            else:
                rows.append(_row("does not hold", up, float(r["max_fraction"]), None, ev, text, task, readout))
    return rows or [_untestable("no head-pruning table: set pruning.heads (rankings incl. globalness, fractions, tasks)")]


@finding("attention.globalness_vs_random", ATTENTION, "at the largest fraction removed, pruning by "
         "globalness scores above random pruning (95% CIs disjoint)", "globalness > random")
def globalness_vs_random(ctx: Context) -> list[dict]:
    return _method_vs_method(
        ctx, "head_curves", "fraction", "ranking", "globalness", "random",
        missing="need both globalness and random in pruning.heads.rankings",
        no_level="no fraction > 0 evaluated with both rankings", measured="globalness − random",
        no_table="no head-pruning curves: set pruning.heads (rankings globalness and random)")


@finding("attention.segmentation_vs_mfcc", ATTENTION, "phoneme segmentation from the best attention head has a higher "
         "R-value than from MFCCs", "Mockingjay: 79.99 vs MFCC 76.68")
def segmentation_vs_mfcc(ctx: Context) -> list[dict]:
    if not ctx.has("segmentation"):
        return [_untestable("no segmentation summary (attention stage of analysis_upstreams)")]
    t, ev = ctx.read("segmentation")
    rows = []
    for up, g in t.groupby("upstream", sort=False):
        att = g[g["feature"].astype(str).str.startswith("attention")]
        mfcc = g[g["feature"].astype(str) == "MFCC"]
        if att.empty or mfcc.empty or not _finite(att.iloc[0]["r_value"], mfcc.iloc[0]["r_value"]):
            rows.append(_untestable("no attention or MFCC R-value (attention.segmentation.heads: none?)", ev, up))
            continue
        a, m = att.iloc[0], mfcc.iloc[0]
        diff = 100 * (float(a["r_value"]) - float(m["r_value"]))
        hid = g[g["feature"].astype(str).str.startswith("hidden")]
        text = (f"R attention {100 * float(a['r_value']):.2f} (layer {_int(a['layer'])}, head {_int(a['head'])}) vs MFCC {100 * float(m['r_value']):.2f}"
                + (f"; best hidden state {100 * float(hid.iloc[0]['r_value']):.2f}" if len(hid) else "")
                + "; no CI: one score per feature over all test boundaries (measured = attention − MFCC, points)")
        rows.append(_row("holds" if diff > 0 else "does not hold", str(up), diff, None, ev, text))
    return rows


# --------------------------------------------------------------------------- convexity


def _peak_in_middle(ctx: Context, prop: str) -> list[dict]:
    rows = []
    for up in ctx.with_table("convexity"):
        t, ev = ctx.read("convexity", upstream=up)
        g = t[t["property"].astype(str) == prop].sort_values("layer")
        g = g[pd.to_numeric(g["mean"], errors="coerce").notna()]
        if g.empty:
            rows.append(_untestable(f"no {prop} convexity (convexity.properties, or too few points per class)", ev, up, prop))
            continue
        if len(g) < 3:
            rows.append(_untestable(f"{len(g)} hidden states: no middle layer", ev, up, prop))
            continue
        peak = g.loc[g["mean"].astype(float).idxmax()]
        first, last = g.iloc[0], g.iloc[-1]
        end = first if float(first["mean"]) >= float(last["mean"]) else last
        diff = float(peak["mean"]) - float(end["mean"])
        half = _combined_half(peak.get("ci_half"), end.get("ci_half"))
        lp = int(peak["layer"])
        text = (f"{prop} convexity peaks at hidden state {lp} of {int(first['layer'])}..{int(last['layer'])}: "
                f"{float(peak['mean']):.2f} ± {_num(peak.get('ci_half')):.2f} % vs first {float(first['mean']):.2f} ± "
                f"{_num(first.get('ci_half')):.2f}, last {float(last['mean']):.2f} ± {_num(last.get('ci_half')):.2f} "
                f"(range {float(g['mean'].max() - g['mean'].min()):.2f} points; measured = peak − higher end)")
        if lp in (int(first["layer"]), int(last["layer"])):
            rows.append(_row("does not hold", up, diff, half, ev, text, prop))
        elif not _finite(peak.get("ci_low"), first.get("ci_high"), last.get("ci_high")):
            rows.append(_row("not testable", up, diff, half, ev, text + "; no CI (convexity.repeats < 2)", prop))
        elif float(peak["ci_low"]) > max(float(first["ci_high"]), float(last["ci_high"])):
            rows.append(_row("holds", up, diff, half, ev, text + "; CI above both ends", prop))
        else:
            rows.append(_row("does not hold", up, diff, half, ev, text + "; the peak's CI overlaps an end's", prop))
    return rows or [_untestable("no convexity summary (convexity stage of analysis_upstreams)")]


@finding("convexity.word_peak", CONVEXITY, "word convexity peaks in a middle layer (not the first or last hidden state; "
         "95% CI above both)", "middle layer")
def word_peak(ctx: Context) -> list[dict]:
    return _peak_in_middle(ctx, "word")


@finding("convexity.phone_peak", CONVEXITY, "phone convexity peaks in a middle layer (not the first or last hidden state; "
         "95% CI above both)", "middle layer")
def phone_peak(ctx: Context) -> list[dict]:
    return _peak_in_middle(ctx, "phone")


@finding("convexity.pruning", CONVEXITY, f"dropping the layers after the most convex one keeps accuracy (≤ {KEEP_POINTS:g} point "
         f"lost, or CIs overlap) with ≥ {SAVING_PCT:g} % fewer upstream parameters", "accuracy kept, compute saved")
def convexity_pruning(ctx: Context) -> list[dict]:
    # The verdict uses parameters, not latency: a latency measured on a shared machine would make the
    # verdict of two identical runs differ. The latency and training time are stated in ``latency``.
    rows = []
    for up in ctx.with_table("convexity_pruning"):
        t, ev = ctx.read("convexity_pruning", upstream=up)
        t = t.assign(_o=t["mode"].astype(str).map({"finetuned": 0, "frozen": 1}).fillna(2)).sort_values(["_o", "task"])
        for _, r in t.iterrows():
            task, mode = str(r["task"]), str(r["mode"])
            hib = _higher_is_better(r)
            change = float(r["accuracy_change_points"]) * (1 if hib else -1)  # points, negative = worse
            half = 100 * _combined_half(r.get("full_ci_half"), r.get("pruned_ci_half"))
            overlap = _finite(half) and abs(change) <= half  # |difference| within the combined half-width
            kept = change >= -KEEP_POINTS or overlap
            params = _num(r.get("params_change_pct"))
            text = (f"{mode}, {task}: L* = {r['most_convex_layer']} of {r['property']}, keeps {r['layers_kept']} of "
                    f"{r['layers_total']} layers; {100 * float(r['full_mean']):.2f} → {100 * float(r['pruned_mean']):.2f} "
                    f"({change:+.2f} points, ±{half:.2f}); upstream parameters {params:+.1f} % "
                    f"({_num(r.get('full_params')):.0f} → {_num(r.get('pruned_params')):.0f})")
            timing = (f"latency {_num(r.get('latency_change_pct')):+.1f} % ({_num(r.get('full_latency_ms')):.1f} → "
                      f"{_num(r.get('pruned_latency_ms')):.1f} ms, {r.get('latency_source', '')}), "
                      f"training time {_num(r.get('train_time_change_pct')):+.1f} %")
            if int(r["layers_kept"]) >= int(r["layers_total"]):
                rows.append(_row("does not hold", up, change, half, ev, text + "; nothing cut (the most convex layer is the last)",
                                 task, mode, timing))
                continue
            saved = math.isfinite(params) and params <= -SAVING_PCT
            verdict = "holds" if kept and saved else "does not hold"
            why = "" if verdict == "holds" else ("; accuracy lost" if not kept else f"; fewer than {SAVING_PCT:g} % of the parameters saved")
            rows.append(_row(verdict, up, change, half, ev, text + why, task, mode, timing))
    return rows or [_untestable("no convexity pruning table: set pruning.layers.tasks for an analysis upstream in pruning.upstreams")]


# --------------------------------------------------------------------------- quality of the upstreams


def _best_vs_baseline(ctx: Context, task: str) -> tuple[pd.Series, pd.Series, str, str]:
    """Best (upstream, hidden state) and the MFCC baseline on ``task``: from layerwise.tsv, else the task table."""
    if ctx.has("layerwise"):
        t, ev = ctx.read("layerwise")
        t = t[t["task"] == task]
        if len(t):
            base = t["baseline"].astype(str).str.lower().isin(("true", "1"))
            ups, bas = t[~base], t[base]
            if ups.empty:
                raise NotTestable(f"no trained upstream probed layer-wise on {task}", ev)
            best = ups.loc[ups["mean"].astype(float).idxmax()]
            mfcc = bas[bas["upstream"] == "mfcc"]
            if mfcc.empty:
                raise NotTestable("no mfcc baseline: add mfcc to downstream.baselines", ev)
            return best, mfcc.iloc[0], ev, f"hidden state {int(float(best['layer']))}"
    if not ctx.has("downstream", task=task):
        raise NotTestable(f"{task} is not a downstream task of this config (downstream.tasks)")
    t, ev = ctx.read("downstream", task=task)
    t = t[t["variant"] == "original"]
    mfcc = t[(t["upstream"] == "mfcc") & (t["readout"].astype(str) == "weighted")] if "readout" in t else t[t["upstream"] == "mfcc"]
    if mfcc.empty:
        raise NotTestable("no mfcc baseline: add mfcc to downstream.baselines", ev)
    ups = t[~t["upstream"].isin(set(ctx.baselines) | {"mfcc", "fbank"})]
    if ups.empty:
        raise NotTestable(f"no trained upstream on {task}", ev)
    best = ups.loc[ups["mean"].astype(float).idxmax()]
    return best, mfcc.iloc[0], ev, f"readout {best.get('readout', 'weighted')}"


def _beats_mfcc(ctx: Context, task: str, margin: float) -> list[dict]:
    try:
        best, mfcc, ev, where = _best_vs_baseline(ctx, task)
    except NotTestable as e:
        return [_untestable(str(e), e.evidence, task=task)]
    verdict, diff, half, text = _compare(best, mfcc, _higher_is_better(best), f"{best['upstream']} ({where})", "mfcc", margin=margin)
    return [_row(verdict, str(best["upstream"]), diff, half, ev, text + f" (measured = best − mfcc, points; margin {margin:g})", task)]


@finding("quality.phone_vs_mfcc", QUALITY, f"the best layer of the best trained upstream beats the MFCC baseline by "
         f"≥ {PHONE_MARGIN_POINTS:g} points on phone_linear (95% CIs disjoint)", "≥ MFCC + 5 points")
def phone_vs_mfcc(ctx: Context) -> list[dict]:
    return _beats_mfcc(ctx, "phone_linear", PHONE_MARGIN_POINTS)


@finding("quality.speaker_vs_mfcc", QUALITY, "the best layer of the best trained upstream beats the MFCC baseline on "
         "speaker ID (95% CIs disjoint)", "> MFCC")
def speaker_vs_mfcc(ctx: Context) -> list[dict]:
    return _beats_mfcc(ctx, "speaker_linear_utter", 0.0)


@finding("quality.convexity_tracks_probe", QUALITY, "graph convexity and layer-wise probe accuracy rise together across "
         f"layers (Spearman ρ > 0, p < {SPEARMAN_ALPHA:g})", "rise together (Dorszewski et al. 2024)")
def convexity_tracks_probe(ctx: Context) -> list[dict]:
    from scipy.stats import spearmanr

    from speechdissect.downstream.layerwise import TASK_PROPERTY

    if not ctx.has("layerwise"):
        return [_untestable("no layer-wise probe table: set downstream.layerwise (tasks, upstreams)")]
    t, ev = ctx.read("layerwise")
    t = t[~t["baseline"].astype(str).str.lower().isin(("true", "1"))]
    rows = []
    for (up, task), g in t.groupby(["upstream", "task"], sort=True):
        prop = TASK_PROPERTY.get(task)
        if prop is None:
            continue
        if not ctx.has("convexity", upstream=up):
            rows.append(_untestable(f"{up} has no convexity summary (not in analysis_upstreams)", ev, up, task))
            continue
        c, cev = ctx.read("convexity", upstream=up)
        c = c[c["property"].astype(str) == prop][["layer", "mean"]].rename(columns={"mean": "convexity"})
        m = g[["layer", "mean"]].assign(layer=lambda d: d["layer"].astype(float).astype(int)).merge(
            c.assign(layer=c["layer"].astype(int)), on="layer").dropna()
        if len(m) < MIN_LAYERS_SPEARMAN:
            rows.append(_untestable(f"{len(m)} hidden states with both a probe score and {prop} convexity "
                                    f"(< {MIN_LAYERS_SPEARMAN})", [ev, cev], up, task))
            continue
        if m["mean"].nunique() < 2 or m["convexity"].nunique() < 2:
            rows.append(_untestable("constant over layers: no rank correlation", [ev, cev], up, task))
            continue
        rho, p = spearmanr(m["convexity"], m["mean"])
        text = (f"{task} vs {prop} convexity over hidden states {m['layer'].min()}..{m['layer'].max()}: Spearman ρ {rho:.2f} "
                f"(p {p:.3f}, n {len(m)})")
        rows.append(_row("holds" if rho > 0 and p < SPEARMAN_ALPHA else "does not hold", str(up), float(rho), None,
                         [ev, cev], text, task))
    return rows or [_untestable("no layer-wise task with a convexity property", ev)]


@finding("quality.gender_pitch_neurons", QUALITY, f"gender and pitch property neurons are ≥ {NEURON_SHARE_MIN:g} % of "
         "the FFN width in some layer of at least one upstream (one row per property)", "MelHuBERT: 278 of 3072 gender neurons in layer 1")
def gender_pitch_neurons(ctx: Context) -> list[dict]:
    if not ctx.has("models"):
        return [_untestable("no models-side-by-side table (neurons stage of analysis_upstreams)")]
    t, ev = ctx.read("models")
    rows = []
    for prop in ("gender", "pitch"):
        g = t[t["property"].astype(str) == prop]
        if g.empty:
            rows.append(_untestable(f"no {prop} property (neurons.properties)", ev, task=prop))
            continue
        best = g.loc[g["share_property_neurons"].astype(float).idxmax()]
        share = 100 * float(best["share_property_neurons"])
        per = "; ".join(f"{u}: {', '.join(str(int(n)) for n in x.sort_values('layer')['n_property_neurons'])} of {int(x['d_ffn'].iloc[0])}"
                        for u, x in g.groupby("upstream", sort=False))
        rows.append(_row("holds" if share >= NEURON_SHARE_MIN else "does not hold", str(best["upstream"]), share, None, ev,
                         f"{prop}: most in layer {int(best['layer'])} of {best['upstream']}, {int(best['n_property_neurons'])} of "
                         f"{int(best['d_ffn'])} ({share:.2f} %); per layer: {per}", prop))
    return rows


@finding("quality.convexity_range", QUALITY, f"phone or word convexity varies by ≥ {CONVEXITY_RANGE_MIN:g} points across layers "
         "(highest vs lowest layer, 95% CIs disjoint)", "≥ 10 points for at least one upstream")
def convexity_range(ctx: Context) -> list[dict]:
    rows = []
    for up in ctx.with_table("convexity"):
        t, ev = ctx.read("convexity", upstream=up)
        for prop in ("phone", "word"):
            g = t[t["property"].astype(str) == prop]
            g = g[pd.to_numeric(g["mean"], errors="coerce").notna()]
            if len(g) < 2:
                rows.append(_untestable(f"{prop} convexity defined in {len(g)} hidden state(s)", ev, up, prop))
                continue
            hi, lo = g.loc[g["mean"].astype(float).idxmax()], g.loc[g["mean"].astype(float).idxmin()]
            verdict, diff, half, text = _compare(hi, lo, True, f"hidden state {int(hi['layer'])}", f"hidden state {int(lo['layer'])}",
                                                 scale=1.0, margin=CONVEXITY_RANGE_MIN)
            rows.append(_row(verdict, up, diff, half, ev, f"{prop} convexity (%): {text}", prop))
    return rows or [_untestable("no convexity summary (convexity stage of analysis_upstreams)")]


@finding("quality.edit_visible", QUALITY, f"removing phone-type property neurons lowers the phone probe by ≥ {EDIT_MARGIN_POINTS:g} "
         "points more than removing as many random neurons (95% CIs disjoint)", "≥ 3 points (issue 15 target)")
def edit_visible(ctx: Context) -> list[dict]:
    return _remove_vs_random(ctx, margin=EDIT_MARGIN_POINTS, properties=("phone_type",))


# --------------------------------------------------------------------------- the table


def findings_table(ctx: Context, findings: Sequence[Finding] | None = None) -> pd.DataFrame:
    """Run every registered claim on ``ctx``: one row per (claim, upstream, task, readout), columns :data:`COLUMNS`.

    A claim whose input is missing or degenerate gives a ``not testable`` row (never an exception).
    """
    recs = []
    for f in FINDINGS if findings is None else findings:
        try:
            rows = f.func(ctx)
        except NotTestable as e:
            rows = [_untestable(str(e), e.evidence)]
        except Exception as e:  # a table with an unexpected shape: say so on the page instead of stopping the report
            log.warning("finding %s: %s: %s", f.id, type(e).__name__, e, exc_info=True)
            rows = [_untestable(f"could not be evaluated ({type(e).__name__}: {e})")]
        for r in rows:
            recs.append({"study": f.study, "claim": f.claim, "seed_value": f.seed_value, "id": f.id} | r)
    return pd.DataFrame.from_records(recs, columns=COLUMNS)


def _cell(x, digits: int = 3) -> str:
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def findings_markdown(table: pd.DataFrame) -> str:
    """A short Markdown page: verdict counts, then one line per row grouped by study."""
    counts = table["verdict"].value_counts()
    lines = ["# Findings", "", "Each seed claim tested on this run's tables (details and rules: docs/findings.md).", "",
             ", ".join(f"**{v}**: {int(counts.get(v, 0))}" for v in VERDICTS), ""]
    for study, g in table.groupby("study", sort=False):
        lines += [f"## {study}", "", "| claim | upstream | task | measured | 95% CI ± | verdict | detail |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in g.iterrows():
            task = "/".join(x for x in (str(r["task"] or ""), str(r["readout"] or "")) if x and x != "nan")
            detail = str(r["detail"]).replace("|", "/")
            lines.append(f"| {r['claim']} | {r['upstream'] or ''} | {task} | {_cell(r['measured'])} | {_cell(r['ci_half'])} | "
                         f"**{r['verdict']}** | {detail} |")
        lines.append("")
    return "\n".join(lines)


def findings_html(table: pd.DataFrame) -> str:
    """A compact HTML fragment for the report's opening page: finding, upstream, task, measured, verdict
    (the claim and the numbers compared are the row's tooltip)."""
    import html

    colour = {"holds": "#1a7f37", "does not hold": "#cf222e", "not testable": "#6e7781"}
    cell = 'style="padding:1px 6px;border-bottom:1px solid #ddd"'
    counts = table["verdict"].value_counts()
    summary = ", ".join(f'<b style="color:{colour[v]}">{int(counts.get(v, 0))} {v}</b>' for v in VERDICTS)
    out = [f"<p>{len(table)} rows: {summary}</p>",
           '<table class="findings" style="font-size:0.75rem;border-collapse:collapse;text-align:left">',
           f"<tr><th {cell}>finding</th><th {cell}>upstream</th><th {cell}>task</th><th {cell}>measured</th><th {cell}>verdict</th></tr>"]
    for _, r in table.iterrows():
        task = "/".join(x for x in (str(r["task"] or ""), str(r["readout"] or "")) if x and x != "nan")
        m = _cell(r["measured"]) + (f" ± {_cell(r['ci_half'])}" if _cell(r["ci_half"]) else "")
        tip = html.escape(f"{r['claim']} | {r['detail']}", quote=True)
        out.append(f'<tr title="{tip}"><td {cell}>{html.escape(str(r["id"]))}</td><td {cell}>{html.escape(str(r["upstream"] or ""))}</td>'
                   f"<td {cell}>{html.escape(task)}</td><td {cell}>{html.escape(m)}</td>"
                   f'<td {cell}><b style="color:{colour[r["verdict"]]}">{r["verdict"]}</b></td></tr>')
    out.append("</table>")
    return "\n".join(out) + "\n"


def table_paths(upstreams: Iterable[str], corpus: str, tasks: Iterable[str]) -> list[str]:
    """Every table path a claim may read for these upstreams and tasks (the rule keeps those the config produces)."""
    paths = []
    for key, tpl in TABLES.items():
        if "{upstream}" in tpl:
            paths += [tpl.format(upstream=u, corpus=corpus) for u in upstreams]
        elif "{task}" in tpl:
            paths += [tpl.format(task=t) for t in tasks]
        else:
            paths.append(tpl.format(corpus=corpus))
    return list(dict.fromkeys(paths))


def context_from_inputs(root: str | os.PathLike, corpus: str, upstreams: Sequence[str], inputs: Iterable[str],
                        baselines: Sequence[str] = ()) -> Context:
    """The :class:`Context` of a workflow job: ``inputs`` (the rule's input files) are the available tables."""
    return Context(Path(root), corpus, list(upstreams), tuple(baselines) or ("mfcc", "fbank"),
                   frozenset(os.path.normpath(p) for p in inputs))
