# Helper functions of rules/downstream.smk (kept apart from the rules, as snakemake --lint asks).


def variant_mask(wildcards):
    """The mask file a variant is made from (none for original / layers-N)."""
    kind, _, name = wildcards.variant.partition("-")
    base = f"results/{wildcards.upstream}/{ANALYSIS_CORPUS}"
    if kind == "heads":
        return {"mask": f"{base}/attention/head_masks/{name}.json"}
    if kind in ("ffn", "edit"):
        return {"mask": f"{base}/neurons/masks/{name}.json"}
    if kind == "convex":
        return {"best": f"{base}/convexity/best_layers.json"}
    return {}



def variant_inputs(wildcards):
    if wildcards.variant == "original":
        return upstream_inputs(wildcards)
    return {"spec": f"results/{wildcards.upstream}/variants/{wildcards.variant}.json",
            "ckpt": f"resources/variants/{wildcards.upstream}/{wildcards.variant}.ckpt"}



def edit_tasks(entry):
    """Tasks a removal entry is scored on: pruning.edit.tasks, a list for every entry or entry -> list."""
    tasks = PRUNING.get("edit", {}).get("tasks", [])
    return tasks.get(entry, []) if isinstance(tasks, dict) else tasks



def downstream_jobs():
    """(upstream, task, variant) of every evaluation the config asks for."""
    jobs = [(u, t, "original") for u in [*DS_UPSTREAMS, *DS_BASELINES] for t in DS_TASKS]
    jobs += head_pruning_jobs()  # pruning.heads: rankings x fractions x tasks (+ the original) on its upstreams
    for u in PRUNING.get("upstreams", []):
        ffn = PRUNING.get("ffn", {})
        for method in ffn.get("methods", []):
            for sparsity in ffn.get("sparsities", []):
                jobs += [(u, t, f"ffn-{method}_{fraction_tag(sparsity)}") for t in ffn.get("tasks", [])]
        edit = PRUNING.get("edit", {})
        for entry in edit.get("remove", []):
            tasks = edit_tasks(entry)
            jobs += [(u, t, f"edit-{removal_method(entry)}") for t in tasks]
            if edit.get("random", True):  # control: as many random neurons per layer (neurons.masks.random_draws draws)
                jobs += [(u, t, f"edit-{name}") for name in random_removal_names(entry) for t in tasks]
        layers = PRUNING.get("layers", {})
        for task, prop in layers.get("tasks", {}).items():
            jobs.append((u, task, f"convex-{prop}"))
        for task in layers.get("depth_tasks", list(layers.get("tasks", {}))):
            jobs += [(u, task, f"layers-{n}") for n in layers.get("depths", [])]
    return list(dict.fromkeys(jobs))



def downstream_targets():
    tasks = sorted({t for _, t, _ in downstream_jobs()})
    return [f"results/downstream/{t}.tsv" for t in tasks] + (["results/downstream/layerwise.tsv"] if LAYERWISE_TASKS else [])



def downstream_readouts(upstream, task, variant):
    """Probe inputs of one evaluation job (readout names of speechdissect.downstream.runner.resolve_readouts).

    Always s3prl's weighted sum; the last hidden state too where an edit or pruning is scored
    (downstream.edit_readouts: the weighted sum includes hidden state 0, which no edit touches);
    every hidden state alone for the layer-wise curves (downstream.layerwise).
    """
    readouts = ["weighted"]
    kind = variant.split("-")[0]
    if kind in ("original", "heads", "ffn", "edit") and (upstream, task) in edit_scored_pairs():  # not layer cuts
        readouts += [r for r in DOWNSTREAM.get("edit_readouts", ["weighted", "last"]) if r not in readouts]
    if variant == "original" and task in LAYERWISE_TASKS and upstream in LAYERWISE_UPSTREAMS:
        readouts.append("each")
    return readouts



def layerwise_results():
    """results.json of the layer-wise probes (original of each layer-wise upstream) and of the baselines."""
    return [f"results/{u}/downstream/{t}/original/results.json"
            for t in LAYERWISE_TASKS for u in [*LAYERWISE_UPSTREAMS, *DS_BASELINES]]



def layerwise_convexity_upstreams():
    return [u for u in LAYERWISE_UPSTREAMS if u in ANALYSIS_UPSTREAMS]



def edit_scored_pairs():
    """(upstream, task) pairs on which a pruned or edited variant is scored (heads-, ffn-, edit-)."""
    return {(u, t) for u, t, v in downstream_jobs() if v.split("-")[0] in ("heads", "ffn", "edit")}
