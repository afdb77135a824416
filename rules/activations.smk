# Activation cache: one pass of an upstream over a corpus split (docs/formats.md).

CACHE = config.get("cache", {})
CACHE_SPLITS = CACHE.get("splits", SPLITS)


rule cache_activations:
    input:
        unpack(upstream_inputs),
        corpus=corpus_input,
        labels="results/{corpus}/labels/{split}.parquet",
    output:
        directory("results/{upstream}/{corpus}/cache/{split}"),
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
        split_dir=lambda wc: split_dir(wc.corpus, wc.split),
        attention_utterances=CACHE.get("attention_utterances", 16),
        seed=SEED,
        device=DEVICE,
    log:
        "results/logs/cache_activations/{upstream}/{corpus}/{split}.log",
    benchmark:
        "results/benchmarks/cache_activations/{upstream}/{corpus}/{split}.tsv"
    priority: 30
    threads: CACHE.get("threads", 1)
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPUS,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/cache_activations.py"
