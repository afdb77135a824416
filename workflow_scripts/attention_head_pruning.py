"""Rule head_pruning_curves: downstream score vs fraction of heads removed, per ranking and task.

Reads the s3prl_downstream results of the original and of every
heads-{ranking}_{fraction} variant of one upstream (speechdissect.attention.pruning):
the curve table with mean and 95 % CI over seeds, the largest fraction reached
within pruning.heads.max_loss points per ranking and task, and the figure.
"""
import json

import pandas as pd

from speechdissect.attention import max_fraction_within, pruning_curves
from speechdissect.attention.figures import pruning_curves_figure
from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
grid = snakemake.params.grid
upstream = snakemake.wildcards.upstream
rows = []
for path in snakemake.input.results:
    with open(path) as f:
        doc = json.load(f)
    if not doc.get("runs"):
        raise ValueError(f"{path}: no runs; rerun its s3prl_downstream job")
    rows += [{**r, "result_path": path} for r in doc["runs"]]
runs = pd.DataFrame(rows)
masks = pd.read_csv(snakemake.input.masks, sep="\t")
n_removed = {(r, float(f)): int(k) for r, f, k in zip(masks["ranking"], masks["fraction"], masks["n_removed"])}
curves = pruning_curves(runs[runs["upstream"] == upstream], grid["rankings"], n_removed=n_removed)
# one curve per readout the task's probes read (weighted sum, and the last hidden state where edits are scored)
n_readouts = curves.groupby("task")["readout"].nunique() if "readout" in curves else pd.Series(dtype=int)
expected = sum(len(grid["rankings"]) * (len(grid["fractions"]) + 1) * int(n_readouts.get(t, 1)) for t in grid["tasks"])
if len(curves) != expected:
    raise ValueError(f"{upstream}: {len(curves)} curve points from {len(snakemake.input.results)} result files, "
                     f"expected {expected} (tasks x rankings x (fractions + original) x readouts); check the results' "
                     "upstream/variant fields")
fractions = max_fraction_within(curves, grid["max_loss"])
write_atomic(snakemake.output.table, lambda tmp: curves.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_atomic(snakemake.output.fractions, lambda tmp: fractions.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
for r in fractions.itertuples():
    log.info("%s %s %s: original %.4f, up to fraction %g within %g point(s) (loss %.2f)", upstream, r.task, r.ranking,
             r.original, r.max_fraction, r.max_loss, r.loss)
fig = pruning_curves_figure(curves, f"{upstream}: heads removed cumulatively by ranking", max_loss=grid["max_loss"])
save_figure(fig, snakemake.output.png, snakemake.output.svg)
