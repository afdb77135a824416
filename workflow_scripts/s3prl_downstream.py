"""Rules s3prl_downstream / s3prl_finetune: train and test one task on a frozen (fine-tuned) upstream variant, every seed, with s3prl's runner."""
import json
from pathlib import Path

from speechdissect.downstream.runner import run_seeds
from speechdissect.labels import write_text_atomic
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
with open(snakemake.input.spec) as f:
    spec = json.load(f)
expdir = Path(snakemake.params.expdir)
seeds = snakemake.params.seeds
log.info("%s %s %s: %s, seeds %s, in %s", snakemake.wildcards.upstream, snakemake.wildcards.variant,
         snakemake.wildcards.task, "fine-tuning" if getattr(snakemake.params, "finetune", False) else "frozen upstream",
         seeds, expdir)
results = run_seeds(
    snakemake.wildcards.task, spec["entry"], spec.get("ckpt"), snakemake.input.data,
    expdirs=[expdir / f"seed{s}" for s in seeds], seeds=seeds, steps=snakemake.params.steps,
    device=snakemake.params.device, name=snakemake.wildcards.upstream, variant=snakemake.wildcards.variant,
    threads=snakemake.threads,
    finetune=getattr(snakemake.params, "finetune", False),  # s3prl_finetune: upstream trained too
    upstream_lr=getattr(snakemake.params, "upstream_lr", None),
)
for r in results:
    log.info("%s %s %s seed %s: score %.4f (%.1f s)", snakemake.wildcards.upstream, snakemake.wildcards.variant,
             snakemake.wildcards.task, r.get("seed"), r.get("score", float("nan")), r.get("wall_seconds", float("nan")))
write_text_atomic(snakemake.output.results, json.dumps({"variant_spec": spec, "runs": results}, indent=1, default=str))
