"""FFN neuron masks for model editing and structured pruning, and their application to torch models.

A *mask* is ``dict[layer, bool array [d_ffn]]`` with ``True`` = keep. Masks are
made from neuron scores (the per-layer norm of each neuron's weights) or from
neuron sets (property neurons), then either applied by zeroing the pruned
neurons in place (:func:`zero_ffn_neurons`, same shapes: for editing) or by
physically removing them (:func:`apply_ffn_mask`, smaller ``Linear`` layers:
for pruning, so that a pruned checkpoint is truly smaller).

Conventions
-----------
* Sparsity is per layer: a layer of ``d_ffn`` neurons loses exactly
  ``round(s * d_ffn)`` (half up) neurons.
* Norm criterion (``criterion='group'``, ``p=1``, the default): the L1 norm of
  all the parameters removed together with neuron ``j``,
  ``score_j = ||fc1.weight[j, :]||_1 + |fc1.bias[j]| + ||fc2.weight[:, j]||_1``,
  as the pruning code of Lin et al. (2024) scores neurons. ``p=2`` gives the
  L2 magnitude of the structured group instead (torch-pruning's
  ``MagnitudeImportance``). Alternatives: ``'fc1'`` (row of ``fc1.weight``,
  the neuron's key), ``'fc2'`` (column of ``fc2.weight``, its value),
  ``'product'`` (their product). Lowest score is pruned first, the same
  number in every layer; ties go to the lower neuron index (stable sort).
* Protected pruning never prunes a protected neuron; the lowest-norm
  unprotected neurons are pruned until the sparsity is reached. If there are
  too few unprotected neurons it raises (``strict=True``) or prunes all of
  them and warns.
* Random pruning draws uniformly without replacement from
  ``numpy.random.default_rng(SeedSequence([seed, layer]))``: a layer's mask
  does not depend on which other layers are pruned.
* Zeroing sets the neuron's ``fc1`` row and bias and its ``fc2`` column to 0.
  Zeroing the ``fc2`` column is what makes the output equal to the physically
  pruned model for any activation function; the ``fc1`` part makes the edited
  neuron's cached activation ``act(0)`` (0 for GELU/ReLU).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
import torch
from torch import nn

Mask = dict[int, np.ndarray]
"""Layer -> boolean ``[d_ffn]`` keep mask (True = keep)."""

NORM_CRITERIA: tuple[str, ...] = ("group", "fc1", "fc2", "product")


# ----------------------------------------------------------------------------- sizes and scores


def n_pruned(d_ffn: int, sparsity: float) -> int:
    """Neurons a layer of ``d_ffn`` loses at ``sparsity``: ``round(s * d_ffn)``, half up."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return int(np.floor(sparsity * d_ffn + 0.5))


def neuron_norms(
    fc1_weight: torch.Tensor | np.ndarray,
    fc2_weight: torch.Tensor | np.ndarray,
    fc1_bias: torch.Tensor | np.ndarray | None = None,
    criterion: str = "group",
    p: float = 1.0,
) -> np.ndarray:
    """Per-neuron weight norm, the importance used by norm-based FFN pruning.

    Parameters
    ----------
    fc1_weight
        ``[d_ffn, d_model]`` (``fc1.weight``: row ``j`` is neuron ``j``'s key).
    fc2_weight
        ``[d_model, d_ffn]`` (``fc2.weight``: column ``j`` is its value).
    fc1_bias
        ``[d_ffn]``; part of the ``'group'`` norm when given.
    criterion
        ``'group'``, ``'fc1'``, ``'fc2'`` or ``'product'`` (module docstring).
    p
        Norm order (1: the authors' L1 score, see the module docstring).

    Returns
    -------
    numpy.ndarray
        ``[d_ffn]`` float64 scores (higher = more important).
    """

    def arr(t):
        return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)

    w1, w2 = arr(fc1_weight), arr(fc2_weight)
    if w1.shape[0] != w2.shape[1]:
        raise ValueError(f"fc1.weight {w1.shape} and fc2.weight {w2.shape} disagree on d_ffn (expected [d_ffn, d_model] and [d_model, d_ffn])")
    if criterion == "fc1":
        return np.linalg.norm(w1, ord=p, axis=1)
    if criterion == "fc2":
        return np.linalg.norm(w2, ord=p, axis=0)
    if criterion == "product":
        return np.linalg.norm(w1, ord=p, axis=1) * np.linalg.norm(w2, ord=p, axis=0)
    if criterion == "group":
        parts = [w1, w2.T]
        if fc1_bias is not None:
            parts.append(arr(fc1_bias)[:, None])
        return np.linalg.norm(np.concatenate(parts, axis=1), ord=p, axis=1)
    raise ValueError(f"unknown norm criterion {criterion!r}; choose from {NORM_CRITERIA}")


