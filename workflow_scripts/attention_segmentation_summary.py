"""Rule attention_segmentation_summary: segmentation R-values of every analysis upstream in one table.

Per upstream the attention head, the hidden state and MFCC rows chosen on the
tuning split (speechdissect.attention.segmentation_summary), scored on the report split.
"""
import pandas as pd

from speechdissect.attention import segmentation_summary
from speechdissect.labels import write_atomic
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
tables = {u: pd.read_csv(path, sep="\t") for u, path in zip(snakemake.params.upstreams, snakemake.input.tables)}
summary = segmentation_summary(tables)
write_atomic(snakemake.output.table, lambda tmp: summary.to_csv(tmp, sep="\t", index=False, float_format="%.4g"))
for r in summary.itertuples():
    log.info("%s %s (layer %s, head %s): R %.4f, F1 %.4f on %s", r.upstream, r.feature, r.layer, r.head,
             r.r_value, r.f1, snakemake.params.split)
