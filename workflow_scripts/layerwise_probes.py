"""Rule layerwise_probes: test score of every hidden state probed alone, per upstream and task, against the
MFCC / fbank baselines, next to each layer's convexity."""
import json

import pandas as pd

from speechdissect.downstream.layerwise import layerwise_figure, layerwise_table
from speechdissect.downstream.tasks import chance_level
from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
runs = [run for path in snakemake.input.results for run in json.load(open(path))["runs"]]
table = layerwise_table(pd.DataFrame(runs), baselines=snakemake.params.baselines)
chance = {t: chance_level(t, d)["chance"] for t, d in zip(snakemake.params.tasks, snakemake.input.data)}
table["chance"] = table["task"].map(chance)
convexity = {u: pd.read_csv(p, sep="\t") for u, p in zip(snakemake.params.convexity_upstreams, snakemake.input.convexity)}
for (u, t), g in table[table["best_layer"]].groupby(["upstream", "task"]):
    log.info("%s %s: best hidden state %d (%.4f)", u, t, int(g["layer"].iloc[0]), g["mean"].iloc[0])
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False))
save_figure(layerwise_figure(table, convexity, title="layer-wise probes and convexity"), snakemake.output.png, snakemake.output.svg)
