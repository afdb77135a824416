# Corpus stage: synthesis or download, frame labels, s3prl phone files, pitch.

SYNTHETIC = corpora_of_source("synthetic")
LIBRISPEECH = corpora_of_source("librispeech")


checkpoint synthesize_corpus:
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


# Only corpora whose download is incomplete match (LIBRISPEECH_DOWNLOAD, rules/functions/corpus.smk);
# its params are exactly what changes the downloaded bytes.
checkpoint download_librispeech:
    output:
        stamp=f"resources/corpora/{{corpus}}/{DOWNLOAD_STAMP}",
    wildcard_constraints:
        corpus=one_of(LIBRISPEECH_DOWNLOAD),
    params:
        subsets=lambda wc: download_subsets(wc.corpus),
        mirror=lambda wc: CORPORA[wc.corpus].get("mirror"),
        checksums=lambda wc: CORPORA[wc.corpus].get("checksums", {}),
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


# The split's files, so that an in-place edit of a flac or transcript reruns what depends on it.
rule corpus_manifest:
    input:
        corpus=corpus_input,
        files=corpus_files,
    output:
        manifest="results/{corpus}/manifest/{split}.tsv",
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
    log:
        "results/logs/corpus_manifest/{corpus}/{split}.log",
    benchmark:
        "results/benchmarks/corpus_manifest/{corpus}/{split}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/corpus_manifest.py"


rule ingest_alignments:
    input:
        corpus=corpus_input,
        manifest="results/{corpus}/manifest/{split}.tsv",
        alignments=alignment_inputs,
    output:
        labels="results/{corpus}/labels/{split}.parquet",
        report="results/{corpus}/labels/{split}.report.json",
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
        split_dir=lambda wc: split_dir(wc.corpus, wc.split),
        alignments=alignment_source,
        speakers_file=lambda wc: CORPORA[wc.corpus].get("speakers_file"),
        on_missing=config.get("labels", {}).get("on_missing", "error"),
        on_mismatch=config.get("labels", {}).get("on_mismatch", "error"),
        phone_set=config.get("labels", {}).get("phone_set", "auto"),
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
        corpus=corpus_input,
        labels=expand("results/{{corpus}}/labels/{split}.parquet", split=SPLITS),
    output:
        phones="results/{corpus}/s3prl/converted_aligned_phones.txt",
        train="results/{corpus}/s3prl/train_split.txt",
        test="results/{corpus}/s3prl/test_split.txt",
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
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
        corpus=corpus_input,
        labels="results/{corpus}/labels/{split}.parquet",
    output:
        f0="results/{corpus}/pitch/{split}.f0.parquet",
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
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
