"""Rule hub_upstream: check an s3prl hub / *_local entry exists and record how to load it."""
import json
import os

from speechdissect.labels import write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.upstreams.registry import family_of, load_upstream

log = setup_logging(snakemake.log[0])
name = snakemake.wildcards.upstream
spec = snakemake.params.spec
entry = spec.get("name", name)
ckpt = spec.get("path")
if spec["source"] == "local" and not (ckpt and os.path.exists(ckpt)):
    raise FileNotFoundError(f"config key upstreams.{name}.path: checkpoint {ckpt!r} does not exist")
load_upstream(entry, ckpt)  # fails here, with the valid names, before any analysis job runs
write_text_atomic(snakemake.output.spec, json.dumps(
    {"upstream": name, "entry": entry, "ckpt": ckpt, "family": spec.get("family") or family_of(entry)}, indent=2))
