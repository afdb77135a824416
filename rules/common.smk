# Shared helpers of the rules: config look-ups and target lists. No analysis logic here.
import json
import re
from pathlib import Path

CORPORA = config["corpora"]
ANALYSIS_CORPUS = config["analysis_corpus"]
SPLITS = config["splits"]
SEED = config.get("seed", 0)
DEVICE = config.get("device", "cpu")
GPUS = 1 if DEVICE == "cuda" else 0



def corpora_of_source(source):
    return [name for name, spec in CORPORA.items() if spec["source"] == source]


def one_of(names):
    """A wildcard regex matching exactly these names (or nothing)."""
    return "|".join(map(re.escape, names)) if names else "(?!x)x"


def fraction_tag(x):
    """How a fraction or sparsity is written in file and variant names: 0 -> '0', 0.25 -> '0.25'."""
    return f"{float(x):g}"


def corpus_params(wildcards):
    return CORPORA[wildcards.corpus]


def all_targets():
    corpus = ANALYSIS_CORPUS
    targets = expand("results/{corpus}/labels/{split}.parquet", corpus=corpus, split=SPLITS)
    targets += expand("results/{corpus}/pitch/{split}.parquet", corpus=corpus, split=SPLITS)
    targets.append(f"results/{corpus}/s3prl/converted_aligned_phones.txt")
    targets.append(f"results/{corpus}/labels/summary.json")
    for upstream in ANALYSIS_UPSTREAMS:
        if UPSTREAMS[upstream]["source"] in ("pretrain", "finetune"):
            targets.append(f"results/upstreams/{upstream}/training_curve.png")
        targets += [cache_dir(upstream, split) for split in CACHE_SPLITS]
    targets += convexity_targets()
    targets += neuron_targets()
    targets += attention_targets()
    targets += downstream_targets()
    targets.append("results/findings.tsv")  # which seed claims hold (first in the report)
    targets += ["results/provenance/config.yaml", "results/provenance/software.tsv"]
    return targets


wildcard_constraints:
    corpus=one_of(list(CORPORA)),
    split=one_of(SPLITS),
