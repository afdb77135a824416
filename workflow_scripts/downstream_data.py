"""Rule downstream_data: the files one s3prl downstream task reads, built from the corpus and labels."""
from pathlib import Path

from speechdissect.downstream.tasks import prepare_task_data
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
datarc = prepare_task_data(
    snakemake.wildcards.task, snakemake.params.corpus_root, snakemake.output[0],
    phone_dir=str(Path(snakemake.input.phones).parent), labels_dir=str(Path(snakemake.input.labels[0]).parent),
    seed=snakemake.params.seed, **snakemake.params.options,
)
log.info("task %s data ready: %s", snakemake.wildcards.task, datarc)
