"""The mask store shared by every stage, sparse-aware checkpoints and the mask inspection CLI (`subnets-masks`)."""

from subnets.weights import apply_masks, check_shapes

from .record import KINDS, MaskRecord, describe_model, model_fingerprint
from .store import MaskStore
from .update_log import UpdateLog

__all__ = [
    "KINDS",
    "MaskRecord",
    "MaskStore",
    "UpdateLog",
    "apply_masks",
    "check_shapes",
    "describe_model",
    "model_fingerprint",
]
