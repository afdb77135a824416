# Helper functions of rules/activations.smk (kept apart from the rules, as snakemake --lint asks).


def cache_dir(upstream, split, corpus=None):
    return f"results/{upstream}/{corpus or ANALYSIS_CORPUS}/cache/{split}"
