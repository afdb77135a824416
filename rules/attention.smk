# Attention stage (Yang, Liu & Lee, Interspeech 2020), on the cached attention subset
# (cache.attention_utterances) of the analysis corpus:
#   attention_metrics       globalness / verticality / diagonality / max weight + category per head
#   attention_segmentation  phoneme boundaries from attention heads, hidden states and MFCCs (R-value)
#   phone_relation_maps     phone relation maps P and concentration C per head
#   head_masks              cumulative head masks per ranking and fraction, for head pruning
#   head_pruning_curves     downstream score vs fraction of heads removed (config pruning.heads), with CIs
#   attention_segmentation_summary  best head / hidden state / MFCC R-values of every upstream in one table
# Settings: the optional `attention:` config section (docs/attention_config.md); every key has a default.
# Outputs: results/{upstream}/{corpus}/attention/ (layout in docs/attention_config.md).

ATTENTION = config.get("attention") or {}
ATT_SPLIT = ATTENTION.get("split", "test")
ATT_TUNE_SPLIT = ATTENTION.get("tune_split", "dev")
ATT_MAX_UTTERANCES = ATTENTION.get("max_utterances")
ATT_SEGMENTATION = {
    "alpha_factors": [0.125, 0.25, 0.5, 1.0, 2.0, 4.0],
    "betas": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4],
    "tune": "feature",
    "tolerance": 0.02,
    "centre": "frame",
    "heads": "all",
    "hidden": True,
    **(ATTENTION.get("segmentation") or {}),
}
ATT_SEGMENTATION["mfcc"] = {"n_ceps": 13, "deltas": False, "cmvn": True,
                            **((ATTENTION.get("segmentation") or {}).get("mfcc") or {})}
ATT_RELATIONS = {"heads": None, "include_silence": False, **(ATTENTION.get("relations") or {})}
ATT_MASKS = {
    "rankings": ["globalness", "verticality", "diagonality", "max_weight", "random"],
    "fractions": [0.0, 0.25, 0.5, 0.75],
    "remove_first": {},
    "seed": None,
    **(ATTENTION.get("masks") or {}),
}
ATT_MASK_SEED = SEED if ATT_MASKS["seed"] is None else ATT_MASKS["seed"]
# Kept in step with speechdissect.attention.ranking.RANKINGS (not imported: the Snakefile is parsed per job).
ATT_RANKINGS = ("globalness", "verticality", "diagonality", "max_weight", "random")


ATT_DIR = "results/{upstream}/{corpus}/attention"


# The masks asked for here plus those the head-pruning evaluation (config pruning.heads) needs.
_PRUNE_HEADS = (config.get("pruning") or {}).get("heads") or {}
HEAD_MASK_GRID = list(dict.fromkeys(
    [(r, float(f)) for r in ATT_MASKS["rankings"] for f in ATT_MASKS["fractions"]]
    + [(r, float(f)) for r in _PRUNE_HEADS.get("rankings", []) for f in _PRUNE_HEADS.get("fractions", [])]
))

# Head-pruning curves (config pruning.heads): every ranking x fraction x task evaluated by s3prl_downstream
# on each of these upstreams; fraction 0 is the original model. Variants zero out_proj columns of a
# hubert_local checkpoint (speechdissect/variants.py), so only upstreams trained here in the HuBERT family qualify.
HEAD_PRUNING_UPSTREAMS = list(_PRUNE_HEADS.get("upstreams", (config.get("pruning") or {}).get("upstreams", [])))
HEAD_PRUNING_GRID = {
    "rankings": list(_PRUNE_HEADS.get("rankings", [])),
    "fractions": sorted({float(f) for f in _PRUNE_HEADS.get("fractions", []) if float(f) > 0}),
    "tasks": list(_PRUNE_HEADS.get("tasks", [])),
    "max_loss": float(_PRUNE_HEADS.get("max_loss", 1.0)),
}
if not (HEAD_PRUNING_GRID["rankings"] and HEAD_PRUNING_GRID["fractions"] and HEAD_PRUNING_GRID["tasks"]):
    HEAD_PRUNING_UPSTREAMS = []


rule attention_metrics:
    input:
        cache=att_cache(ATT_SPLIT),
        labels=f"results/{{corpus}}/labels/{ATT_SPLIT}.parquet",
    output:
        table=report(att_out("metrics.tsv"), caption="../report/attention_metrics_table.rst", category="Attention", subcategory="{upstream}"),
        summary=att_out("metrics.json"),
        png=report(att_out("metrics.png"), caption="../report/attention_metrics.rst", category="Attention", subcategory="{upstream}"),
        svg=att_out("metrics.svg"),
        examples_png=report(att_out("examples.png"), caption="../report/attention_examples.rst", category="Attention", subcategory="{upstream}"),
        examples_svg=att_out("examples.svg"),
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        split=ATT_SPLIT,
        max_utterances=ATT_MAX_UTTERANCES,
        example_utterance=ATTENTION.get("example_utterance"),
    log:
        "results/logs/attention_metrics/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/attention_metrics/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/attention_metrics.py"


