"""Rule download_librispeech: resumable, checksum-verified download, atomic unpack, then the stamp.

The rule's output is the stamp (resources/corpora/{corpus}/.download.json), never the corpus
directory, so Snakemake has nothing to delete before a rerun: subsets already unpacked are kept.
"""
import shutil
from pathlib import Path

from speechdissect.download import DEFAULT_MIRROR, download_librispeech, write_download_stamp
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
root = Path(snakemake.output.stamp).parent
p = snakemake.params
mirror = p.mirror or DEFAULT_MIRROR
existed = root.exists()
try:
    paths = download_librispeech(p.subsets, root, mirror_url=mirror, checksums=p.checksums)
except BaseException:
    # a refused archive leaves nothing: no empty archive directory, no empty corpus directory
    archives = root / ".archives"
    if archives.is_dir() and not any(archives.iterdir()):
        archives.rmdir()
    if not existed and root.is_dir() and not any(root.iterdir()):
        shutil.rmtree(root)
    raise
write_download_stamp(root, p.subsets, mirror, p.checksums)
log.info("LibriSpeech subsets ready: %s", {k: str(v) for k, v in paths.items()})
