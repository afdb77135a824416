"""Rule training_curve: plot an upstream's training log."""
import json

from speechdissect.logs import setup_logging
from speechdissect.plots import save_figure, training_curve

setup_logging(snakemake.log[0])
with open(snakemake.input.log_json) as f:
    log = json.load(f)
save_figure(training_curve(log, snakemake.wildcards.upstream), snakemake.output.png, snakemake.output.svg)
