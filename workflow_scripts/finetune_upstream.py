"""Rule finetune_upstream: whole-model frame phone classification fine-tuning of a pretrained upstream."""
import json

from speechdissect.labels import audio_path, read_label_table, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.phones import phone_id_table
from speechdissect.upstreams.finetune import finetune_hubert
from speechdissect.upstreams.registry import checkpoint_entry

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
ids = {phone: i for i, phone, _ in phone_id_table()}
labels = read_label_table(snakemake.input.labels)
utts, wavs, targets = [], [], []
for utt, group in labels.groupby("utterance", sort=False):
    utts.append(utt)
    wavs.append(str(audio_path(snakemake.params.corpus_root, snakemake.params.split_dir, utt)))
    targets.append(group["phone"].map(ids).to_numpy())
result = finetune_hubert(snakemake.input.base_ckpt, snakemake.output.ckpt, wavs, targets, n_classes=len(ids),
                         config={**spec.get("train", {}), "threads": snakemake.threads}, seed=snakemake.params.seed, device=snakemake.params.device)
log.info("%s fine-tuned: start %s end %s", snakemake.wildcards.upstream, result.get("start"), result.get("end"))
if result.get("stopped_by") == "max_minutes":
    log.warning("%s stopped by the max_minutes safety cap after %d steps, not by steps: this checkpoint depends "
                "on machine speed; raise upstreams.%s.train.max_minutes for a step-reproducible run",
                snakemake.wildcards.upstream, len(result.get("step", [])), snakemake.wildcards.upstream)
write_text_atomic(snakemake.output.log_json, json.dumps(result, indent=1, default=str))
write_text_atomic(snakemake.output.spec, json.dumps(
    {"upstream": snakemake.wildcards.upstream, "entry": checkpoint_entry(snakemake.output.ckpt),
     "ckpt": snakemake.output.ckpt, "family": "hubert", "base": spec["base"]}, indent=2))
