"""Rule neuron_models_figure: property-neuron counts and silhouettes of every analysis upstream on one figure."""
import json

import pandas as pd

from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons.figures import models_side_by_side, models_table
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
p = snakemake.params
counts = {u: pd.read_csv(f, sep="\t", keep_default_na=False) for u, f in zip(p.upstreams, snakemake.input.counts)}
geometry = {u: pd.read_csv(f, sep="\t") for u, f in zip(p.upstreams, snakemake.input.geometry)}
d_ffn = {u: json.load(open(f))["d_ffn"] for u, f in zip(p.upstreams, snakemake.input.meta)}
table = models_table(counts, geometry, d_ffn, neuron_set=p.neuron_set)
for (up, prop), t in table.groupby(["upstream", "property"], sort=False):
    best = t.loc[t["silhouette_mds"].idxmax()] if t["silhouette_mds"].notna().any() else None
    log.info("%-16s %-10s property neurons per layer %s; best silhouette %s", up, prop, t["n_property_neurons"].tolist(),
             "n/a" if best is None else f"{best.silhouette_mds:.3f} at layer {int(best.layer)}")
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
save_figure(models_side_by_side(table, p.properties), snakemake.output.png, snakemake.output.svg)
