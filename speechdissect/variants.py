"""Variants of an upstream: the same checkpoint with heads, FFN neurons or layers removed.

Every variant is written in the checkpoint format of its base (``hubert_local``
for the HuBERT family), so the s3prl entry that loads the original loads the
variant, and every downstream evaluation treats them alike.

- ``original``            the base checkpoint unchanged;
- ``layers-{n}``          keep encoder layers ``0..n-1`` (a truly smaller model);
- ``heads-{name}``        zero the output projection of masked heads: a removed
                          head then contributes exactly nothing to its layer;
- ``ffn-{name}``          FFN pruning, physically smaller: the kept fc1 rows / bias
                          and fc2 columns are sliced out and ``encoder_ffn_embed_dim``
                          is set to the kept width. The config has one width for all
                          layers, so when layers keep different counts (protected
                          pruning that ran out of candidates) every layer is sliced to
                          the largest kept count and the surplus slots of the other
                          layers are pruned neurons with zeroed weights (recorded in
                          the checkpoint's ``speechdissect.ffn_pruning``);
- ``edit-{name}``         model editing: zero masked FFN neurons (fc1 row and bias, fc2
                          column), same shapes; the output equals physically removing
                          them (see ``speechdissect.neurons.masks``).

``{name}`` refers to a mask file (heads: ``[layers][heads]`` 0/1; FFN: the JSON of
``speechdissect.neurons.masks.mask_to_json``). Parameter counts of a variant are
reported both as stored and as *effective* (zeroed structures not counted).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch

VARIANT_PATTERN = re.compile(r"^(original|layers-(?P<layers>\d+)|(?P<kind>heads|ffn|edit)-(?P<name>[A-Za-z0-9_.-]+))$")
LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")


class VariantError(ValueError):
    """A variant name or mask that cannot be applied to a checkpoint."""


def parse_variant(variant: str) -> tuple[str, str | int | None]:
    """``original`` → ('original', None); ``layers-3`` → ('layers', 3); ``heads-globalness_0.5`` → ('heads', 'globalness_0.5')."""
    m = VARIANT_PATTERN.match(variant)
    if not m:
        raise VariantError(f"unknown variant {variant!r}: expected original, layers-N, heads-NAME, ffn-NAME or edit-NAME")
    if variant == "original":
        return "original", None
    if m.group("layers"):
        return "layers", int(m.group("layers"))
    return m.group("kind"), m.group("name")


def _require_fairseq(ckpt: Mapping) -> dict:
    if not {"model_cfg", "model_weight"} <= set(ckpt):
        raise VariantError("variants are implemented for hubert_local / wav2vec2_local checkpoints "
                           "(dict with model_cfg and model_weight); this checkpoint has keys "
                           f"{sorted(ckpt)[:8]}")
    return ckpt["model_cfg"]


def n_layers(ckpt: Mapping) -> int:
    """Encoder layers of a fairseq-style checkpoint."""
    return int(_require_fairseq(ckpt)["encoder_layers"])


def truncate_layers(ckpt: Mapping, keep: int) -> dict:
    """Keep encoder layers ``0..keep-1``; later layers' weights are dropped from the checkpoint."""
    total = n_layers(ckpt)
    if not 1 <= keep <= total:
        raise VariantError(f"layers-{keep}: the model has {total} layers; keep between 1 and {total}")
    out = copy.copy(dict(ckpt))
    out["model_cfg"] = {**ckpt["model_cfg"], "encoder_layers": keep}
    weights = {}
    for key, value in ckpt["model_weight"].items():
        m = LAYER_KEY.match(key)
        if m and int(m.group(1)) >= keep:
            continue
        weights[key] = value
    out["model_weight"] = weights
    return out


