"""Rule neuron_geometry: MDS maps and silhouettes of the phone rows (binary above-chance vectors), per layer, property and neuron set."""
import json

import numpy as np
import pandas as pd

from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons import geometry_tables, masks_from_json

log = setup_logging(snakemake.log[0])
p = snakemake.params
layer_tables = {}
for cond, npy, tsv in zip(p.conditions, snakemake.input.probs, snakemake.input.index):
    probs = np.load(npy)
    index = pd.read_csv(tsv, sep="\t", keep_default_na=False, dtype={"condition": str, "phone": str, "phone_class": str})
    for layer in range(probs.shape[0]):
        layer_tables.setdefault(layer, {})[cond] = (probs[layer], index)
d_ffn = probs.shape[-1]
with open(snakemake.input.json) as f:
    found = json.load(f)
with open(snakemake.input.meta) as f:
    baseline = float(json.load(f)["chance"])  # tau / d_ffn: a row's neuron is a 1 when p > baseline

log.info("row vectors: %s (baseline %.6g)", p.representation, baseline)
known = {"all", "property", "any_property"}
unknown = set(p.neuron_sets) - known
if unknown:
    raise ValueError(f"config key neurons.geometry.neuron_sets: unknown set(s) {sorted(unknown)}; choose from {sorted(known)}")
coords, scores = [], []
for prop in p.properties:
    sets = {}
    for name in p.neuron_sets:  # neuron set whose probabilities place the rows: all, the property's own, any property's
        sets[name] = {"all": None,
                      "property": masks_from_json(found, d_ffn, prop),
                      "any_property": masks_from_json(found, d_ffn, p.properties)}[name]
    c, s = geometry_tables(layer_tables, properties=[prop], neuron_sets=sets, seed=p.seed, n_init=p.n_init, max_iter=p.max_iter,
                                representation=p.representation, baseline=baseline)
    coords.append(c)
    scores.append(s)
coords = pd.concat(coords, ignore_index=True)
scores = pd.concat(scores, ignore_index=True)
for _, r in scores.iterrows():
    log.info("layer %d %-10s %-12s %4d of %4d neurons: silhouette mds %.3f, vectors %.3f",
             r.layer, r.property, r.neuron_set, r.n_neurons, r.n_set, r.silhouette_mds, r.silhouette_vectors)
write_atomic(snakemake.output.geometry, lambda tmp: scores.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(snakemake.output.coords, lambda tmp: coords.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
