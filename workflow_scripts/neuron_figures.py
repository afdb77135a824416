"""Rule neuron_figures: sorted activation probabilities of one phone, neuron counts and silhouettes per layer."""
import json

import numpy as np
import pandas as pd

from speechdissect.logs import setup_logging
from speechdissect.neurons.figures import counts_per_layer, pick_phone, silhouette_per_layer, sorted_probabilities
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
out = snakemake.output
with open(snakemake.input.meta) as f:
    meta = json.load(f)
probs = np.load(snakemake.input.probs)
index = pd.read_csv(snakemake.input.index, sep="\t", keep_default_na=False, dtype={"condition": str, "phone": str, "phone_class": str})
phone, substituted = pick_phone(index, snakemake.params.phone)
if substituted:
    log.warning("phone %r (config neurons.figures.phone) is not in the %s %s split; showing the most frequent phone %r",
                snakemake.params.phone, meta["corpus"], meta["split"], phone)
title = f"{meta['upstream']} [{phone}]: sorted activation probabilities ({int(index.loc[index.phone == phone, 'count'].iloc[0])} segments)"
save_figure(sorted_probabilities(probs, index, phone, chance=meta["chance"], title=title), out.sorted_png, out.sorted_svg)

counts = pd.read_csv(snakemake.input.counts, sep="\t", keep_default_na=False)
save_figure(counts_per_layer(counts, d_ffn=meta["d_ffn"]), out.counts_png, out.counts_svg)

geometry = pd.read_csv(snakemake.input.geometry, sep="\t")
save_figure(silhouette_per_layer(geometry), out.silhouette_png, out.silhouette_svg)
log.info("figures written for %s (phone %s)", meta["upstream"], phone)
