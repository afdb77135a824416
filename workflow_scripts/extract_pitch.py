"""Rule extract_pitch: pitch groups (low/mid/high) from F0, thresholds from the reference split."""
import json

import pandas as pd

from speechdissect.labels import read_label_table, write_atomic, write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.pitch import pitch_table

log = setup_logging(snakemake.log[0])
cfg = snakemake.params.pitch
splits = snakemake.params.splits
quantiles = cfg.get("quantiles", [1 / 3, 2 / 3])
reference = cfg.get("reference_split", splits[0])  # one of splits (speechdissect.config_checks)


def load(split):
    i = splits.index(split)
    labels = read_label_table(snakemake.input.labels[i])
    f0 = pd.read_parquet(snakemake.input.f0[i])
    return labels, {u: g["f0"].to_numpy() for u, g in f0.groupby("utterance", sort=False)}


fixed = cfg.get("thresholds")
if fixed:
    thresholds = {"overall": tuple(fixed)}
    log.info("fixed pitch thresholds from config: %s Hz", fixed)
else:
    _, thresholds = pitch_table(*load(reference), quantiles=quantiles)
    log.info("pitch thresholds from the %s split's voiced frames: %s", reference, thresholds)
for split, out in zip(splits, snakemake.output.pitch):
    table, _ = pitch_table(*load(split), thresholds=thresholds, quantiles=quantiles)
    write_atomic(out, lambda tmp: table.to_parquet(tmp, index=False))
write_text_atomic(snakemake.output.thresholds, json.dumps({"reference_split": reference, "quantiles": quantiles, **thresholds}, indent=2, default=list))
