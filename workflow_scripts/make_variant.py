"""Rule make_variant: an upstream with heads, FFN neurons or layers removed, in its base checkpoint format."""
import json

from speechdissect.labels import write_text_atomic
from speechdissect.logs import setup_logging
from speechdissect.neurons.masks import mask_from_json
from speechdissect.upstreams.registry import checkpoint_entry, load_upstream, save_checkpoint
from speechdissect.variants import VariantError, load_checkpoint, make_variant, parameter_counts

log = setup_logging(snakemake.log[0])
variant = snakemake.wildcards.variant
base = load_checkpoint(snakemake.input.ckpt)
kind, _, name = variant.partition("-")
mask, applied = None, variant
if kind == "heads":
    mask = json.load(open(snakemake.input.mask))["mask"]
elif kind in ("ffn", "edit"):
    mask = mask_from_json(open(snakemake.input.mask).read())
elif kind == "convex":
    best = json.load(open(snakemake.input.best))["most_convex_layer"]
    if name not in best:
        raise VariantError(f"variant {variant}: {snakemake.input.best} has no most convex layer for {name!r} "
                           f"(has {sorted(best)}); convexity.properties must include it")
    # hidden state L* is the output of encoder layer L*: keep layers 0..L*-1 (at least one)
    applied = f"layers-{max(1, best[name])}"
    log.info("most convex %s layer: hidden state %d -> %s", name, best[name], applied)
out = make_variant(base, applied, mask=mask)
out.setdefault("speechdissect", {})
out["speechdissect"] = {**dict(out["speechdissect"]), "variant": variant, "applied": applied}
save_checkpoint(out, snakemake.output.ckpt)
entry = checkpoint_entry(snakemake.output.ckpt)
load_upstream(entry, snakemake.output.ckpt)  # the variant must load through s3prl before anything trains on it
counts = parameter_counts(out)
log.info("%s: %s parameters (%s effective; base %s)", variant, counts["stored"], counts["effective"], parameter_counts(base)["stored"])
ffn = out["speechdissect"].get("ffn_pruning")  # physically pruned FFN: widths, and zero-padded slots if layers differ
if ffn:
    log.info("%s: FFN width %d -> %d; %s", variant, ffn["d_ffn"], ffn["width"], ffn["note"])
write_text_atomic(snakemake.output.spec, json.dumps({
    "upstream": snakemake.wildcards.upstream, "variant": variant, "applied": applied, "entry": entry,
    "ckpt": snakemake.output.ckpt, "parameters": counts, "base_parameters": parameter_counts(base), "ffn_pruning": ffn}, indent=2))
