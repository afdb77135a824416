# Convexity study: graph convexity of phone / word / speaker regions in every layer.

CONVEXITY = config.get("convexity", {})


rule layer_convexity:
    input:
        cache=lambda wc: cache_dir(wc.upstream, CONVEXITY.get("split", "test"), wc.corpus),
        labels=lambda wc: f"results/{wc.corpus}/labels/{CONVEXITY.get('split', 'test')}.parquet",
    output:
        scores="results/{upstream}/{corpus}/convexity/scores.tsv",
        summary=report("results/{upstream}/{corpus}/convexity/summary.tsv", caption="../report/convexity_summary.rst", category="Convexity", subcategory="{upstream}"),
        best="results/{upstream}/{corpus}/convexity/best_layers.json",
    params:
        settings=CONVEXITY,
        seed=SEED,
    log:
        "results/logs/layer_convexity/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/layer_convexity/{upstream}/{corpus}.tsv"
    priority: 20  # its most convex layers make the convex-* variants: start it before the many probes
    threads: 1  # 2 threads would make it wait for both cores at once, i.e. until the probes are done
    resources:
        mem_mb=6000,
        runtime=60,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/layer_convexity.py"


rule convexity_figure:
    input:
        summaries=expand("results/{upstream}/{{corpus}}/convexity/summary.tsv", upstream=ANALYSIS_UPSTREAMS),
    output:
        png=report("results/convexity/{corpus}/convexity_layers.png", caption="../report/convexity_layers.rst", category="Convexity"),
        svg="results/convexity/{corpus}/convexity_layers.svg",
    params:
        upstreams=ANALYSIS_UPSTREAMS,
        finetuned={name: spec["base"] for name, spec in UPSTREAMS.items() if spec["source"] == "finetune"},
    log:
        "results/logs/convexity_figure/{corpus}.log",
    benchmark:
        "results/benchmarks/convexity_figure/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/convexity_figure.py"




rule convexity_pruning:
    # Full vs convexity-pruned model per task (frozen and fine-tuned), and every truncation depth
    # against the convexity of the layer it ends in (Dorszewski et al. 2024, table and Fig. 2).
    input:
        unpack(lambda wc: convexity_pruning_inputs(wc)),
    output:
        table=report("results/{upstream}/{corpus}/convexity/pruning.tsv", caption="../report/convexity_pruning.rst", category="Convexity", subcategory="{upstream}"),
        depths=report("results/{upstream}/{corpus}/convexity/pruning_depths.tsv", caption="../report/convexity_depths_table.rst", category="Convexity", subcategory="{upstream}"),
        summary="results/{upstream}/{corpus}/convexity/pruning.json",
        png=report("results/{upstream}/{corpus}/convexity/pruning_depths.png", caption="../report/convexity_depths.rst", category="Convexity", subcategory="{upstream}"),
        svg="results/{upstream}/{corpus}/convexity/pruning_depths.svg",
    params:
        tasks=lambda wc: (config.get("pruning") or {}).get("layers", {}).get("tasks", {}),
        seed=SEED,
    log:
        "results/logs/convexity_pruning/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/convexity_pruning/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/convexity_pruning.py"
