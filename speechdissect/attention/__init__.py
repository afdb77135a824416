"""Attention-head study of Yang, Liu & Lee (Interspeech 2020), in pure numpy.

* :mod:`.metrics` — globalness, verticality, diagonality, max weight per head;
  streaming :class:`HeadMetrics` and the global / vertical / diagonal category.
* :mod:`.segmentation` — kernel-Gram phoneme segmentation (Bhati et al., 2018)
  from attention rows or MFCCs, R-value scoring and (alpha, beta) tuning.
* :mod:`.relations` — phone relation maps ``P`` and concentration ``C``.
* :mod:`.ranking` — head removal orders and cumulative head masks for pruning.
* :mod:`.pruning` — head-pruning curves (downstream score vs removed fraction)
  and the largest fraction reached within a loss budget.
"""

from .metrics import (
    CATEGORIES,
    METRICS,
    HeadMetrics,
    categorize,
    diagonality,
    globalness,
    map_metrics,
    max_weight,
    row_entropy,
    verticality,
)
from .pruning import head_variant, max_fraction_within, parse_head_variant, pruning_curves
from .ranking import DEFAULT_REMOVE_FIRST, RANKINGS, head_mask, head_masks, n_removed, rank_heads
from .relations import CMU39, PhoneRelations, one_hot, relation_sums
from .segmentation import (
    SegItem,
    SegmentationScore,
    alpha_grid,
    anti_diagonal_score,
    boundary_times,
    detect_boundaries,
    filter_gram,
    gram_matrix,
    grid_scores,
    local_minima,
    match_boundaries,
    mfcc_features,
    pairwise_distances,
    reference_boundaries,
    score,
    segmentation_summary,
    tune,
)

__all__ = [
    "CATEGORIES",
    "METRICS",
    "HeadMetrics",
    "categorize",
    "diagonality",
    "globalness",
    "map_metrics",
    "max_weight",
    "row_entropy",
    "verticality",
    "DEFAULT_REMOVE_FIRST",
    "RANKINGS",
    "head_mask",
    "head_masks",
    "n_removed",
    "rank_heads",
    "head_variant",
    "max_fraction_within",
    "parse_head_variant",
    "pruning_curves",
    "CMU39",
    "PhoneRelations",
    "one_hot",
    "relation_sums",
    "SegItem",
    "SegmentationScore",
    "alpha_grid",
    "anti_diagonal_score",
    "boundary_times",
    "detect_boundaries",
    "filter_gram",
    "gram_matrix",
    "grid_scores",
    "local_minima",
    "match_boundaries",
    "mfcc_features",
    "pairwise_distances",
    "reference_boundaries",
    "score",
    "segmentation_summary",
    "tune",
]