rule attention_segmentation:
    input:
        cache=att_cache(ATT_SPLIT),
        labels=f"results/{{corpus}}/labels/{ATT_SPLIT}.parquet",
        tune_cache=att_cache(ATT_TUNE_SPLIT),
        tune_labels=f"results/{{corpus}}/labels/{ATT_TUNE_SPLIT}.parquet",
        corpus=corpus_input,
    output:
        table=report(att_out("segmentation.tsv"), caption="../report/attention_segmentation_table.rst", category="Attention", subcategory="{upstream}"),
        grid=att_out("segmentation_grid.tsv"),
        summary=att_out("segmentation.json"),
        png=report(att_out("segmentation.png"), caption="../report/attention_segmentation.rst", category="Attention", subcategory="{upstream}"),
        svg=att_out("segmentation.svg"),
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        corpus_root=lambda wc: corpus_root(wc.corpus),
        split=ATT_SPLIT,
        tune_split=ATT_TUNE_SPLIT,
        split_dir=lambda wc: split_dir(wc.corpus, ATT_SPLIT),
        tune_split_dir=lambda wc: split_dir(wc.corpus, ATT_TUNE_SPLIT),
        max_utterances=ATT_MAX_UTTERANCES,
        segmentation=ATT_SEGMENTATION,
    log:
        "results/logs/attention_segmentation/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/attention_segmentation/{upstream}/{corpus}.tsv"
    threads: 1  # a 2-thread job waits for both cores to be free at once: with many 1-thread jobs, until the end (--set-threads for more)
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/attention_segmentation.py"


rule phone_relation_maps:
    input:
        cache=att_cache(ATT_SPLIT),
        labels=f"results/{{corpus}}/labels/{ATT_SPLIT}.parquet",
        metrics=att_out("metrics.tsv"),
        metrics_summary=att_out("metrics.json"),
    output:
        table=report(att_out("phone_relations.tsv"), caption="../report/attention_relations_table.rst", category="Attention", subcategory="{upstream}"),
        npz=att_out("phone_relations.npz"),
        png=report(att_out("phone_relations.png"), caption="../report/attention_relations.rst", category="Attention", subcategory="{upstream}"),
        svg=att_out("phone_relations.svg"),
        conc_png=report(att_out("concentration.png"), caption="../report/attention_concentration.rst", category="Attention", subcategory="{upstream}"),
        conc_svg=att_out("concentration.svg"),
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        split=ATT_SPLIT,
        max_utterances=ATT_MAX_UTTERANCES,
        relations=ATT_RELATIONS,
    log:
        "results/logs/phone_relation_maps/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/phone_relation_maps/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/attention_relations.py"


rule head_masks:
    input:
        metrics=att_out("metrics.tsv"),
    output:
        masks=[att_out(f"head_masks/{r}_{fraction_tag(f)}.json") for r, f in HEAD_MASK_GRID],
        index=report(att_out("head_masks/index.tsv"), caption="../report/attention_head_masks.rst", category="Attention", subcategory="{upstream}"),
        rankings=att_out("head_masks/rankings.tsv"),
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        grid=HEAD_MASK_GRID,
        remove_first=ATT_MASKS["remove_first"],
        seed=ATT_MASK_SEED,
    log:
        "results/logs/head_masks/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/head_masks/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/attention_head_masks.py"


rule head_pruning_curves:
    input:
        unpack(head_pruning_inputs),
        masks=att_out("head_masks/index.tsv"),
    output:
        table=report(att_out("head_pruning.tsv"), caption="../report/attention_head_pruning_table.rst", category="Attention", subcategory="{upstream}"),
        fractions=report(att_out("head_pruning_fractions.tsv"), caption="../report/attention_head_pruning_fractions.rst", category="Attention", subcategory="{upstream}"),
        png=report(att_out("head_pruning.png"), caption="../report/attention_head_pruning.rst", category="Attention", subcategory="{upstream}"),
        svg=att_out("head_pruning.svg"),
    wildcard_constraints:
        upstream=one_of(HEAD_PRUNING_UPSTREAMS),
        corpus=one_of([ANALYSIS_CORPUS]),
    params:
        grid=HEAD_PRUNING_GRID,
    log:
        "results/logs/head_pruning_curves/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/head_pruning_curves/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/attention_head_pruning.py"


rule attention_segmentation_summary:
    input:
        tables=expand(f"{ATT_DIR}/segmentation.tsv", upstream=ANALYSIS_UPSTREAMS, corpus=ANALYSIS_CORPUS),
    output:
        table=report("results/attention/segmentation_summary.tsv", caption="../report/attention_segmentation_summary.rst", category="Attention", subcategory="summary"),
    params:
        upstreams=ANALYSIS_UPSTREAMS,
        split=ATT_SPLIT,
        tune_split=ATT_TUNE_SPLIT,
        tolerance=ATT_SEGMENTATION["tolerance"],
    log:
        "results/logs/attention_segmentation_summary/summary.log",
    benchmark:
        "results/benchmarks/attention_segmentation_summary/summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/attention_segmentation_summary.py"
