"""Rule synthesize_corpus: the embedded Festival corpus in LibriSpeech layout (no network)."""
import os

from speechdissect.corpus.synthesize import synthesize_corpus
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
spec = dict(snakemake.params.spec)
spec.pop("source")
info = synthesize_corpus(
    os.path.abspath(snakemake.output[0]),  # festival runs in its own working dir
    n_speakers=spec.get("n_speakers", 12),
    utterances_per_speaker=spec.get("utterances_per_speaker", 40),
    words_per_sentence=tuple(spec.get("words_per_sentence", (4, 8))),
    seed=snakemake.params.seed,
    splits=spec.get("split_fractions", {"train": 0.7, "dev": 0.15, "test": 0.15}),
    n_heldout=spec.get("heldout_speakers", 2),
    jobs=min(spec.get("jobs", snakemake.threads), snakemake.threads),
)
log.info("synthetic corpus: %s", info)
