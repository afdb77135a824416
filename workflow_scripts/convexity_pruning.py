"""Rule convexity_pruning: full vs convexity-pruned model per task, and accuracy vs convexity of every depth."""
import json

import pandas as pd
import torch

from speechdissect.convexity_pruning import depth_table, load_runs, plot_depths, pruning_summary, pruning_table
from speechdissect.labels import write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure
from speechdissect.upstreams.registry import load_upstream, paired_latency

log = setup_logging(snakemake.log[0])
best_doc = json.loads(open(snakemake.input.best).read())
best, n_layers = best_doc["most_convex_layer"], int(best_doc["n_hidden_states"]) - 1
runs = pd.concat([load_runs(snakemake.input.frozen, "frozen"), load_runs(snakemake.input.finetuned, "finetuned")], ignore_index=True)
convexity = pd.read_csv(snakemake.input.summary, sep="\t")
tasks = dict(snakemake.params.tasks)
torch.set_num_threads(1)
models = {}
for path in snakemake.input.model_specs:  # the full model and every cut, timed side by side
    spec = json.loads(open(path).read())
    models[spec.get("variant", "original")] = load_upstream(spec["entry"], spec.get("ckpt"))
latency = paired_latency(models, seed=snakemake.params.seed)
log.info("forward latency of a 3 s input, side by side (ms): %s", {k: round(v, 2) for k, v in latency.items()})
table = pruning_table(runs, tasks, best, n_layers, latency=latency)
depths = depth_table(runs, convexity, tasks, best, n_layers, latency=latency)
for _, r in table.iterrows():
    log.info("%s (%s, L*=%s, %s/%s layers kept) %s: %.4f -> %.4f (%+.2f points), params %+.1f %%, train %+.1f %%, latency %+.1f %%",
             r["task"], r["property"], r["most_convex_layer"], r["layers_kept"], r["layers_total"], r["mode"], r["full_mean"],
             r["pruned_mean"], r["accuracy_change_points"], r["params_change_pct"], r["train_time_change_pct"], r["latency_change_pct"])
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(snakemake.output.depths, lambda tmp: depths.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_text_atomic(snakemake.output.summary, json.dumps(pruning_summary(table, depths), indent=2))
save_figure(plot_depths(depths, title=snakemake.wildcards.upstream), snakemake.output.png, snakemake.output.svg)
