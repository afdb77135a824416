"""Rule attention_metrics: globalness, verticality, diagonality and max weight of every head.

Averaged over the cached attention subset of one split (Yang, Liu & Lee, 2020),
with each head's category; figures: the metrics as layer x head heat maps, and
the most global / vertical / diagonal head on one utterance.
"""
import json

import numpy as np
from tqdm.auto import tqdm

from speechdissect.attention import CATEGORIES, METRICS, HeadMetrics
from speechdissect.attention.figures import example_maps, metric_heatmaps
from speechdissect.cache import ActivationCache
from speechdissect.labels import read_label_table, write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
p = snakemake.params
upstream = snakemake.wildcards.upstream
cache = ActivationCache(snakemake.input.cache)
utts = list(cache.meta.get("attention_utterances", []))[: p.max_utterances or None]
if not utts:
    raise ValueError(f"{cache.path}: no attention maps cached (meta.json attention_utterances is empty); "
                     "set cache.attention_utterances > 0 in the config")

acc = HeadMetrics()
lengths = {}
for utt in tqdm(utts, desc=f"attention metrics {upstream}", unit="utt"):
    stack = cache.attention(utt, mmap=True)
    acc.update(stack)
    lengths[utt] = int(stack.shape[-1])
table = acc.table()
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))

# The most global / vertical / diagonal head: the top of its metric among heads of that category.
top = {}
for metric, category in zip(METRICS, CATEGORIES):
    pool = table[table["category"] == category]
    row = (pool if len(pool) else table).sort_values(metric, ascending=False, kind="stable").iloc[0]
    top[category] = {"layer": int(row["layer"]), "head": int(row["head"]), metric: float(row[metric])}
example = p.example_utterance or sorted(utts, key=lambda u: (lengths[u], u))[len(utts) // 2]
if example not in utts:
    raise ValueError(f"config key attention.example_utterance: {example!r} has no cached attention in {cache.path}; "
                     f"choose one of {utts[:8]}")
summary = {
    "upstream": upstream, "split": p.split, "n_utterances": len(utts), "utterances": utts,
    "frames": lengths, "n_layers": int(table["layer"].nunique()), "n_heads": int(table["head"].nunique()),
    "categories": {c: int((table["category"] == c).sum()) for c in CATEGORIES},
    "top_heads": top, "example_utterance": example,
}
write_text_atomic(snakemake.output.summary, json.dumps(summary, indent=2))
log.info("%d heads over %d utterances: %s", len(table), len(utts), summary["categories"])

save_figure(metric_heatmaps(table, f"{upstream}: attention metrics ({p.split}, {len(utts)} utterances)"),
            snakemake.output.png, snakemake.output.svg)
labels = read_label_table(snakemake.input.labels)
phones = labels["phone"].to_numpy()[cache.utterance_slice(example)]
stack = cache.attention(example, mmap=True)
short = {"global": "G", "vertical": "V", "diagonal": "D"}
maps = [(f"most {c}: L{h['layer']}H{h['head']} ({short[c]} = {h[m]:.3g})", np.asarray(stack[h["layer"], h["head"]]))
        for (c, h), m in zip(top.items(), METRICS)]
save_figure(example_maps(maps, f"{upstream}: {example}", phones=phones), snakemake.output.examples_png,
            snakemake.output.examples_svg)
