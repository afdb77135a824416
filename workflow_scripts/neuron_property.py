"""Rule property_neurons: group and property neurons per layer, their counts and overlaps."""
import json

import numpy as np
import pandas as pd

from speechdissect.labels import write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons import layer_property_neurons, neuron_table, summary_counts, summary_overlaps, to_json

log = setup_logging(snakemake.log[0])
p = snakemake.params
with open(snakemake.input.meta) as f:
    meta = json.load(f)
layer_tables = {}
for cond, npy, tsv in zip(p.conditions, snakemake.input.probs, snakemake.input.index):
    probs = np.load(npy)
    index = pd.read_csv(tsv, sep="\t", keep_default_na=False, dtype={"condition": str, "phone": str, "phone_class": str})
    for layer in range(probs.shape[0]):
        layer_tables.setdefault(layer, {})[cond] = (probs[layer], index)
# the chance level the probabilities were computed with (tau / d_ffn), not a recomputation
results = layer_property_neurons(layer_tables, properties=p.properties, sigma=p.sigma, baseline=meta["chance"])

counts = summary_counts(results)
overlaps = pd.concat([summary_overlaps(results, level="property").assign(level="property"),
                      summary_overlaps(results, level="group").assign(level="group")], ignore_index=True)
overlaps = overlaps[["level"] + [c for c in overlaps.columns if c != "level"]]
for _, r in counts[counts.group == "all"].iterrows():
    log.info("layer %d %-10s %4d group neurons, %4d property neurons (of %d)",
             r.layer, r.property, r.n_group_neurons, r.n_property_neurons, meta["d_ffn"])
write_text_atomic(snakemake.output.json, json.dumps(to_json(results), indent=1))
write_atomic(snakemake.output.counts, lambda tmp: counts.to_csv(tmp, sep="\t", index=False))
write_atomic(snakemake.output.overlaps, lambda tmp: overlaps.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(snakemake.output.neurons, lambda tmp: neuron_table(results).to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
