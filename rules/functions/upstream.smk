# Helper functions of rules/upstream.smk (kept apart from the rules, as snakemake --lint asks).


def upstreams_of_source(*sources):
    return [n for n, spec in UPSTREAMS.items() if spec["source"] in sources]



def upstream_inputs(wildcards):
    """The spec file (and checkpoint, when there is one) of ``wildcards.upstream``."""
    spec = UPSTREAMS[wildcards.upstream]
    files = {"spec": f"results/upstreams/{wildcards.upstream}/upstream.json"}
    if spec["source"] in ("pretrain", "finetune"):
        files["ckpt"] = f"resources/upstreams/{wildcards.upstream}.ckpt"
    return files



def training_audio(wildcards):
    spec = UPSTREAMS[wildcards.upstream]
    corpus = spec.get("corpus", ANALYSIS_CORPUS)
    return {
        "corpus": corpus_input_of(corpus),
        "labels": f"results/{corpus}/labels/{spec.get('split', 'train')}.parquet",
    }



def training_threads(upstream):
    """torch threads of a training job: upstreams.{name}.train.threads (default 1; --set-threads overrides)."""
    return int(UPSTREAMS[upstream].get("train", {}).get("threads", 1))
