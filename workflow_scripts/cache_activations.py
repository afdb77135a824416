"""Rule cache_activations: FFN activations, hidden states and attention of one split, written once."""
import json

import numpy as np
import torch

from speechdissect.cache import write_cache
from speechdissect.labels import audio_path, read_label_table
from speechdissect.logs import setup_logging
from speechdissect.upstreams.registry import load_upstream

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
with open(snakemake.input.spec) as f:
    spec = json.load(f)
labels = read_label_table(snakemake.input.labels)
utts = list(labels["utterance"].unique())
wavs = {u: str(audio_path(snakemake.params.corpus_root, snakemake.params.split_dir, u)) for u in utts}
rng = np.random.default_rng(snakemake.params.seed)
n_att = min(snakemake.params.attention_utterances, len(utts))
attention_utts = sorted(rng.choice(utts, size=n_att, replace=False).tolist()) if n_att else []
upstream = load_upstream(spec["entry"], spec.get("ckpt"), device=snakemake.params.device)
cache = write_cache(upstream, spec.get("family"), wavs, labels, snakemake.output[0],
                    attention_utterances=attention_utts, device=snakemake.params.device,
                    upstream_name=spec["upstream"])
log.info("cached %s: %s", snakemake.output[0], cache.meta)
