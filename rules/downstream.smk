# Variants of upstreams (original, pruned, edited) and their s3prl downstream evaluation.
#
# A variant is named: original | layers-N | heads-{ranking}_{fraction} | ffn-{method}_{sparsity}
# | edit-remove_{property} | convex-{property} (keep the layers up to the most convex one).

DOWNSTREAM = config.get("downstream", {})
PRUNING = config.get("pruning", {})
DS_SEEDS = DOWNSTREAM.get("seeds", [0, 1, 2])


def _check_tasks(tasks, key):
    from speechdissect.downstream.tasks import TASKS

    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"config key {key}: unknown downstream task(s) {bad}; valid tasks: {sorted(TASKS)}")
    return tasks


DS_TASKS = _check_tasks(DOWNSTREAM.get("tasks", []), "downstream.tasks")
DS_UPSTREAMS = DOWNSTREAM.get("upstreams", ANALYSIS_UPSTREAMS)
for _name in DS_UPSTREAMS:
    if _name not in UPSTREAMS:
        raise ValueError(f"config key downstream.upstreams: {_name!r} is not defined under upstreams: {sorted(UPSTREAMS)}")


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


rule make_variant:
    input:
        unpack(variant_mask),
        ckpt="resources/upstreams/{upstream}.ckpt",
    output:
        ckpt="resources/variants/{upstream}/{variant}.ckpt",
        spec="results/{upstream}/variants/{variant}.json",
    wildcard_constraints:
        variant="(?!original$)[A-Za-z0-9_.-]+",
    log:
        "results/logs/make_variant/{upstream}/{variant}.log",
    benchmark:
        "results/benchmarks/make_variant/{upstream}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../workflow_scripts/make_variant.py"


def variant_inputs(wildcards):
    if wildcards.variant == "original":
        return upstream_inputs(wildcards)
    return {"spec": f"results/{wildcards.upstream}/variants/{wildcards.variant}.json",
            "ckpt": f"resources/variants/{wildcards.upstream}/{wildcards.variant}.ckpt"}


rule downstream_data:
    input:
        corpus="resources/corpora/{corpus}",
        phones="results/{corpus}/s3prl/converted_aligned_phones.txt",
        labels=expand("results/{{corpus}}/labels/{split}.parquet", split=SPLITS),
    output:
        directory("results/{corpus}/downstream_data/{task}"),
    params:
        seed=SEED,
        options=lambda wc: DOWNSTREAM.get("data", {}).get(wc.task, {}),
    log:
        "results/logs/downstream_data/{corpus}/{task}.log",
    benchmark:
        "results/benchmarks/downstream_data/{corpus}/{task}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    script:
        "../workflow_scripts/downstream_data.py"


rule s3prl_downstream:
    input:
        unpack(variant_inputs),
        data=f"results/{ANALYSIS_CORPUS}/downstream_data/{{task}}",
    output:
        results="results/{upstream}/downstream/{task}/{variant}/results.json",
    params:
        seeds=DS_SEEDS,
        steps=lambda wc: DOWNSTREAM.get("steps", {}).get(wc.task),
        device=DEVICE,
        expdir=lambda wc: f"results/{wc.upstream}/downstream/{wc.task}/{wc.variant}",
    log:
        "results/logs/s3prl_downstream/{upstream}/{task}/{variant}.log",
    benchmark:
        "results/benchmarks/s3prl_downstream/{upstream}/{task}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPUS,
    script:
        "../workflow_scripts/s3prl_downstream.py"


def downstream_jobs():
    """(upstream, task, variant) of every evaluation the config asks for."""
    jobs = [(u, t, "original") for u in DS_UPSTREAMS for t in DS_TASKS]
    for u in PRUNING.get("upstreams", []):
        heads = PRUNING.get("heads", {})
        for ranking in heads.get("rankings", []):
            for fraction in heads.get("fractions", []):
                jobs += [(u, t, f"heads-{ranking}_{sparsity_tag(fraction)}") for t in heads.get("tasks", [])]
        ffn = PRUNING.get("ffn", {})
        for method in ffn.get("methods", []):
            for sparsity in ffn.get("sparsities", []):
                jobs += [(u, t, f"ffn-{method}_{sparsity_tag(sparsity)}") for t in ffn.get("tasks", [])]
        edit = PRUNING.get("edit", {})
        for entry in edit.get("remove", []):
            jobs += [(u, t, f"edit-{removal_method(entry)}") for t in edit.get("tasks", [])]
        layers = PRUNING.get("layers", {})
        for task, prop in layers.get("tasks", {}).items():
            jobs.append((u, task, f"convex-{prop}"))
        for task in layers.get("depth_tasks", list(layers.get("tasks", {}))):
            jobs += [(u, task, f"layers-{n}") for n in layers.get("depths", [])]
    return list(dict.fromkeys(jobs))


rule downstream_summary:
    input:
        lambda wc: [f"results/{u}/downstream/{t}/{v}/results.json" for u, t, v in downstream_jobs() if t == wc.task],
    output:
        table=report("results/downstream/{task}.tsv", caption="../report/downstream_table.rst", category="Downstream", subcategory="{task}"),
        png=report("results/downstream/{task}.png", caption="../report/downstream_figure.rst", category="Downstream", subcategory="{task}"),
    log:
        "results/logs/downstream_summary/{task}.log",
    benchmark:
        "results/benchmarks/downstream_summary/{task}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/downstream_summary.py"


def downstream_targets():
    tasks = sorted({t for _, t, _ in downstream_jobs()})
    return [f"results/downstream/{t}.tsv" for t in tasks]
