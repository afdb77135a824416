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



def downstream_jobs():
    """(upstream, task, variant) of every evaluation the config asks for."""
    jobs = [(u, t, "original") for u in DS_UPSTREAMS for t in DS_TASKS]
    jobs += head_pruning_jobs()  # pruning.heads: rankings x fractions x tasks (+ the original) on its upstreams
    for u in PRUNING.get("upstreams", []):
        ffn = PRUNING.get("ffn", {})
        for method in ffn.get("methods", []):
            for sparsity in ffn.get("sparsities", []):
                jobs += [(u, t, f"ffn-{method}_{fraction_tag(sparsity)}") for t in ffn.get("tasks", [])]
        edit = PRUNING.get("edit", {})
        for entry in edit.get("remove", []):
            jobs += [(u, t, f"edit-{removal_method(entry)}") for t in edit.get("tasks", [])]
            if edit.get("random", True):  # control: as many random neurons per layer (neurons.masks.random_draws draws)
                jobs += [(u, t, f"edit-{name}") for name in random_removal_names(entry) for t in edit.get("tasks", [])]
        layers = PRUNING.get("layers", {})
        for task, prop in layers.get("tasks", {}).items():
            jobs.append((u, task, f"convex-{prop}"))
        for task in layers.get("depth_tasks", list(layers.get("tasks", {}))):
            jobs += [(u, task, f"layers-{n}") for n in layers.get("depths", [])]
    return list(dict.fromkeys(jobs))



def downstream_targets():
    tasks = sorted({t for _, t, _ in downstream_jobs()})
    return [f"results/downstream/{t}.tsv" for t in tasks]