# ----------------------------------------------------------------------------- masks


def _check(layer: int, m: np.ndarray, d: int, what: str) -> np.ndarray:
    m = np.asarray(m)
    if m.dtype != bool or m.shape != (d,):
        raise ValueError(f"{what} of layer {layer} must be a boolean array of shape ({d},), got {m.dtype} {m.shape}")
    return m


def keep_all(d_ffn: Mapping[int, int]) -> Mask:
    """Mask that keeps every neuron (the unpruned model)."""
    return {layer: np.ones(int(d), dtype=bool) for layer, d in d_ffn.items()}


def remove_neurons_mask(neurons: Mapping[int, np.ndarray]) -> Mask:
    """Mask that removes a neuron set, e.g. the gender property neurons (gender erasure).

    Parameters
    ----------
    neurons
        Layer -> boolean mask of the neurons to remove (True = remove).
    """
    return {layer: ~np.asarray(m, dtype=bool) for layer, m in neurons.items()}


def norm_prune_mask(
    scores: Mapping[int, np.ndarray],
    sparsity: float,
    *,
    protect: Mapping[int, np.ndarray] | None = None,
    seed: int = 0,
    strict: bool = True,
) -> Mask:
    """Prune the lowest-score neurons of each layer until ``sparsity`` is reached.

    Parameters
    ----------
    scores
        Layer -> ``[d_ffn]`` importance (e.g. :func:`neuron_norms`).
    sparsity
        Fraction of each layer's neurons to prune.
    protect
        Layer -> boolean mask of neurons never pruned (None: none).
    seed
        Unused (uniform signature of :data:`PRUNE_METHODS`).
    strict
        Raise if a layer has too few unprotected neurons; otherwise prune them
        all and warn.
    """
    mask = {}
    for layer, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        d = s.shape[0]
        n = n_pruned(d, sparsity)
        prot = np.zeros(d, dtype=bool) if protect is None or layer not in protect else _check(layer, protect[layer], d, "protect mask")
        candidates = np.flatnonzero(~prot)
        if n > candidates.size:
            msg = f"layer {layer}: sparsity {sparsity} needs {n} of {d} neurons pruned but only {candidates.size} are unprotected"
            if strict:
                raise ValueError(msg + "; lower the sparsity, protect fewer neurons or pass strict=False")
            warnings.warn(msg + "; pruning all unprotected neurons", stacklevel=2)
            n = candidates.size
        order = candidates[np.argsort(s[candidates], kind="stable")]
        keep = np.ones(d, dtype=bool)
        keep[order[:n]] = False
        mask[layer] = keep
    return mask


def protected_norm_prune_mask(
    scores: Mapping[int, np.ndarray],
    sparsity: float,
    *,
    protect: Mapping[int, np.ndarray] | None = None,
    seed: int = 0,
    strict: bool = True,
) -> Mask:
    """Norm pruning that never prunes the protected (property) neurons; see :func:`norm_prune_mask`."""
    if protect is None:
        raise ValueError("protected_norm pruning needs protect= (layer -> mask of property neurons)")
    missing = [layer for layer in scores if layer not in protect]
    if missing:
        raise ValueError(f"no protect mask for layer(s) {missing}")
    return norm_prune_mask(scores, sparsity, protect=protect, strict=strict)


