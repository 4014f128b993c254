"""Mask families for finding subnetworks: hard-concrete L0 gates, straight-through scores, iterative magnitude
pruning, random and magnitude baselines, Wanda and SparseGPT (one file each in `methods/`); drawing exact-sparsity
tickets; fixed-mask retraining.

A mask is `dict[str, torch.Tensor]` keyed by parameter name: bool for binary masks, float for mask states.
"""

from .base import MaskParametrization, attach, attached_masks, binary_mask, detach, mask_states, target_weights
from .draw import SCOPES, draw_mask, pruned_count
from .fixed import FixedMask
from .layout import GRANULARITIES, Layout, layout_for
from .methods.hard_concrete import (
    HardConcreteGate,
    attach_hard_concrete,
    deterministic_gate,
    expected_density,
    expected_l0,
    mean_expected_l0,
    sample_gate,
    sample_masked_weight,
)
from .methods.imp import imp_prune, imp_sparsity, rewind, snapshot
from .methods.magnitude import magnitude_mask, magnitude_structured_masks
from .methods.random import random_mask
from .methods.scores import ScoreMask, attach_scores, cubic_sparsity, reset_thresholds

__all__ = [
    "GRANULARITIES", "SCOPES", "FixedMask", "HardConcreteGate", "Layout", "MaskParametrization", "ScoreMask",
    "attach", "attach_hard_concrete", "attach_scores", "attached_masks", "binary_mask",
    "cubic_sparsity", "detach", "deterministic_gate", "draw_mask", "expected_density", "expected_l0",
    "imp_prune", "imp_sparsity", "layout_for", "magnitude_mask", "magnitude_structured_masks", "mask_states",
    "mean_expected_l0", "pruned_count", "random_mask", "reset_thresholds", "rewind", "sample_gate",
    "sample_masked_weight", "snapshot", "target_weights",
]
