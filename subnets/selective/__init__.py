"""Selective fine-tuning: ROSE (First, Second, Ensemble) and RoAST / Child-Tuning-D, over a masked AdamW."""

from .arguments import SelectiveArguments, build_selective, selective_arguments
from .masked_adamw import MaskedAdamW
from .methods import SELECTIVE_METHODS
from .methods.roast import (FisherAccumulator, RoastAdamW, RoastArguments, RoastCallback, RoastMasks, draw_masks,
                            keep_probabilities)
from .methods.rose import (ROSE_KL_SCALE, ROSE_VARIANTS, RoseAdamW, RoseArguments, RoseCallback, RoseFirstObjective,
                           RoseMasks, band_mask, second_order_scores)
from .parameters import LayerParameter, UpdateRatioMeter, encoder_layer_parameters
from .recording import UpdateMaskRecorder
from .setup import SelectiveContext, SelectiveSetup

__all__ = [
    "FisherAccumulator", "LayerParameter", "MaskedAdamW", "ROSE_KL_SCALE", "ROSE_VARIANTS", "RoastAdamW",
    "RoastArguments", "RoastCallback", "RoastMasks", "RoseAdamW", "RoseArguments", "RoseCallback",
    "RoseFirstObjective", "RoseMasks", "SELECTIVE_METHODS", "SelectiveArguments", "SelectiveContext",
    "SelectiveSetup", "UpdateMaskRecorder", "UpdateRatioMeter", "band_mask", "build_selective", "draw_masks",
    "encoder_layer_parameters", "keep_probabilities", "second_order_scores", "selective_arguments",
]
