"""Rule downstream_summary: seeds -> mean and 95% CI per (upstream, variant) for one task; table and figure."""
import json

import pandas as pd

from speechdissect.downstream.aggregate import aggregate, plot_scores
from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging

setup_logging(snakemake.log[0])
rows = []
for path in snakemake.input:
    with open(path) as f:
        doc = json.load(f)
    params = doc["variant_spec"].get("parameters", {})
    for run in doc["runs"]:
        rows.append({**run, "effective_params": params.get("effective", run.get("upstream_params"))})
summary = aggregate(pd.DataFrame(rows))
write_atomic(snakemake.output.table, lambda tmp: summary.to_csv(tmp, sep="\t", index=False))
plot_scores(summary, snakemake.output.png, title=snakemake.wildcards.task)
