"""Rule attention_segmentation: phoneme boundaries from attention heads, hidden states and MFCCs.

Kernel-Gram segmentation (speechdissect.attention.segmentation) of the cached
attention subset: every head of every layer (rows of its attention map), every
hidden state and MFCCs on the same 20 ms grid. Kernel width alpha (a factor
times the median frame distance of the feature on the tuning split) and
threshold beta are tuned on the tuning split by R-value, per feature or per
feature type (config attention.segmentation.tune), and scored on the report split.
"""
import json
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from speechdissect.attention import SegmentationScore, alpha_grid, grid_scores, mfcc_features, reference_boundaries, score
from speechdissect.attention.figures import segmentation_curve
from speechdissect.cache import ActivationCache, load_wav
from speechdissect.labels import audio_path, read_label_table, write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
p = snakemake.params
cfg = p.segmentation
upstream = snakemake.wildcards.upstream
KW = {"tolerance": float(cfg["tolerance"]), "centre": cfg["centre"]}


class Split:
    """The cached attention subset of one split: reference boundaries and feature loaders."""

    def __init__(self, name, cache_dir, labels_path, corpus_dir, split_dir):
        self.name, self.cache = name, ActivationCache(cache_dir)
        labels = read_label_table(labels_path)
        self.cache.verify(labels)
        self.utts = list(self.cache.meta.get("attention_utterances", []))[: p.max_utterances or None]
        if not self.utts:
            raise ValueError(f"{cache_dir}: no attention maps cached (meta.json attention_utterances is empty); "
                             "set cache.attention_utterances > 0 in the config")
        phone = labels["phone"].to_numpy()
        self.slices = {u: self.cache.utterance_slice(u) for u in self.utts}
        self.refs = {u: reference_boundaries(phone[s]) for u, s in self.slices.items()}
        self.mfcc = {}
        for u, s in self.slices.items():
            wav = audio_path(corpus_dir, split_dir, u)
            m = mfcc_features(load_wav(wav), **cfg["mfcc"])
            if len(m) != s.stop - s.start:
                raise ValueError(f"{wav}: {len(m)} MFCC frames but {s.stop - s.start} label frames; "
                                 "the corpus and the label table disagree: rerun ingest_alignments")
            self.mfcc[u] = m

    def features(self, feature, utt):
        kind, layer, head = feature
        if kind == "mfcc":
            return self.mfcc[utt]
        if kind == "hidden":
            x = np.asarray(self.cache.layer("hidden", layer)[self.slices[utt]], dtype=np.float32)
            return np.nan_to_num(x, posinf=65504.0, neginf=-65504.0)  # float16 overflow stored as inf
        return np.asarray(self.cache.attention(utt, mmap=True)[layer, head], dtype=np.float32)

    def items(self, feature):
        return [(self.features(feature, u), self.refs[u]) for u in self.utts]


def dev_grid(feature):
    """Scores of every (alpha factor, beta) on the tuning split, and the feature's distance scale."""
    items = dev.items(feature)
    (scale,) = alpha_grid(items, factors=(1.0,))
    alphas = [f * scale for f in cfg["alpha_factors"]]
    grid = grid_scores(alphas, cfg["betas"], items, **KW)
    grid.insert(0, "alpha_factor", np.repeat(cfg["alpha_factors"], len(cfg["betas"])))
    grid.insert(0, "scale", scale)
    return feature, grid


def test_score(job):
    feature, alpha, beta = job
    return feature, score(test.items(feature), alpha, beta, **KW)


