# Upstream stage: pretrain / fine-tune small models, or point at s3prl hub entries.
# Every upstream ends as results/upstreams/{upstream}/upstream.json: the s3prl entry
# and checkpoint that load it (speechdissect.upstreams.registry.load_upstream).

UPSTREAMS = config.get("upstreams", {})
ANALYSIS_UPSTREAMS = config.get("analysis_upstreams", list(UPSTREAMS))


rule pretrain_upstream:
    input:
        unpack(training_audio),
    output:
        ckpt="resources/upstreams/{upstream}.ckpt",
        spec="results/upstreams/{upstream}/upstream.json",
        log_json="results/upstreams/{upstream}/training.json",
    wildcard_constraints:
        upstream=one_of(upstreams_of_source("pretrain")),
    params:
        spec=lambda wc: UPSTREAMS[wc.upstream],
        corpus_root=lambda wc: corpus_root(UPSTREAMS[wc.upstream].get("corpus", ANALYSIS_CORPUS)),
        split_dir=lambda wc: split_dir(UPSTREAMS[wc.upstream].get("corpus", ANALYSIS_CORPUS), UPSTREAMS[wc.upstream].get("split", "train")),
        seed=SEED,
        device=DEVICE,
    log:
        "results/logs/pretrain_upstream/{upstream}.log",
    benchmark:
        "results/benchmarks/pretrain_upstream/{upstream}.tsv"
    priority: 50  # long and on the critical path: start before the many short jobs
    threads: lambda wc: training_threads(wc.upstream)
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPUS,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/pretrain_upstream.py"


rule finetune_upstream:
    input:
        unpack(training_audio),
        base_ckpt=lambda wc: f"resources/upstreams/{UPSTREAMS[wc.upstream]['base']}.ckpt",
    output:
        ckpt="resources/upstreams/{upstream}.ckpt",
        spec="results/upstreams/{upstream}/upstream.json",
        log_json="results/upstreams/{upstream}/training.json",
    wildcard_constraints:
        upstream=one_of(upstreams_of_source("finetune")),
    params:
        spec=lambda wc: UPSTREAMS[wc.upstream],
        corpus_root=lambda wc: corpus_root(UPSTREAMS[wc.upstream].get("corpus", ANALYSIS_CORPUS)),
        split_dir=lambda wc: split_dir(UPSTREAMS[wc.upstream].get("corpus", ANALYSIS_CORPUS), UPSTREAMS[wc.upstream].get("split", "train")),
        seed=SEED,
        device=DEVICE,
    log:
        "results/logs/finetune_upstream/{upstream}.log",
    benchmark:
        "results/benchmarks/finetune_upstream/{upstream}.tsv"
    priority: 40
    threads: lambda wc: training_threads(wc.upstream)
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=GPUS,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/finetune_upstream.py"


rule hub_upstream:
    output:
        spec="results/upstreams/{upstream}/upstream.json",
    wildcard_constraints:
        upstream=one_of(upstreams_of_source("hub", "local")),
    params:
        spec=lambda wc: UPSTREAMS[wc.upstream],
    log:
        "results/logs/hub_upstream/{upstream}.log",
    benchmark:
        "results/benchmarks/hub_upstream/{upstream}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/hub_upstream.py"


rule training_curve:
    input:
        log_json="results/upstreams/{upstream}/training.json",
    output:
        png=report("results/upstreams/{upstream}/training_curve.png", caption="../report/training_curve.rst", category="Upstreams", subcategory="{upstream}"),
        svg="results/upstreams/{upstream}/training_curve.svg",
    log:
        "results/logs/training_curve/{upstream}.log",
    benchmark:
        "results/benchmarks/training_curve/{upstream}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/training_curve.py"
