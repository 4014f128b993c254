"""Selective fine-tuning: ROSE (First, Second, Ensemble) and RoAST / Child-Tuning-D, over a masked AdamW."""

from .arguments import SELECTIVE_METHODS, SelectiveArguments, SelectiveSetup, build_selective
from .masked_adamw import MaskedAdamW
from .parameters import LayerParameter, UpdateRatioMeter, encoder_layer_parameters
from .recording import UpdateMaskRecorder
from .roast import FisherAccumulator, RoastAdamW, RoastCallback, RoastMasks, draw_masks, keep_probabilities
from .rose import (ROSE_KL_SCALE, ROSE_VARIANTS, RoseAdamW, RoseCallback, RoseFirstObjective, RoseMasks,
                   band_mask, second_order_scores)

__all__ = [
    "FisherAccumulator", "LayerParameter", "MaskedAdamW", "ROSE_KL_SCALE", "ROSE_VARIANTS", "RoastAdamW",
    "RoastCallback", "RoastMasks", "RoseAdamW", "RoseCallback", "RoseFirstObjective", "RoseMasks", "SELECTIVE_METHODS",
    "SelectiveArguments", "SelectiveSetup", "UpdateMaskRecorder", "UpdateRatioMeter", "band_mask",
    "build_selective", "draw_masks", "encoder_layer_parameters", "keep_probabilities", "second_order_scores",
]