def run(fn, jobs, desc):
    """Map ``fn`` over ``jobs`` with one BLAS thread per worker process (fork keeps the loaded splits)."""
    workers = min(int(snakemake.threads), len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="feature")
    out = []
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                                 initializer=threadpool_limits, initargs=(1,)) as pool:
            for r in pool.map(fn, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                out.append(r)
                bar.update()
    else:
        for j in jobs:
            out.append(fn(j))
            bar.update()
    bar.close()
    return out


def fid(feature):
    return "-".join(str(x) for x in feature if x is not None)


def clean(obj):
    """JSON-safe copy: NaN becomes null."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


dev = Split(p.tune_split, snakemake.input.tune_cache, snakemake.input.tune_labels, snakemake.params.corpus_root, p.tune_split_dir)
test = Split(p.split, snakemake.input.cache, snakemake.input.labels, snakemake.params.corpus_root, p.split_dir)
n_layers, n_heads = dev.cache.n_layers, int(dev.cache.meta["n_heads"])
features = [("mfcc", None, None)]
if cfg["hidden"]:
    features += [("hidden", l, None) for l in range(n_layers + 1)]
if cfg["heads"] == "all":
    features += [("attention", l, h) for l in range(n_layers) for h in range(n_heads)]
log.info("%d features; tuning on %d %s utterances, scoring on %d %s utterances", len(features),
         len(dev.utts), dev.name, len(test.utts), test.name)


# 1. grid on the tuning split
grids = {}
for feature, g in run(dev_grid, features, f"tune {upstream}"):
    kind, layer, head = feature
    grids[fid(feature)] = g.assign(feature=kind, layer=layer, head=head)

# 2. choose (alpha, beta): per feature, or one (alpha factor, beta) per feature type (micro-averaged)
chosen = {}
if cfg["tune"] == "type":
    for kind in dict.fromkeys(f[0] for f in features):
        members = [fid(f) for f in features if f[0] == kind]
        pooled = pd.concat([grids[m] for m in members]).groupby(["alpha_factor", "beta"], sort=False)[["hits", "n_pred", "n_ref"]].sum()
        r = np.array([SegmentationScore(*map(int, t)).r_value for t in pooled.itertuples(index=False)], dtype=float)
        factor, beta = pooled.index[int(np.argmax(np.nan_to_num(r, nan=-np.inf)))]
        for m in members:
            g = grids[m]
            chosen[m] = g[(g["alpha_factor"] == factor) & (g["beta"] == beta)].iloc[0]
else:
    for m, g in grids.items():  # first maximum in grid order (alpha outer, beta inner)
        chosen[m] = g.iloc[int(np.argmax(np.nan_to_num(g["r_value"].to_numpy(dtype=float), nan=-np.inf)))]

# 3. score the chosen pairs on the report split
jobs = [(f, float(chosen[fid(f)]["alpha"]), float(chosen[fid(f)]["beta"])) for f in features]
rows = []
for feature, s in run(test_score, jobs, f"score {upstream}"):
    kind, layer, head = feature
    c = chosen[fid(feature)]
    rows.append({"feature": kind, "layer": layer, "head": head, "alpha_factor": c["alpha_factor"],
                 "alpha": c["alpha"], "beta": c["beta"], "tune_r_value": c["r_value"], **s.as_dict()})
table = pd.DataFrame(rows)
grid = pd.concat(grids.values(), ignore_index=True)
grid = grid[["feature", "layer", "head"] + [c for c in grid.columns if c not in ("feature", "layer", "head")]]
for t in (table, grid):
    for col in ("layer", "head"):
        t[col] = t[col].astype("Int64")
att = table["feature"] == "attention"
table["best_in_layer"] = False
if att.any():  # the head of each layer chosen on the tuning split (no peeking at the report split)
    best = table[att].assign(r=table["tune_r_value"].fillna(-np.inf)).groupby("layer")["r"].idxmax()
    table.loc[best.to_numpy(), "best_in_layer"] = True
order = ["feature", "layer", "head", "alpha_factor", "alpha", "beta", "precision", "recall", "f1", "hit_rate",
         "over_segmentation", "r_value", "hits", "n_pred", "n_ref", "tune_r_value", "best_in_layer"]
table = table[order]
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(snakemake.output.grid, lambda tmp: grid.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))


def best_of(kind):
    t = table[table["feature"] == kind]
    if not len(t):
        return None
    r = t.loc[t["tune_r_value"].fillna(-np.inf).idxmax()]
    out = {k: (None if pd.isna(r[k]) else int(r[k])) for k in ("layer", "head")}
    return {**out, **{k: float(r[k]) for k in ("alpha", "beta", "r_value", "f1", "hit_rate", "over_segmentation", "tune_r_value")}}


summary = {
    "upstream": upstream, "split": p.split, "tune_split": p.tune_split, "tune": cfg["tune"],
    "n_utterances": len(test.utts), "n_tune_utterances": len(dev.utts),
    "n_ref_boundaries": int(sum(len(r) for r in test.refs.values())),
    "mfcc": best_of("mfcc"), "best_hidden": best_of("hidden"), "best_attention": best_of("attention"),
    "settings": cfg,
}
write_text_atomic(snakemake.output.summary, json.dumps(clean(summary), indent=2, allow_nan=False))
log.info("R-value on %s: MFCC %.3f, best hidden %s, best attention %s", p.split, summary["mfcc"]["r_value"],
         summary["best_hidden"], summary["best_attention"])
fig = segmentation_curve(table, f"{upstream}: phoneme segmentation ({p.split}, tuned on {p.tune_split})")
save_figure(fig, snakemake.output.png, snakemake.output.svg)
