"""Rules s3prl_downstream / s3prl_finetune: train and test one task on a frozen (fine-tuned) upstream variant,
every seed and readout (weighted sum, last hidden state, each hidden state), with s3prl's runner."""
import json
from pathlib import Path

from speechdissect.downstream.runner import readout_name, resolve_readouts, run_seeds
from speechdissect.labels import write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.upstreams.registry import count_hidden_states

log = setup_logging(snakemake.log[0])
with open(snakemake.input.spec) as f:
    spec = json.load(f)
expdir = Path(snakemake.params.expdir)
seeds = snakemake.params.seeds
readouts = getattr(snakemake.params, "readouts", ["weighted"])
n_hidden = count_hidden_states(spec["entry"], spec.get("ckpt")) if "each" in readouts else None
layers = resolve_readouts(readouts, n_hidden)
runs = [(lay, s) for lay in layers for s in seeds]
log.info("%s %s %s: %s, seeds %s, readouts %s, in %s", snakemake.wildcards.upstream, snakemake.wildcards.variant,
         snakemake.wildcards.task, "fine-tuning" if getattr(snakemake.params, "finetune", False) else "frozen upstream",
         seeds, [readout_name(lay) for lay in layers], expdir)
results = run_seeds(
    snakemake.wildcards.task, spec["entry"], spec.get("ckpt"), snakemake.input.data,
    expdirs=[expdir / (f"seed{s}" if lay is None else f"{readout_name(lay)}/seed{s}") for lay, s in runs],
    seeds=[s for _, s in runs], layers=[lay for lay, _ in runs], steps=snakemake.params.steps,
    device=snakemake.params.device, name=snakemake.wildcards.upstream, variant=snakemake.wildcards.variant,
    threads=snakemake.threads,
    finetune=getattr(snakemake.params, "finetune", False),  # s3prl_finetune: upstream trained too
    upstream_lr=getattr(snakemake.params, "upstream_lr", None),
)
for r in results:
    log.info("%s %s %s %s seed %s: score %.4f (%.1f s)", snakemake.wildcards.upstream, snakemake.wildcards.variant,
             snakemake.wildcards.task, r["readout"], r.get("seed"), r.get("score", float("nan")),
             r.get("wall_seconds") or float("nan"))
write_text_atomic(snakemake.output.results, json.dumps({"variant_spec": spec, "runs": results}, indent=1, default=str))
