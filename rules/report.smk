# Provenance for the report: the resolved config and the software versions of the run.


rule provenance:
    output:
        config=report("results/provenance/config.yaml", caption="../report/provenance_config.rst", category="Provenance"),
        versions=report("results/provenance/software.tsv", caption="../report/provenance_software.rst", category="Provenance"),
    params:
        config=config,
    log:
        "results/logs/provenance/provenance.log",
    benchmark:
        "results/benchmarks/provenance/provenance.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/provenance.py"
