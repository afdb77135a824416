# Helper functions of rules/convexity.smk (kept apart from the rules, as snakemake --lint asks).


def convexity_targets():
    targets = [f"results/convexity/{ANALYSIS_CORPUS}/convexity_layers.png"]
    targets += [f"results/{u}/{ANALYSIS_CORPUS}/convexity/best_layers.json" for u in ANALYSIS_UPSTREAMS]
    return targets
