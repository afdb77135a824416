# Provenance for the report: the resolved config and the software versions of the run.
import hashlib


rule provenance:
    output:
        config=report("results/provenance/config.yaml", caption="../report/provenance_config.rst", category="Provenance"),
        versions=report("results/provenance/software.tsv", caption="../report/provenance_software.rst", category="Provenance"),
    params:
        config_md5=hashlib.md5(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest(),  # rerun on any config change
    log:
        "results/logs/provenance/provenance.log",
    benchmark:
        "results/benchmarks/provenance/provenance.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/corpus.yaml"
    script:
        "../workflow_scripts/provenance.py"
