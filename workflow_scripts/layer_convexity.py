"""Rule layer_convexity: graph convexity of phone, word and speaker regions in every layer, with CIs over samples."""
import json

import numpy as np
import pandas as pd
from tqdm import tqdm

from speechdissect.cache import ActivationCache
from speechdissect.convexity import EXACT_MAX_N, graph_convexity, knn_graph
from speechdissect.stats import mean_ci
from speechdissect.labels import read_label_table, write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.regions import PROPERTIES, balanced_sample, phone_points, unit_points

log = setup_logging(snakemake.log[0])
cfg = snakemake.params.settings
properties = cfg.get("properties", list(PROPERTIES))
unknown = sorted(set(properties) - set(PROPERTIES))
if unknown:
    raise ValueError(f"config key convexity.properties: unknown {unknown}; valid: {list(PROPERTIES)}")
per_class = {"phone": cfg.get("phone_per_class", 50), "word": cfg.get("word_per_class", 30), "speaker": cfg.get("speaker_per_class", 40)}
repeats, seed = cfg.get("repeats", 3), snakemake.params.seed
cache = ActivationCache(snakemake.input.cache)
labels = read_label_table(snakemake.input.labels)
cache.verify(labels)
n_hidden = cache.meta["kinds"]["hidden"]
rows = []
for layer in tqdm(range(n_hidden), desc="convexity per layer", unit="layer"):
    units = {p: unit_points(cache, labels, layer, p) for p in properties if p != "phone"}
    graphs = {}  # (property, sample) -> exact kNN graph: a repeat drawing the same units (all of them) reuses it
    for rep in range(repeats):
        for prop in properties:
            rep_seed = seed + 1000 * rep + layer
            if prop == "phone":
                x, y = phone_points(cache, labels, layer, per_class["phone"], rep_seed)
            else:
                feats, names = units[prop]
                pick = balanced_sample(names, per_class[prop], np.random.default_rng(rep_seed))
                x, y = feats[pick], names[pick]
            k, graph = cfg.get("n_neighbors", 10), None
            if prop != "phone" and 0 < len(y) <= EXACT_MAX_N:  # the exact graph does not depend on the seed
                key = (prop, pick.tobytes())
                graph = graphs[key] = graphs.get(key) or knn_graph(x, k, method="exact")
            res = graph_convexity(x, y, n_neighbors=k, max_paths=cfg.get("max_paths", 5000), seed=rep_seed, graph=graph)
            rows.append({"layer": layer, "property": prop, "repeat": rep, "score": res.score,
                         "n_points": len(y), "n_classes": len(set(y)), "n_unreachable": res.n_unreachable})
scores = pd.DataFrame(rows)
summary = pd.DataFrame([{"layer": layer, "property": prop, **mean_ci(group["score"])}
                        for (layer, prop), group in scores.groupby(["layer", "property"])])
best = {}
for prop, g in summary.groupby("property"):
    if g["mean"].notna().any():
        best[prop] = int(g.loc[g["mean"].idxmax(), "layer"])
    else:
        log.warning("no %s class has two points in split %s: convexity undefined (raise the sample or use a larger split)",
                    prop, snakemake.input.labels)
log.info("most convex layer per property: %s", best)
write_atomic(snakemake.output.scores, lambda tmp: scores.to_csv(tmp, sep="\t", index=False))
write_atomic(snakemake.output.summary, lambda tmp: summary.to_csv(tmp, sep="\t", index=False))
write_text_atomic(snakemake.output.best, json.dumps({"most_convex_layer": best, "n_hidden_states": n_hidden}, indent=2))
