"""Rule neuron_mds_figure: MDS map of one property's rows in every layer, coloured by group."""
import pandas as pd

from speechdissect.logs import setup_logging
from speechdissect.neurons.figures import mds_scatter
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
prop = snakemake.wildcards.property
coords = pd.read_csv(snakemake.input.coords, sep="\t", keep_default_na=False, na_values={"mds_1": ["", "NaN", "nan"], "mds_2": ["", "NaN", "nan"]},
                     dtype={"condition": str, "phone": str, "phone_class": str, "group": str})
scores = pd.read_csv(snakemake.input.geometry, sep="\t")
neuron_set = snakemake.params.neuron_set
if neuron_set not in set(coords["neuron_set"]):
    raise ValueError(f"config key neurons.figures.mds_neuron_set: {neuron_set!r} is not one of the computed neuron sets "
                     f"{sorted(set(coords['neuron_set']))} (neurons.geometry.neuron_sets)")
save_figure(mds_scatter(coords, prop, neuron_set=neuron_set, scores=scores), snakemake.output.png, snakemake.output.svg)
log.info("MDS figure of %s (%s neurons) written", prop, neuron_set)
