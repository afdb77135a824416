"""Rule downstream_summary: seeds -> mean and 95% CI per (upstream, variant) for one task, next to the
task's chance level (from its test split); table and figure."""
import json

import pandas as pd

from speechdissect.downstream.aggregate import aggregate, plot_scores
from speechdissect.downstream.tasks import chance_level
from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
rows = []
for path in snakemake.input.results:
    with open(path) as f:
        doc = json.load(f)
    params = doc["variant_spec"].get("parameters", {})
    for run in doc["runs"]:
        rows.append({**run, "effective_params": params.get("effective", run.get("upstream_params"))})
task = snakemake.wildcards.task
chance = chance_level(task, snakemake.input.data)
log.info("task %s: chance %.4f (%s, %s test items, %s classes)", task, chance["chance"], chance["chance_kind"],
         chance["n_test"], chance["n_classes"])
summary = aggregate(pd.DataFrame(rows), chance={task: chance})
write_atomic(snakemake.output.table, lambda tmp: summary.to_csv(tmp, sep="\t", index=False))
plot_scores(summary, snakemake.output.png, title=task)
