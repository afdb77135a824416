"""Rule neuron_editing_summary: original vs property-neuron removal vs random removal; FFN pruning score vs sparsity."""
import json

import pandas as pd

from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons.editing import editing_figure, editing_table, pruning_figure, pruning_table, runs_table
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
out = snakemake.output
upstream = snakemake.wildcards.upstream
docs = []
for path in snakemake.input.results:
    with open(path) as f:
        docs.append(json.load(f))
runs = runs_table(docs)
masks = pd.read_csv(snakemake.input.masks, sep="\t", keep_default_na=False)
editing = editing_table(runs, masks)
pruning = pruning_table(runs)
for _, r in editing.iterrows():
    log.info("edit  %-22s %-8s %-24s %.4f (95%% CI %.4f..%.4f) delta %+.4f", r.task, r.condition, r.variant, r["mean"], r.ci_low, r.ci_high, r.delta)
for _, r in pruning.iterrows():
    log.info("prune %-22s %-15s %.2f %.4f (95%% CI %.4f..%.4f) effective params %s", r.task, r.method, r.sparsity, r["mean"],
             r.ci_low, r.ci_high, r.get("effective_params"))
write_atomic(out.editing, lambda tmp: editing.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(out.pruning, lambda tmp: pruning.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
save_figure(editing_figure(editing, title=f"{upstream}: removing property neurons vs as many random neurons"), out.editing_png, out.editing_svg)
save_figure(pruning_figure(pruning, title=f"{upstream}: FFN pruning"), out.pruning_png, out.pruning_svg)
