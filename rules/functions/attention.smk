# Helper functions of rules/attention.smk (kept apart from the rules, as snakemake --lint asks).


def _att_config_error(key, problem):
    raise ValueError(f"config key attention.{key}: {problem} (see docs/attention_config.md)")




def att_out(name):
    """Output pattern of one attention-stage file (wildcards {upstream}, {corpus})."""
    return f"{ATT_DIR}/{name}"



def head_mask_path(upstream, ranking, fraction, corpus=None):
    """The mask file of one ranking and fraction (for the head-pruning rules)."""
    return f"results/{upstream}/{corpus or ANALYSIS_CORPUS}/attention/head_masks/{ranking}_{fraction_tag(fraction)}.json"



def attention_targets():
    """Final outputs of the attention stage for every analysis upstream on the analysis corpus."""
    targets = []
    for upstream in ANALYSIS_UPSTREAMS:
        d = ATT_DIR.format(upstream=upstream, corpus=ANALYSIS_CORPUS)
        targets += [f"{d}/{name}" for name in (
            "metrics.tsv", "metrics.png", "examples.png", "segmentation.tsv", "segmentation.png",
            "phone_relations.tsv", "phone_relations.png", "concentration.png", "head_masks/index.tsv")]
    return targets



def att_cache(split):
    return lambda wc: cache_dir(wc.upstream, split, wc.corpus)
