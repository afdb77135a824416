"""Rule label_summary: corpus size per split (utterances, hours, frames, speakers per gender)."""
import json

import pandas as pd

from speechdissect.frames import HOP, SAMPLE_RATE
from speechdissect.labels import read_label_table, write_atomic, write_text_atomic
from speechdissect.logs import setup_logging

setup_logging(snakemake.log[0])
rows = []
for split, path in zip(snakemake.params.splits, snakemake.input.labels):
    t = read_label_table(path)
    speakers = t.drop_duplicates("speaker")
    rows.append({
        "split": split,
        "utterances": t["utterance"].nunique(),
        "frames": len(t),
        "hours": round(len(t) * HOP / SAMPLE_RATE / 3600, 4),
        "speakers": len(speakers),
        "male_speakers": int((speakers["gender"] == "M").sum()),
        "female_speakers": int((speakers["gender"] == "F").sum()),
        "speech_frames": int((t["phone_class"] != "silence").sum()),
        "phones": t.loc[t["phone_class"] != "silence", "phone"].nunique(),
        "words": t.loc[t["word"] != "<sil>", "word"].nunique(),
    })
table = pd.DataFrame(rows)
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False))
write_text_atomic(snakemake.output.summary, json.dumps({"splits": rows}, indent=2))