def mask_heads(ckpt: Mapping, head_mask: Sequence[Sequence[int]]) -> dict:
    """Zero the out_proj input columns of every head whose mask entry is 0."""
    cfg = _require_fairseq(ckpt)
    mask = np.asarray(head_mask, dtype=int)
    n_heads = int(cfg["encoder_attention_heads"])
    if mask.shape != (int(cfg["encoder_layers"]), n_heads):
        raise VariantError(f"head mask of shape {mask.shape} does not fit a model with "
                           f"{cfg['encoder_layers']} layers × {n_heads} heads")
    out = copy.copy(dict(ckpt))
    weights = dict(ckpt["model_weight"])
    for layer, row in enumerate(mask):
        key = f"encoder.layers.{layer}.self_attn.out_proj.weight"
        w = weights[key].clone()
        head_dim = w.shape[1] // n_heads
        for head in np.flatnonzero(row == 0):
            w[:, head * head_dim:(head + 1) * head_dim] = 0
        weights[key] = w
    out["model_weight"] = weights
    return out


def mask_ffn(ckpt: Mapping, keep: Mapping[int, Sequence[bool]]) -> dict:
    """Zero FFN neurons where ``keep[layer]`` is False (fc1 row + bias, fc2 column)."""
    cfg = _require_fairseq(ckpt)
    out = copy.copy(dict(ckpt))
    weights = dict(ckpt["model_weight"])
    for layer, mask in keep.items():
        layer = int(layer)
        if not 0 <= layer < int(cfg["encoder_layers"]):
            raise VariantError(f"FFN mask names layer {layer}; the model has {cfg['encoder_layers']} layers")
        drop = torch.from_numpy(~np.asarray(mask, dtype=bool))
        prefix = f"encoder.layers.{layer}."
        fc1_w, fc1_b, fc2_w = (weights[prefix + k].clone() for k in ("fc1.weight", "fc1.bias", "fc2.weight"))
        if drop.numel() != fc1_w.shape[0]:
            raise VariantError(f"FFN mask of layer {layer} has {drop.numel()} entries; the layer has {fc1_w.shape[0]} neurons")
        fc1_w[drop] = 0
        fc1_b[drop] = 0
        fc2_w[:, drop] = 0
        weights[prefix + "fc1.weight"], weights[prefix + "fc1.bias"], weights[prefix + "fc2.weight"] = fc1_w, fc1_b, fc2_w
    out["model_weight"] = weights
    return out


def _full_masks(keep: Mapping[int, Sequence[bool]], n_layers_: int, d_ffn: int) -> dict[int, np.ndarray]:
    masks = {layer: np.ones(d_ffn, dtype=bool) for layer in range(n_layers_)}
    for layer, mask in keep.items():
        layer = int(layer)
        if not 0 <= layer < n_layers_:
            raise VariantError(f"FFN mask names layer {layer}; the model has {n_layers_} layers")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (d_ffn,):
            raise VariantError(f"FFN mask of layer {layer} has {mask.size} entries; the layer has {d_ffn} neurons")
        masks[layer] = mask
    return masks


