"""Property neurons of FFN layers (Lin et al., 2024, "Property Neurons in Self-Supervised Speech Transformers").

Pipeline, one function per step (each module's docstring states its conventions):

1. :func:`sample_middle_frames` -- one frame per phone segment (label table + pitch table);
2. :func:`activation_probabilities` -- per layer, streamed over the activation cache;
3. :func:`find_property_neurons` / :func:`layer_property_neurons` -- group and property neurons,
   :func:`summary_counts` and :func:`summary_overlaps` for the tables;
4. :func:`geometry_tables` -- MDS maps and silhouettes per layer (binary above-chance row vectors);
5. :func:`prune_mask` / :func:`remove_neurons_mask` and :func:`prune_model_ffn` /
   :func:`zero_model_ffn` -- pruning and editing masks applied to a torch model
   (:func:`random_removal_mask`: the random control of an edit);
6. :mod:`.editing` -- editing / pruning summaries of the downstream results.

``masks`` and ``geometry`` import torch / scikit-learn; they are loaded lazily so
the statistics can be computed without either.
"""

from __future__ import annotations

import importlib

from .probability import (
    ACTIVE_FRACTION,
    CONDITIONS,
    activation_counts,
    activation_probabilities,
    activation_probability,
    chance_level,
    condition_groups,
    from_long,
    layer_probabilities,
    n_active,
    to_long,
    topk_indices,
    topk_mask,
)
from .property import (
    GROUP_LABELS,
    PROPERTIES,
    SIGMA,
    PropertyNeurons,
    PropertySpec,
    find_property_neurons,
    group_scores,
    layer_property_neurons,
    masks_from_json,
    meaningful,
    neuron_table,
    overlap_table,
    property_masks,
    property_neurons,
    summary_counts,
    summary_overlaps,
    to_json,
    unique_neurons,
)
from .sampling import SKIP_PHONES, align_to_cache, phone_segments, sample_middle_frames

_LAZY = {
    "geometry": ("REPRESENTATIONS", "layer_geometry", "geometry_tables", "mds_embedding", "silhouette", "row_groups", "row_vectors"),
    "masks": (
        "Mask",
        "PRUNE_METHODS",
        "apply_ffn_mask",
        "zero_ffn_neurons",
        "ffn_layers",
        "ffn_dims",
        "model_neuron_norms",
        "neuron_norms",
        "n_pruned",
        "keep_all",
        "remove_neurons_mask",
        "random_removal_mask",
        "norm_prune_mask",
        "protected_norm_prune_mask",
        "random_prune_mask",
        "prune_mask",
        "mask_sparsity",
        "mask_to_json",
        "mask_from_json",
        "prune_model_ffn",
        "zero_model_ffn",
        "resize_ffn_to_state_dict",
    ),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIVE_FRACTION", "CONDITIONS", "GROUP_LABELS", "PROPERTIES", "SIGMA", "SKIP_PHONES",
    "PropertyNeurons", "PropertySpec",
    "activation_counts", "activation_probabilities", "activation_probability", "align_to_cache",
    "chance_level", "condition_groups", "find_property_neurons", "from_long", "group_scores",
    "layer_probabilities", "layer_property_neurons", "masks_from_json", "meaningful", "n_active",
    "neuron_table", "overlap_table", "phone_segments", "property_masks", "property_neurons",
    "sample_middle_frames", "summary_counts", "summary_overlaps", "to_json", "to_long",
    "topk_indices", "topk_mask", "unique_neurons",
    *_LAZY_NAMES,
]
