"""Rule phone_relation_maps: phone relation maps P and concentration C of every head.

Over the cached attention subset of one split (Yang, Liu & Lee, 2020):
concentration per phone per head as a TSV, every head's P / P' / P_U in an
.npz, heat maps of P for chosen heads (default: the top head of each category)
and of C for all heads.
"""
import json

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from speechdissect.attention import CMU39, PhoneRelations
from speechdissect.attention.figures import concentration_heatmap, relation_maps
from speechdissect.cache import ActivationCache
from speechdissect.labels import read_label_table, write_atomic
from speechdissect.logs import setup_logging
from speechdissect.phones import SIL
from speechdissect.plots import save_figure

log = setup_logging(snakemake.log[0])
p = snakemake.params
upstream = snakemake.wildcards.upstream
cache = ActivationCache(snakemake.input.cache)
labels = read_label_table(snakemake.input.labels)
cache.verify(labels)
utts = list(cache.meta.get("attention_utterances", []))[: p.max_utterances or None]
if not utts:
    raise ValueError(f"{cache.path}: no attention maps cached (meta.json attention_utterances is empty); "
                     "set cache.attention_utterances > 0 in the config")
phones = (*CMU39, SIL) if p.relations["include_silence"] else CMU39
frame_phone = labels["phone"].to_numpy()
acc = PhoneRelations(phones)
for utt in tqdm(utts, desc=f"phone relations {upstream}", unit="utt"):
    acc.update(cache.attention(utt, mmap=True), frame_phone[cache.utterance_slice(utt)])

conc = acc.concentration_table()
write_atomic(snakemake.output.table, lambda tmp: conc.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
P = acc.relation()


def save_npz(tmp):
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, relation=P, observed=acc.observed(), uniform=acc.uniform(),
                            concentration=acc.concentration(), phones=np.asarray(phones),
                            utterances=np.asarray(utts))


write_atomic(snakemake.output.npz, save_npz)

metrics = pd.read_csv(snakemake.input.metrics, sep="\t")
with open(snakemake.input.metrics_summary) as fh:
    top = json.load(fh)["top_heads"]
if p.relations["heads"]:
    heads = [tuple(int(x) for x in str(h).split("-")) for h in p.relations["heads"]]
    names = {h: f"L{h[0]}H{h[1]}" for h in heads}
else:  # the most global / vertical / diagonal head, as in the metrics figure
    heads = [(h["layer"], h["head"]) for h in top.values()]
    names = {(h["layer"], h["head"]): f"most {c}: L{h['layer']}H{h['head']}" for c, h in reversed(list(top.items()))}
L, H = P.shape[:2]
for l, h in heads:
    if not (0 <= l < L and 0 <= h < H):
        raise ValueError(f"config key attention.relations.heads: head {l}-{h} does not exist "
                         f"({L} layers x {H} heads, write 'layer-head', 0-based)")
maps = [(names[(l, h)], P[l, h]) for l, h in heads]
present = set().union(*(frame_phone[cache.utterance_slice(u)] for u in utts)) & set(phones)
log.info("%d of %d phones occur in the %d utterances; chosen heads %s", len(present), len(phones), len(utts), heads)
save_figure(relation_maps(maps, phones, f"{upstream}: phone relation maps P ({p.split}, {len(utts)} utterances)"),
            snakemake.output.png, snakemake.output.svg)
save_figure(concentration_heatmap(conc, f"{upstream}: concentration per phone ({p.split})", phones=phones,
                                  categories=metrics),
            snakemake.output.conc_png, snakemake.output.conc_svg)
