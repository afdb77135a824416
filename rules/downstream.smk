# Variants of upstreams (original, pruned, edited) and their s3prl downstream evaluation.
#
# A variant is named: original | layers-N | heads-{ranking}_{fraction} | ffn-{method}_{sparsity}
# | edit-remove_{property} | convex-{property} (keep the layers up to the most convex one).

DOWNSTREAM = config.get("downstream", {})
PRUNING = config.get("pruning", {})
DS_SEEDS = DOWNSTREAM.get("seeds", [0, 1, 2])


DS_TASKS = DOWNSTREAM.get("tasks", [])
DS_UPSTREAMS = DOWNSTREAM.get("upstreams", ANALYSIS_UPSTREAMS)
DS_BASELINES = DOWNSTREAM.get("baselines", [])  # s3prl's mfcc / fbank: every task, the row a reviewer asks for first
LAYERWISE = DOWNSTREAM.get("layerwise", {})
LAYERWISE_TASKS = [t for t in LAYERWISE.get("tasks", []) if t in DS_TASKS]
LAYERWISE_UPSTREAMS = LAYERWISE.get("upstreams", DS_UPSTREAMS)


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
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/make_variant.py"


rule downstream_data:
    input:
        corpus=corpus_input,
        phones="results/{corpus}/s3prl/converted_aligned_phones.txt",
        labels=expand("results/{{corpus}}/labels/{split}.parquet", split=SPLITS),
    output:
        directory("results/{corpus}/downstream_data/{task}"),
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
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
    conda:
        "../envs/models.yaml"
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
        readouts=lambda wc: downstream_readouts(wc.upstream, wc.task, wc.variant),
    log:
        "results/logs/s3prl_downstream/{upstream}/{task}/{variant}.log",
    benchmark:
        "results/benchmarks/s3prl_downstream/{upstream}/{task}/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPUS,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/s3prl_downstream.py"


rule s3prl_finetune:
    # As s3prl_downstream, with the upstream trained too (s3prl -f): the convexity study's pruned vs
    # full comparison (pruning.layers.finetune*).
    input:
        unpack(variant_inputs),
        data=f"results/{ANALYSIS_CORPUS}/downstream_data/{{task}}",
    output:
        results="results/{upstream}/downstream_ft/{task}/{variant}/results.json",
    params:
        seeds=DS_SEEDS,
        steps=lambda wc: finetune_steps(wc.task),
        device=DEVICE,
        expdir=lambda wc: f"results/{wc.upstream}/downstream_ft/{wc.task}/{wc.variant}",
        finetune=True,
        upstream_lr=PRUNING.get("layers", {}).get("finetune_lr", 1.0e-4),
    log:
        "results/logs/s3prl_finetune/{upstream}/{task}/{variant}.log",
    benchmark:
        "results/benchmarks/s3prl_finetune/{upstream}/{task}/{variant}.tsv"
    priority: 10  # the longest evaluations: start them before the short frozen probes
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPUS,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/s3prl_downstream.py"


rule layerwise_probes:
    input:
        results=lambda wc: layerwise_results(),
        data=expand(f"results/{ANALYSIS_CORPUS}/downstream_data/{{task}}", task=LAYERWISE_TASKS),
        convexity=expand(f"results/{{upstream}}/{ANALYSIS_CORPUS}/convexity/summary.tsv", upstream=layerwise_convexity_upstreams()),
    output:
        table=report("results/downstream/layerwise.tsv", caption="../report/layerwise_table.rst", category="Downstream", subcategory="layer-wise"),
        png=report("results/downstream/layerwise.png", caption="../report/layerwise_figure.rst", category="Downstream", subcategory="layer-wise"),
        svg="results/downstream/layerwise.svg",
    params:
        baselines=DS_BASELINES,
        tasks=LAYERWISE_TASKS,
        convexity_upstreams=layerwise_convexity_upstreams(),
    log:
        "results/logs/layerwise_probes/layerwise.log",
    benchmark:
        "results/benchmarks/layerwise_probes/layerwise.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/layerwise_probes.py"


rule downstream_summary:
    input:
        results=lambda wc: [f"results/{u}/downstream/{t}/{v}/results.json" for u, t, v in downstream_jobs() if t == wc.task],
        data=f"results/{ANALYSIS_CORPUS}/downstream_data/{{task}}",
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
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/downstream_summary.py"


