# Corpus stage: synthesis or download, frame labels, s3prl phone files, pitch.

SYNTHETIC = corpora_of_source("synthetic")
LIBRISPEECH = corpora_of_source("librispeech")


rule synthesize_corpus:
    output:
        directory("resources/corpora/{corpus}"),
    wildcard_constraints:
        corpus=one_of(SYNTHETIC),
    params:
        spec=corpus_params,
        seed=SEED,
    log:
        "results/logs/synthesize_corpus/{corpus}.log",
    benchmark:
        "results/benchmarks/synthesize_corpus/{corpus}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/synthesize_corpus.py"


rule download_librispeech:
    output:
        directory("resources/corpora/{corpus}"),
    wildcard_constraints:
        corpus=one_of(LIBRISPEECH),
    params:
        spec=corpus_params,
    log:
        "results/logs/download_librispeech/{corpus}.log",
    benchmark:
        "results/benchmarks/download_librispeech/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=600,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/download_librispeech.py"


rule ingest_alignments:
    input:
        corpus="resources/corpora/{corpus}",
    output:
        labels="results/{corpus}/labels/{split}.parquet",
        report="results/{corpus}/labels/{split}.report.json",
    params:
        split_dir=lambda wc: split_dir(wc.corpus, wc.split),
        alignments=alignment_source,
        on_missing=config.get("labels", {}).get("on_missing", "error"),
    log:
        "results/logs/ingest_alignments/{corpus}/{split}.log",
    benchmark:
        "results/benchmarks/ingest_alignments/{corpus}/{split}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/ingest_alignments.py"


rule label_summary:
    input:
        labels=expand("results/{{corpus}}/labels/{split}.parquet", split=SPLITS),
    output:
        summary="results/{corpus}/labels/summary.json",
        table=report("results/{corpus}/labels/summary.tsv", caption="../report/corpus_summary.rst", category="Corpus"),
    params:
        splits=SPLITS,
    log:
        "results/logs/label_summary/{corpus}.log",
    benchmark:
        "results/benchmarks/label_summary/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/label_summary.py"


rule s3prl_phone_files:
    input:
        corpus="resources/corpora/{corpus}",
        labels=expand("results/{{corpus}}/labels/{split}.parquet", split=SPLITS),
    output:
        phones="results/{corpus}/s3prl/converted_aligned_phones.txt",
        train="results/{corpus}/s3prl/train_split.txt",
        test="results/{corpus}/s3prl/test_split.txt",
    params:
        splits=SPLITS,
        split_dirs=lambda wc: {s: split_dir(wc.corpus, s) for s in SPLITS},
    log:
        "results/logs/s3prl_phone_files/{corpus}.log",
    benchmark:
        "results/benchmarks/s3prl_phone_files/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/s3prl_phone_files.py"


rule extract_f0:
    input:
        corpus="resources/corpora/{corpus}",
        labels="results/{corpus}/labels/{split}.parquet",
    output:
        f0="results/{corpus}/pitch/{split}.f0.parquet",
    params:
        split_dir=lambda wc: split_dir(wc.corpus, wc.split),
    log:
        "results/logs/extract_f0/{corpus}/{split}.log",
    benchmark:
        "results/benchmarks/extract_f0/{corpus}/{split}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/extract_f0.py"


rule extract_pitch:
    input:
        labels=expand("results/{{corpus}}/labels/{split}.parquet", split=SPLITS),
        f0=expand("results/{{corpus}}/pitch/{split}.f0.parquet", split=SPLITS),
    output:
        pitch=expand("results/{{corpus}}/pitch/{split}.parquet", split=SPLITS),
        thresholds="results/{corpus}/pitch/thresholds.json",
    params:
        splits=SPLITS,
        pitch=config.get("pitch", {}),
    log:
        "results/logs/extract_pitch/{corpus}.log",
    benchmark:
        "results/benchmarks/extract_pitch/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/extract_pitch.py"
