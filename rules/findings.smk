# Findings page: does each seed claim of the three studies hold on this run's tables?
# speechdissect/findings.py (one function per claim); claims and verdict rules: docs/findings.md.

# The report lists categories sorted by name (snakemake's html reporter: localeCompare), and a symbol
# sorts before every letter: the star puts the findings at the top of the menu.
FINDINGS_CATEGORY = "★ Findings"


rule findings:
    input:
        tables=findings_inputs(),
    output:
        table=report("results/findings.tsv", caption="../report/findings_table.rst", category=FINDINGS_CATEGORY),
        markdown=report("results/findings.md", caption="../report/findings_page.rst", category=FINDINGS_CATEGORY),
        html="results/findings.html",  # compact verdict table shown on the report's opening page (report/workflow.rst)
    params:
        corpus=ANALYSIS_CORPUS,
        upstreams=findings_upstreams(),
        baselines=DS_BASELINES,
    log:
        "results/logs/findings/findings.log",
    benchmark:
        "results/benchmarks/findings/findings.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/findings.py"
