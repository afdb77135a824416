# Helper functions of rules/findings.smk (kept apart from the rules, as snakemake --lint asks).


def findings_upstreams():
    """Every upstream a per-upstream claim may report: analysis, downstream and pruning upstreams."""
    return list(dict.fromkeys([*ANALYSIS_UPSTREAMS, *DS_UPSTREAMS, *PRUNING.get("upstreams", []), *HEAD_PRUNING_UPSTREAMS]))


def findings_inputs():
    """The tables of speechdissect.findings.TABLES this config produces (a claim without its table is not testable)."""
    from speechdissect.findings import table_paths

    produced = set(neuron_targets() + attention_targets() + convexity_targets() + downstream_targets())
    produced |= {f"results/{u}/{ANALYSIS_CORPUS}/convexity/summary.tsv" for u in ANALYSIS_UPSTREAMS}  # rule layer_convexity
    produced |= {str(Path(p).with_suffix(".tsv")) for p in produced if Path(p).name == "models.png"}  # neuron_models_figure
    tasks = sorted({t for _, t, _ in downstream_jobs()})
    return [p for p in table_paths(findings_upstreams(), ANALYSIS_CORPUS, tasks) if p in produced]
