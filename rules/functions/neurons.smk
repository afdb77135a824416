# Helper functions of rules/neurons.smk (kept apart from the rules, as snakemake --lint asks).


def neuron_dir(upstream, corpus=None):
    return f"results/{upstream}/{corpus or ANALYSIS_CORPUS}/neurons"




def removal_method(entry):
    """Mask name of a removal entry: 'gender' -> 'remove_gender', 'gender:F' -> 'remove_gender-F'."""
    prop, _, group = entry.partition(":")
    return f"remove_{prop}" + (f"-{group}" if group else "")



def neuron_mask_names():
    """Names (file stems) of every mask the neuron_masks rule writes."""
    names = [removal_method(e) for e in NEURON_REMOVE]
    names += [f"{m}_{fraction_tag(s)}" for m in NEURON_PRUNE_METHODS for s in NEURON_SPARSITIES]
    return names



def neuron_targets():
    """Final outputs of the neuron stage for every analysis upstream on the analysis corpus."""
    targets = []
    for upstream in ANALYSIS_UPSTREAMS:
        d = neuron_dir(upstream)
        targets += [
            f"{d}/property_neurons.json",
            f"{d}/counts.tsv",
            f"{d}/overlaps.tsv",
            f"{d}/geometry.tsv",
            f"{d}/mds_coords.tsv",
            f"{d}/probabilities/stats.tsv",
            f"{d}/figures/sorted_probabilities.png",
            f"{d}/figures/counts.png",
            f"{d}/figures/silhouette.png",
            f"{d}/masks/masks.tsv",
        ]
        targets += expand("{d}/figures/mds_{prop}.png", d=d, prop=NEURON_PROPERTIES)
    return targets
