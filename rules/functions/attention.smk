# Helper functions of rules/attention.smk (kept apart from the rules, as snakemake --lint asks).


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
    if ANALYSIS_UPSTREAMS:
        targets.append("results/attention/segmentation_summary.tsv")
    return targets + head_pruning_targets()



def att_cache(split):
    return lambda wc: cache_dir(wc.upstream, split, wc.corpus)



def head_pruning_jobs(upstream=None):
    """(upstream, task, variant) of the head-pruning curves: the original plus every ranking x fraction > 0."""
    jobs = []
    for u in HEAD_PRUNING_UPSTREAMS if upstream is None else [upstream]:
        for task in HEAD_PRUNING_GRID["tasks"]:
            jobs.append((u, task, "original"))
            jobs += [(u, task, f"heads-{r}_{fraction_tag(f)}")
                     for r in HEAD_PRUNING_GRID["rankings"] for f in HEAD_PRUNING_GRID["fractions"]]
    return jobs



def head_pruning_inputs(wildcards):
    """The downstream results the head-pruning curves of one upstream are drawn from."""
    return {"results": [f"results/{u}/downstream/{t}/{v}/results.json" for u, t, v in head_pruning_jobs(wildcards.upstream)]}



def head_pruning_targets():
    return [att_out(name).format(upstream=u, corpus=ANALYSIS_CORPUS) for u in HEAD_PRUNING_UPSTREAMS
            for name in ("head_pruning.tsv", "head_pruning_fractions.tsv", "head_pruning.png")]
