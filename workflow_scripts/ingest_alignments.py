"""Rule ingest_alignments: forced alignments -> one frame-label table per split."""
import json

from speechdissect.labels import build_label_table, read_speaker_genders, write_label_table, write_text_atomic
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
genders = None  # the corpus's own speakers.tsv / SPEAKERS.TXT
if p.speakers_file:  # corpora.{name}.speakers_file first, the corpus's SPEAKERS.TXT for speakers it lacks
    try:
        genders = read_speaker_genders(p.corpus_root)
    except ValueError:
        genders = {}
    genders.update(read_speaker_genders(p.speakers_file))
table, report = build_label_table(p.corpus_root, p.split_dir, p.alignments, genders, on_missing=p.on_missing,
                                  on_mismatch=p.on_mismatch, phone_set=p.phone_set)
log.info("split %s: %d utterances, %d frames", snakemake.wildcards.split, table["utterance"].nunique(), len(table))
write_label_table(table, snakemake.output.labels)
write_text_atomic(snakemake.output.report, json.dumps(report, indent=2, default=str))