def prune_ffn(ckpt: Mapping, keep: Mapping[int, Sequence[bool]]) -> dict:
    """Physically remove FFN neurons where ``keep[layer]`` is False: sliced fc1/fc2, smaller ``encoder_ffn_embed_dim``.

    Parameters
    ----------
    ckpt
        A ``hubert_local`` / ``wav2vec2_local`` checkpoint (one FFN width for every layer).
    keep
        Layer -> boolean ``[d_ffn]`` keep mask (True = keep); layers absent keep every neuron.

    Returns
    -------
    dict
        The checkpoint with FFN width ``max_l sum(keep[l])``. Layers that keep fewer
        neurons than that are padded with their lowest-index pruned neurons, whose
        fc1 row, fc1 bias and fc2 column are zeroed, so every layer computes exactly
        what the zero-masked model computes. ``ckpt["speechdissect"]["ffn_pruning"]``
        records the original width, the new width, and per layer the kept and
        zero-padded counts.
    """
    cfg = _require_fairseq(ckpt)
    total, d_ffn = int(cfg["encoder_layers"]), int(cfg["encoder_ffn_embed_dim"])
    masks = _full_masks(keep, total, d_ffn)
    width = max(int(m.sum()) for m in masks.values())
    if width == 0:
        raise VariantError("the FFN mask removes every neuron of every layer; keep at least one")
    out = copy.copy(dict(ckpt))
    weights = dict(ckpt["model_weight"])
    kept, padded = {}, {}
    for layer, mask in masks.items():
        prefix = f"encoder.layers.{layer}."
        n_keep = int(mask.sum())
        pad = np.flatnonzero(~mask)[: width - n_keep]  # surplus slots: pruned neurons, zeroed below
        slots = np.sort(np.concatenate([np.flatnonzero(mask), pad]))
        idx = torch.from_numpy(slots)
        zero = torch.from_numpy(np.isin(slots, pad))
        fc1_w = weights[prefix + "fc1.weight"][idx].clone()
        fc1_b = weights[prefix + "fc1.bias"][idx].clone()
        fc2_w = weights[prefix + "fc2.weight"][:, idx].clone()
        if fc1_w.shape[0] != width or weights[prefix + "fc1.weight"].shape[0] != d_ffn:
            raise VariantError(f"layer {layer}: fc1 has {weights[prefix + 'fc1.weight'].shape[0]} neurons, "
                               f"model_cfg encoder_ffn_embed_dim says {d_ffn}")
        fc1_w[zero] = 0
        fc1_b[zero] = 0
        fc2_w[:, zero] = 0
        weights[prefix + "fc1.weight"], weights[prefix + "fc1.bias"], weights[prefix + "fc2.weight"] = fc1_w, fc1_b, fc2_w
        kept[str(layer)], padded[str(layer)] = n_keep, int(pad.size)
    out["model_cfg"] = {**cfg, "encoder_ffn_embed_dim": width}
    out["model_weight"] = weights
    note = ("every layer sliced to the same width" if not any(padded.values()) else
            f"layers keep different counts: sliced to the largest ({width}); the surplus slots of the other layers "
            "hold pruned neurons with zeroed weights")
    out["speechdissect"] = {**dict(ckpt.get("speechdissect", {})), "ffn_pruning": {
        "d_ffn": d_ffn, "width": width, "kept": kept, "zero_padded": padded, "note": note}}
    return out


def parameter_counts(ckpt: Mapping) -> dict[str, int]:
    """Stored parameters and effective ones (entries of all-zero heads' columns and neurons not counted)."""
    weights = ckpt["model_weight"]
    stored = int(sum(v.numel() for v in weights.values() if torch.is_tensor(v) and v.is_floating_point()))
    zeroed = 0
    cfg = ckpt.get("model_cfg", {})
    n_heads = int(cfg.get("encoder_attention_heads", 1))
    for key, w in weights.items():
        if key.endswith("self_attn.out_proj.weight"):
            head_dim = w.shape[1] // n_heads
            dead = (w.reshape(w.shape[0], n_heads, head_dim) == 0).all(dim=(0, 2))
            # a dead head's q/k/v rows and out_proj columns do nothing: 4 × d_model × head_dim (+ 3 biases)
            zeroed += int(dead.sum()) * (4 * w.shape[0] * head_dim + 3 * head_dim)
        elif key.endswith("fc1.weight"):
            prefix = key[: -len("fc1.weight")]
            dead = (w == 0).all(dim=1) & (weights[prefix + "fc2.weight"] == 0).all(dim=0)
            zeroed += int(dead.sum()) * (2 * w.shape[1] + 1)
    return {"stored": stored, "effective": stored - zeroed}


def make_variant(ckpt: Mapping, variant: str, mask=None) -> dict:
    """Apply ``variant`` (see module docstring) to a loaded checkpoint; ``mask`` for heads/ffn/edit.

    ``ffn-*`` slices the FFN matrices (:func:`prune_ffn`), ``edit-*`` zeroes neurons (:func:`mask_ffn`).
    """
    kind, arg = parse_variant(variant)
    if kind == "original":
        return dict(ckpt)
    if kind == "layers":
        return truncate_layers(ckpt, int(arg))
    if mask is None:
        raise VariantError(f"variant {variant!r} needs a mask file")
    if kind == "heads":
        return mask_heads(ckpt, mask)
    if kind == "ffn":
        return prune_ffn(ckpt, mask)
    return mask_ffn(ckpt, mask)


def load_checkpoint(path) -> dict:
    """A checkpoint written by speech-dissect (plain tensors and dicts: safe with ``weights_only=True``)."""
    from speechdissect.upstreams.registry import load_checkpoint as _load

    return _load(path)
