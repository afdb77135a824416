"""Rule neuron_probabilities: activation probabilities of every FFN neuron per phone / phone x gender / phone x pitch."""
import json

import numpy as np
import pandas as pd

from speechdissect.cache import ActivationCache
from speechdissect.labels import read_label_table, write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons import activation_probabilities, chance_level, n_active, sample_middle_frames

log = setup_logging(snakemake.log[0])
p = snakemake.params
cache = ActivationCache(snakemake.input.cache)
labels = read_label_table(snakemake.input.labels)
cache.verify(labels)  # row i of the cache is row i of the label table
pitch = pd.read_parquet(snakemake.input.pitch)
sample = sample_middle_frames(labels, pitch, pitch_col=p.pitch_column)
if sample.empty:
    raise ValueError(f"{snakemake.input.labels}: no non-silence phone segment to sample; the neuron statistics need speech")
d_ffn = int(cache.meta["d_ffn"])
tau = n_active(d_ffn, p.fraction)
log.info("%s: %d layers, d_ffn %d, tau %d (fraction %g); %d sampled frames (one per phone segment) of %d",
         cache, cache.n_layers, d_ffn, tau, p.fraction, len(sample), len(labels))

per_layer = []
for layer in range(cache.n_layers):
    per_layer.append(activation_probabilities(cache.layer("ffn", layer), sample, conditions=p.conditions, k=tau,
                                              chunk_size=p.chunk_size, min_count=p.min_count))

chance = chance_level(d_ffn, p.fraction)
stats = []
for cond, npy, tsv in zip(p.conditions, snakemake.output.probs, snakemake.output.index):
    index = per_layer[0][cond][1]
    probs = np.stack([tables[cond][0] for tables in per_layer]).astype(np.float32)  # [n_layers, n_rows, d_ffn]
    if len(index) == 0:
        log.warning("condition %s has no rows (no sampled frame has a %s value)", cond, cond)

    def save(tmp, arr=probs):
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    write_atomic(npy, save)
    write_atomic(tsv, lambda tmp, ix=index: ix.rename_axis("row").reset_index().to_csv(tmp, sep="\t", index=False))
    for layer in range(probs.shape[0]):
        pl = probs[layer]
        stats.append(index.assign(
            layer=layer,
            row=np.arange(len(index)),
            prob_sum=pl.sum(axis=1),
            max_p=pl.max(axis=1) if pl.size else np.nan,
            n_above_chance=(pl > chance).sum(axis=1),
            n_p_ge_half=(pl >= 0.5).sum(axis=1),
            n_p_one=(pl >= 1.0).sum(axis=1),
        ))
    log.info("%s: %d rows x %d neurons per layer", cond, len(index), d_ffn)

stats = pd.concat(stats, ignore_index=True)
lead = ["layer", "condition_type", "row"]
stats = stats[lead + [c for c in stats.columns if c not in lead]]
write_atomic(snakemake.output.stats, lambda tmp: stats.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(snakemake.output.sample, lambda tmp: sample.to_csv(tmp, sep="\t", index=False))
meta = {
    "upstream": snakemake.wildcards.upstream,
    "corpus": snakemake.wildcards.corpus,
    "split": p.split,
    "n_layers": cache.n_layers,
    "d_ffn": d_ffn,
    "active_fraction": p.fraction,
    "tau": tau,
    "chance": chance,
    "pitch_column": p.pitch_column,
    "min_count": p.min_count,
    "n_frames": len(labels),
    "n_sampled": len(sample),
    "conditions": {c: int(len(per_layer[0][c][1])) for c in p.conditions},
}
write_text_atomic(snakemake.output.meta, json.dumps(meta, indent=2))
