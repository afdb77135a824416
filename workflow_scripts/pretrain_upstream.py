"""Rule pretrain_upstream: train a small upstream of the configured family on a corpus split.

The trainer is found by name: ``speechdissect.upstreams.{family}.pretrain_{family}``.
"""
import importlib
import json

from speechdissect.labels import audio_path, read_label_table, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.upstreams.registry import checkpoint_entry

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
family = spec["family"]
try:
    trainer = getattr(importlib.import_module(f"speechdissect.upstreams.{family}"), f"pretrain_{family}")
except (ImportError, AttributeError):
    raise ValueError(f"config key upstreams.{snakemake.wildcards.upstream}.family: no trainer for {family!r}; "
                     "known families: hubert, mockingjay") from None
utts = read_label_table(snakemake.input.labels)["utterance"].unique()
wavs = [str(audio_path(snakemake.params.corpus_root, snakemake.params.split_dir, u)) for u in utts]
config = {**spec.get("train", {}), "threads": snakemake.threads,  # the rule's threads (train.threads, or --set-threads)
          **({"model": spec["model"]} if spec.get("model") else {})}
result = trainer(wavs, snakemake.output.ckpt, config=config, seed=snakemake.params.seed, device=snakemake.params.device)
log.info("%s trained: start %s end %s", snakemake.wildcards.upstream, result.get("start"), result.get("end"))
if result.get("stopped_by") == "max_minutes":
    log.warning("%s stopped by the max_minutes safety cap after %d steps, not by steps: this checkpoint depends "
                "on machine speed; raise upstreams.%s.train.max_minutes for a step-reproducible run",
                snakemake.wildcards.upstream, len(result.get("step", [])), snakemake.wildcards.upstream)
write_text_atomic(snakemake.output.log_json, json.dumps(result, indent=1, default=str))
entry = checkpoint_entry(snakemake.output.ckpt)
write_text_atomic(snakemake.output.spec, json.dumps(
    {"upstream": snakemake.wildcards.upstream, "entry": entry, "ckpt": snakemake.output.ckpt, "family": family}, indent=2))
