"""Rule corpus_manifest: size and mtime of every audio file, transcript and speaker table of a split."""
from speechdissect.logs import setup_logging
from speechdissect.manifest import write_manifest

log = setup_logging(snakemake.log[0])
n = write_manifest(snakemake.input.files, snakemake.params.corpus_root, snakemake.output.manifest)
log.info("%s: %d files", snakemake.output.manifest, n)
