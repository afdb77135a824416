# speech-dissect workflow: see README.md and docs/formats.md.
from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "config.yaml"
validate(config, "config.schema.yaml")

include: "rules/common.smk"
include: "rules/corpus.smk"


rule all:
    input:
        all_targets(),
    default_target: True
