"""Rule head_masks: cumulative head masks for pruning, one per ranking and fraction.

Each ranking (globalness, verticality, diagonality, max_weight: by the metrics
table; random: a seeded permutation) orders all heads for removal
(speechdissect.attention.ranking); removing the first round(fraction * n_heads)
gives the mask, so masks of one ranking are nested.
"""
import json

import pandas as pd

from speechdissect.attention import DEFAULT_REMOVE_FIRST, head_mask, n_removed, rank_heads
from speechdissect.labels import write_atomic, write_text_atomic
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
metrics = pd.read_csv(snakemake.input.metrics, sep="\t")
L, H = int(metrics["layer"].max()) + 1, int(metrics["head"].max()) + 1
if len(metrics) != L * H:
    raise ValueError(f"{snakemake.input.metrics}: {len(metrics)} rows, expected {L} layers x {H} heads")

rankings, index = {}, []
for name in dict.fromkeys(r for r, _ in p.grid):
    direction = None if name == "random" else p.remove_first.get(name, DEFAULT_REMOVE_FIRST[name])
    rankings[name] = rank_heads(metrics, name, remove_first=direction, seed=p.seed).assign(ranking=name)
for (name, fraction), path in zip(p.grid, snakemake.output.masks):
    ranking = rankings[name]
    mask = head_mask(ranking, fraction, L, H)
    k = n_removed(fraction, L * H)
    removed = ranking.sort_values("rank").head(k)
    doc = {
        "upstream": snakemake.wildcards.upstream, "corpus": snakemake.wildcards.corpus,
        "ranking": name, "fraction": fraction, "remove_first": None if name == "random" else
        p.remove_first.get(name, DEFAULT_REMOVE_FIRST[name]), "seed": p.seed if name == "random" else None,
        "n_layers": L, "n_heads": H, "n_removed": k,
        "removed": [[int(l), int(h)] for l, h in zip(removed["layer"], removed["head"])],
        "mask": mask.astype(int).tolist(),
    }
    write_text_atomic(path, json.dumps(doc, indent=1))
    empty = [l for l in range(L) if mask[l].sum() == 0]
    index.append({"ranking": name, "fraction": fraction, "n_removed": k, "n_kept": L * H - k,
                  "heads_kept_per_layer": ",".join(str(int(x)) for x in mask.sum(axis=1)),
                  "empty_layers": ",".join(map(str, empty)), "path": path})
    if empty:
        log.warning("%s at %g removes every head of layer(s) %s", name, fraction, empty)
table = pd.DataFrame(index)
write_atomic(snakemake.output.index, lambda tmp: table.to_csv(tmp, sep="\t", index=False))
order = pd.concat(rankings.values(), ignore_index=True)[["ranking", "rank", "layer", "head", "score"]]
write_atomic(snakemake.output.rankings, lambda tmp: order.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
log.info("%d masks for %d x %d heads", len(table), L, H)
