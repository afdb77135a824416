"""Rule s3prl_phone_files: the files s3prl's phone_linear / phone_1hidden downstreams read."""
from pathlib import Path

from speechdissect.labels import write_s3prl_phone_files
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
tables = dict(zip(snakemake.params.splits, snakemake.input.labels))
info = write_s3prl_phone_files(tables, Path(snakemake.output.phones).parent, snakemake.params.corpus_root,
                              split_dirs=snakemake.params.split_dirs)
log.info("wrote s3prl phone files: %s", info)