def random_prune_mask(
    scores: Mapping[int, np.ndarray | int],
    sparsity: float,
    *,
    protect: Mapping[int, np.ndarray] | None = None,
    seed: int = 0,
    strict: bool = True,
) -> Mask:
    """Prune uniformly random neurons (the control) at the same per-layer sparsity.

    Parameters
    ----------
    scores
        Layer -> scores (only their length is used) or layer -> ``d_ffn``.
    sparsity, protect, strict
        As in :func:`norm_prune_mask`.
    seed
        Base seed; layer ``l`` uses ``SeedSequence([seed, l])``.
    """
    mask = {}
    for layer, s in scores.items():
        d = int(s) if np.ndim(s) == 0 else len(s)
        n = n_pruned(d, sparsity)
        prot = np.zeros(d, dtype=bool) if protect is None or layer not in protect else _check(layer, protect[layer], d, "protect mask")
        candidates = np.flatnonzero(~prot)
        if n > candidates.size:
            msg = f"layer {layer}: sparsity {sparsity} needs {n} of {d} neurons pruned but only {candidates.size} are unprotected"
            if strict:
                raise ValueError(msg)
            warnings.warn(msg + "; pruning all unprotected neurons", stacklevel=2)
            n = candidates.size
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(layer)]))
        keep = np.ones(d, dtype=bool)
        keep[rng.choice(candidates, size=n, replace=False)] = False
        mask[layer] = keep
    return mask


def random_removal_mask(reference: Mapping[int, np.ndarray], seed: int = 0, draw: int = 0) -> Mask:
    """The control of an editing mask: remove as many uniformly random neurons per layer as ``reference`` removes.

    Parameters
    ----------
    reference
        Layer -> boolean keep mask of the edit (e.g. :func:`remove_neurons_mask`
        of the gender neurons); its per-layer removal counts are matched.
    seed, draw
        Layer ``l`` of draw ``k`` uses ``SeedSequence([seed, k, l])``: draws
        are independent, and reproducible.

    Returns
    -------
    Mask
        Neurons are drawn from the whole layer (property neurons included),
        without replacement.
    """
    out = {}
    for layer, keep in reference.items():
        keep = np.asarray(keep, dtype=bool)
        d, n = keep.size, int((~keep).sum())
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(draw), int(layer)]))
        mask = np.ones(d, dtype=bool)
        mask[rng.choice(d, size=n, replace=False)] = False
        out[layer] = mask
    return out


class PruneMethod(Protocol):
    def __call__(self, scores: Mapping[int, np.ndarray], sparsity: float, *, protect: Mapping[int, np.ndarray] | None = ..., seed: int = ..., strict: bool = ...) -> Mask: ...


PRUNE_METHODS: dict[str, PruneMethod] = {
    "norm": norm_prune_mask,
    "protected_norm": protected_norm_prune_mask,
    "random": random_prune_mask,
}
"""Pruning methods by name (the workflow's ``{method}`` wildcard); register new ones here."""


def prune_mask(
    method: str,
    scores: Mapping[int, np.ndarray],
    sparsity: float,
    protect: Mapping[int, np.ndarray] | None = None,
    seed: int = 0,
    strict: bool = True,
) -> Mask:
    """Make a pruning mask with the method named ``method`` (see :data:`PRUNE_METHODS`)."""
    try:
        fn: Callable = PRUNE_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown pruning method {method!r}; choose from {sorted(PRUNE_METHODS)}") from None
    return fn(scores, sparsity, protect=protect, seed=seed, strict=strict)


def mask_sparsity(mask: Mapping[int, np.ndarray]) -> dict[int, float]:
    """Layer -> achieved sparsity (share of pruned neurons)."""
    return {layer: float(1.0 - np.mean(m)) if len(m) else 0.0 for layer, m in mask.items()}


def mask_to_json(mask: Mapping[int, np.ndarray]) -> dict:
    """JSON-ready ``{layer: {"d_ffn": d, "pruned": [indices]}}`` (pruned lists are short and readable)."""
    return {str(layer): {"d_ffn": int(len(m)), "pruned": np.flatnonzero(~np.asarray(m)).tolist()} for layer, m in mask.items()}


