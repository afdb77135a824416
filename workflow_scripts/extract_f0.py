"""Rule extract_f0: per-frame F0 of every utterance of a split on the shared 20 ms grid."""
import numpy as np
import pandas as pd

from speechdissect.labels import audio_path, read_label_table, write_atomic
from speechdissect.logs import setup_logging
from speechdissect.pitch import f0_for_files

log = setup_logging(snakemake.log[0])
labels = read_label_table(snakemake.input.labels)
utts = labels["utterance"].unique()
files = {u: audio_path(snakemake.params.corpus_root, snakemake.params.split_dir, u) for u in utts}
f0 = f0_for_files(files)
frames = labels.groupby("utterance", sort=False)["frame"].size()
rows = []
for utt in utts:
    values = f0[utt]
    if len(values) != frames[utt]:
        raise ValueError(f"F0 of {files[utt]} has {len(values)} frames, the label table {frames[utt]}: "
                         "the audio changed since labels were made; rerun ingest_alignments")
    rows.append(pd.DataFrame({"utterance": utt, "frame": np.arange(len(values), dtype=np.int32), "f0": values.astype(np.float32)}))
table = pd.concat(rows, ignore_index=True)
log.info("F0 for %d utterances, %.1f%% voiced frames", len(utts), 100 * (table["f0"] > 0).mean())
write_atomic(snakemake.output.f0, lambda tmp: table.to_parquet(tmp, index=False))
