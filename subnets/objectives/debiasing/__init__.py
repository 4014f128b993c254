"""The debiasing losses of `--debias`: name -> option groups + builder (`build(DebiasContext) -> LossFn`). Adding
one: a new file in this folder (its option group, loss and builder) plus one line below (docs/objectives.md)."""

from __future__ import annotations

from typing import Callable

from ...registry import Method
from ..context import DebiasContext
from ..losses import LossFn, cross_entropy
from ..predictions import BiasPredictionArguments
from .conf_reg import TeacherPredictionArguments, build_conf_reg
from .poe import build_poe
from .reweight import build_reweight

DebiasBuilder = Callable[[DebiasContext], LossFn]

DEBIAS_LOSSES: dict[str, Method[DebiasBuilder]] = {
    "none": Method(lambda context: cross_entropy),
    "poe": Method(build_poe, (BiasPredictionArguments,)),
    "reweight": Method(build_reweight, (BiasPredictionArguments,)),
    "conf_reg": Method(build_conf_reg, (BiasPredictionArguments, TeacherPredictionArguments)),
}