def mask_from_json(data: Mapping | str) -> Mask:
    """Inverse of :func:`mask_to_json` (accepts the dict or its JSON text)."""
    if isinstance(data, str):
        data = json.loads(data)
    out = {}
    for layer, rec in data.items():
        keep = np.ones(int(rec["d_ffn"]), dtype=bool)
        keep[np.asarray(rec["pruned"], dtype=np.int64)] = False
        out[int(layer)] = keep
    return out


# ----------------------------------------------------------------------------- torch


def _keep_tensor(keep: np.ndarray | torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
    keep = torch.as_tensor(np.asarray(keep.cpu() if isinstance(keep, torch.Tensor) else keep), dtype=torch.bool)
    d = fc1.out_features
    if fc2.in_features != d:
        raise ValueError(f"fc1 has {d} outputs but fc2 {fc2.in_features} inputs: not a plain FFN (GLU FFNs need their own mask code)")
    if keep.shape != (d,):
        raise ValueError(f"keep mask has shape {tuple(keep.shape)}, expected ({d},)")
    return keep.to(fc1.weight.device)


def apply_ffn_mask(fc1: nn.Linear, fc2: nn.Linear, keep: np.ndarray | torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """Physically remove FFN neurons: new, smaller ``fc1``/``fc2`` with only the kept rows/columns.

    Why: structured pruning should shrink the checkpoint and the compute,
    not just zero weights.

    Parameters
    ----------
    fc1
        ``Linear(d_model, d_ffn)``.
    fc2
        ``Linear(d_ffn, d_model)``.
    keep
        ``[d_ffn]`` boolean, True = keep.

    Returns
    -------
    fc1, fc2
        New ``Linear(d_model, n_keep)`` and ``Linear(n_keep, d_model)`` on the
        same device, dtype and ``requires_grad`` as the originals.
    """
    k = _keep_tensor(keep, fc1, fc2)
    n = int(k.sum())
    w = fc1.weight
    new1 = nn.Linear(fc1.in_features, n, bias=fc1.bias is not None, device=w.device, dtype=w.dtype)
    new2 = nn.Linear(n, fc2.out_features, bias=fc2.bias is not None, device=fc2.weight.device, dtype=fc2.weight.dtype)
    with torch.no_grad():
        new1.weight.copy_(fc1.weight[k])
        if fc1.bias is not None:
            new1.bias.copy_(fc1.bias[k])
        new2.weight.copy_(fc2.weight[:, k.to(fc2.weight.device)])
        if fc2.bias is not None:
            new2.bias.copy_(fc2.bias)
    for new, old in ((new1, fc1), (new2, fc2)):
        for name, prm in new.named_parameters():
            prm.requires_grad_(getattr(old, name).requires_grad)
    return new1, new2


def zero_ffn_neurons(fc1: nn.Linear, fc2: nn.Linear, keep: np.ndarray | torch.Tensor) -> None:
    """Zero the removed neurons in place (``fc1`` rows and bias, ``fc2`` columns); shapes unchanged.

    Why: model editing (e.g. erasing the gender neurons) keeps the
    architecture, so the edited model loads like the original.
    """
    k = _keep_tensor(keep, fc1, fc2)
    drop = ~k
    with torch.no_grad():
        fc1.weight[drop] = 0
        if fc1.bias is not None:
            fc1.bias[drop] = 0
        fc2.weight[:, drop.to(fc2.weight.device)] = 0


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return module.get_submodule(dotted)
    except AttributeError:
        return None


def _set(module: nn.Module, dotted: str, new: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)


def ffn_layers(model: nn.Module, fc1_name: str = "fc1", fc2_name: str = "fc2") -> dict[int, nn.Module]:
    """Transformer layers holding an FFN, numbered 0.. in module registration order.

    Why: fairseq-style encoders (HuBERT, wav2vec 2.0, WavLM in s3prl) name
    the FFN ``fc1``/``fc2``; others use dotted paths (s3prl Mockingjay:
    ``intermediate.dense`` / ``output.dense``), so the names are parameters.
    """
    out, i = {}, 0
    for _, m in model.named_modules():
        a, b = _get(m, fc1_name), _get(m, fc2_name)
        if isinstance(a, nn.Linear) and isinstance(b, nn.Linear):
            out[i] = m
            i += 1
    return out


def model_neuron_norms(model: nn.Module, criterion: str = "group", p: float = 1.0, fc1_name: str = "fc1", fc2_name: str = "fc2") -> dict[int, np.ndarray]:
    """Layer -> :func:`neuron_norms` of every FFN of ``model``."""
    out = {}
    for layer, m in ffn_layers(model, fc1_name, fc2_name).items():
        fc1, fc2 = m.get_submodule(fc1_name), m.get_submodule(fc2_name)
        out[layer] = neuron_norms(fc1.weight, fc2.weight, fc1.bias, criterion=criterion, p=p)
    return out


def ffn_dims(model: nn.Module, fc1_name: str = "fc1", fc2_name: str = "fc2") -> dict[int, int]:
    """Layer -> current FFN width (differs per layer after pruning)."""
    return {layer: m.get_submodule(fc1_name).out_features for layer, m in ffn_layers(model, fc1_name, fc2_name).items()}


def _check_layers(mask: Mapping[int, np.ndarray], layers: Mapping[int, nn.Module]) -> None:
    extra = sorted(set(mask) - set(layers))
    if extra:
        raise ValueError(f"mask names layer(s) {extra} but the model has FFN layers {sorted(layers)}")


def prune_model_ffn(model: nn.Module, mask: Mapping[int, np.ndarray], fc1_name: str = "fc1", fc2_name: str = "fc2") -> nn.Module:
    """Physically prune every masked FFN of ``model`` in place (layers absent from ``mask`` are untouched).

    Note: the model config's single FFN width no longer describes the
    model; rebuild it before loading such a checkpoint with
    :func:`resize_ffn_to_state_dict`.
    """
    layers = ffn_layers(model, fc1_name, fc2_name)
    _check_layers(mask, layers)
    for layer, keep in mask.items():
        m = layers[layer]
        new1, new2 = apply_ffn_mask(m.get_submodule(fc1_name), m.get_submodule(fc2_name), keep)
        _set(m, fc1_name, new1)
        _set(m, fc2_name, new2)
    return model


def zero_model_ffn(model: nn.Module, mask: Mapping[int, np.ndarray], fc1_name: str = "fc1", fc2_name: str = "fc2") -> nn.Module:
    """Zero the masked-out FFN neurons of ``model`` in place (model editing)."""
    layers = ffn_layers(model, fc1_name, fc2_name)
    _check_layers(mask, layers)
    for layer, keep in mask.items():
        m = layers[layer]
        zero_ffn_neurons(m.get_submodule(fc1_name), m.get_submodule(fc2_name), keep)
    return model


def resize_ffn_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], fc1_name: str = "fc1", fc2_name: str = "fc2") -> nn.Module:
    """Replace FFN ``Linear`` layers by ones shaped like a (pruned) state dict, so it can be loaded.

    Why: a pruned checkpoint has a different FFN width per layer, which the
    upstream's config cannot express; build the model from its config, call
    this, then ``model.load_state_dict(state_dict)``.
    """
    names = {id(m): n for n, m in model.named_modules()}
    for m in ffn_layers(model, fc1_name, fc2_name).values():
        prefix = names[id(m)]
        key = f"{prefix}.{fc1_name}.weight" if prefix else f"{fc1_name}.weight"
        if key not in state_dict:
            continue
        width = state_dict[key].shape[0]
        fc1, fc2 = m.get_submodule(fc1_name), m.get_submodule(fc2_name)
        if width != fc1.out_features:
            keep = np.zeros(fc1.out_features, dtype=bool)
            keep[: min(width, fc1.out_features)] = True
            if width > fc1.out_features:
                raise ValueError(f"{key}: state dict has {width} neurons, more than the model's {fc1.out_features}")
            new1, new2 = apply_ffn_mask(fc1, fc2, keep)
            _set(m, fc1_name, new1)
            _set(m, fc2_name, new2)
    return model
