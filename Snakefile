# speech-dissect workflow: see README.md and docs/formats.md.
import os

from snakemake.utils import min_version, validate

min_version("9.0")

if not config:
    raise WorkflowError(
        "no configuration: pass --configfile config.yaml (the embedded default) or your own; "
        "`make reproduce` and --profile profiles/default do this for you"
    )
validate(config, "config.schema.yaml")

from speechdissect.config_checks import check_config, check_device

check_config(config)  # cross-key checks (names that must exist elsewhere in the config)
# device: cuda needs CUDA where jobs run: here, or inside each cluster job (remote_exec), not on a
# cluster's submit host (often GPU-less), which profiles/slurm marks with SPEECHDISSECT_SUBMIT_HOST
if workflow.remote_exec or not os.environ.get("SPEECHDISSECT_SUBMIT_HOST"):
    check_device(config)

report: "report/workflow.rst"  # the report's opening page: the findings verdicts (rule findings)

include: "rules/common.smk"
include: "rules/functions/corpus.smk"
include: "rules/corpus.smk"
include: "rules/functions/upstream.smk"
include: "rules/upstream.smk"
include: "rules/functions/activations.smk"
include: "rules/activations.smk"
include: "rules/functions/convexity.smk"
include: "rules/convexity.smk"
include: "rules/functions/neurons.smk"
include: "rules/neurons.smk"
include: "rules/functions/attention.smk"
include: "rules/attention.smk"
include: "rules/functions/downstream.smk"
include: "rules/downstream.smk"
include: "rules/functions/findings.smk"
include: "rules/findings.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
