# Helper functions of rules/neurons.smk (kept apart from the rules, as snakemake --lint asks).


def neuron_dir(upstream, corpus=None):
    return f"results/{upstream}/{corpus or ANALYSIS_CORPUS}/neurons"




def removal_method(entry):
    """Mask name of a removal entry: 'gender' -> 'remove_gender', 'gender:F' -> 'remove_gender-F'."""
    prop, _, group = entry.partition(":")
    return f"remove_{prop}" + (f"-{group}" if group else "")



def random_removal_names(entry):
    """Masks removing as many random neurons per layer as the removal `entry`: random_gender, random_gender_r1, ..."""
    base = removal_method(entry).replace("remove_", "random_", 1)
    return [base + (f"_r{k}" if k else "") for k in range(NEURON_RANDOM_DRAWS)]



def neuron_mask_names():
    """Names (file stems) of every mask the neuron_masks rule writes."""
    names = [removal_method(e) for e in NEURON_REMOVE]
    names += [n for e in NEURON_REMOVE for n in random_removal_names(e)]
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
    if ANALYSIS_UPSTREAMS:
        targets.append(f"results/neurons/{ANALYSIS_CORPUS}/models.png")
    for upstream in dict.fromkeys(u for u, _, v in downstream_jobs() if v.startswith(("edit-", "ffn-"))):
        targets += [f"results/{upstream}/neuron_editing/editing.tsv", f"results/{upstream}/neuron_editing/pruning.tsv"]
    return targets



def neuron_editing_results(upstream):
    """results.json of the editing (edit-*) and FFN pruning (ffn-*) evaluations of an upstream, and of its original on those tasks."""
    jobs = [(t, v) for u, t, v in downstream_jobs() if u == upstream and v.startswith(("edit-", "ffn-"))]
    if not jobs:
        raise ValueError(f"upstream {upstream!r} has no edit-* or ffn-* downstream evaluation: "
                         "add it to pruning.upstreams with pruning.edit / pruning.ffn tasks")
    jobs += [(t, "original") for t in dict.fromkeys(t for t, _ in jobs)]
    return [f"results/{upstream}/downstream/{t}/{v}/results.json" for t, v in dict.fromkeys(jobs)]
