"""Rule ingest_alignments: forced alignments -> one frame-label table per split."""
import json

from speechdissect.alignments import load_alignments
from speechdissect.labels import build_label_table, write_label_table, write_text_atomic, read_transcripts
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
corpus_root = snakemake.input.corpus
split_dir = snakemake.params.split_dir
utterances = read_transcripts(f"{corpus_root}/{split_dir}")
alignments = load_alignments(snakemake.params.alignments, utterances=list(utterances))
table, report = build_label_table(corpus_root, split_dir, alignments, on_missing=snakemake.params.on_missing)
log.info("split %s: %d utterances, %d frames", snakemake.wildcards.split, table["utterance"].nunique(), len(table))
write_label_table(table, snakemake.output.labels)
write_text_atomic(snakemake.output.report, json.dumps(report, indent=2, default=str))
