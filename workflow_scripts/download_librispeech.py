"""Rule download_librispeech: resumable, checksum-verified download, atomic unpack."""
from speechdissect.download import DEFAULT_MIRROR, download_librispeech
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
subsets = spec["subsets"]
missing = sorted(set(spec["split_map"].values()) - set(subsets))
if missing:
    raise ValueError(f"config key corpora.{snakemake.wildcards.corpus}.split_map names subsets {missing} "
                     f"that are not in its subsets list {subsets}; add them to subsets")
paths = download_librispeech(subsets, snakemake.output[0], mirror_url=spec.get("mirror", DEFAULT_MIRROR))
log.info("LibriSpeech subsets ready: %s", {k: str(v) for k, v in paths.items()})
