"""Rule neuron_masks: FFN masks that remove property neurons (editing) or prune by norm / protected norm / at random."""
import json

import numpy as np
import pandas as pd
import torch

from speechdissect.labels import write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons import (ffn_dims, mask_to_json, masks_from_json, model_neuron_norms, n_pruned, prune_mask,
                                   random_removal_mask, remove_neurons_mask)
from speechdissect.upstreams.registry import describe, load_upstream

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
with open(snakemake.input.spec) as f:
    spec = json.load(f)
with open(snakemake.input.json) as f:
    found = json.load(f)

model = load_upstream(spec["entry"], spec.get("ckpt"))
paths = describe(model)["paths"]
# FFN module names relative to a layer: fc1/fc2 (HuBERT, wav2vec 2.0, WavLM), intermediate.dense/output.dense (Mockingjay)
fc1, fc2 = (paths[k].split("[{i}].", 1)[1] for k in ("ffn_fc1", "ffn_fc2"))
dims = ffn_dims(model, fc1, fc2)
norms = model_neuron_norms(model, criterion=p.criterion, p=p.norm_order, fc1_name=fc1, fc2_name=fc2)
if sorted(dims) != sorted(int(layer) for layer in found):
    raise ValueError(f"{snakemake.input.json} has layers {sorted(found)} but {spec['upstream']} has FFN layers {sorted(dims)}; "
                     "the property neurons come from another model: rerun neuron_probabilities")
log.info("%s: %d FFN layers of widths %s (%s / %s), norm criterion %s, L%g", spec["upstream"], len(dims), sorted(set(dims.values())),
         fc1, fc2, p.criterion, p.norm_order)


def property_set(entry):
    prop, _, group = entry.partition(":")
    return masks_from_json(found, dims, prop, group or None)


any_property = masks_from_json(found, dims, list(next(iter(found.values()), {})))  # union over every property found
protect = {layer: np.zeros(d, dtype=bool) for layer, d in dims.items()}
for entry in p.protect:
    for layer, m in property_set(entry).items():
        protect[layer] |= m

masks = {}
for name, entry in p.removals.items():
    masks[name] = ({"kind": "remove", "method": name, "property": entry, "sparsity": None}, remove_neurons_mask(property_set(entry)))
    for draw, random_name in enumerate(p.random_removals[name]):  # control: as many random neurons per layer
        masks[random_name] = ({"kind": "random_remove", "method": random_name, "property": entry, "sparsity": None},
                              random_removal_mask(masks[name][1], seed=p.seed, draw=draw))
for job in p.prune:
    mask = prune_mask(job["method"], norms, job["sparsity"], protect=protect if job["method"].startswith("protected") else None,
                      seed=p.seed, strict=p.strict)
    masks[job["name"]] = ({"kind": "prune", "method": job["method"], "property": None, "sparsity": job["sparsity"]}, mask)

rows = []
for name, path in zip(p.names, snakemake.output.masks):
    info, mask = masks[name]
    write_text_atomic(path, json.dumps(mask_to_json(mask)))
    for layer, keep in sorted(mask.items()):
        pruned = ~keep
        target = n_pruned(len(keep), info["sparsity"]) if info["kind"] == "prune" else int(pruned.sum())
        rows.append({"mask": name, **info, "layer": layer, "d_ffn": len(keep), "target_pruned": target, "n_pruned": int(pruned.sum()),
                     "achieved_sparsity": float(pruned.mean()), "n_protected": int(protect[layer].sum()),
                     "n_property_pruned": int((pruned & any_property[layer]).sum()),
                     "n_protected_pruned": int((pruned & protect[layer]).sum()), "file": path})
table = pd.DataFrame(rows)
for name, t in table.groupby("mask", sort=False):
    log.info("%-22s pruned %5d neurons (%.3f), %d of them property neurons", name, t.n_pruned.sum(),
             t.n_pruned.sum() / t.d_ffn.sum(), t.n_property_pruned.sum())
short = table[table.n_pruned < table.target_pruned]
if len(short):
    log.warning("masks short of their target sparsity (too few unprotected neurons): %s", sorted(set(short["mask"])))
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
