"""The adversaries of `--adversary`: name -> option groups + builder (`build(AdversaryContext) -> Objective`).
Adding one: a new file in this folder (its option group, objective and builder) plus one line below
(docs/objectives.md)."""

from __future__ import annotations

from typing import Callable

from ...registry import Method
from ...training import Objective
from ..context import AdversaryContext
from ..losses import LossObjective
from ..perturbers import AscentArguments
from .freelb import build_freelb
from .pgd import PGDArguments, build_pgd
from .roast import RoASTAdversaryArguments, build_roast

AdversaryBuilder = Callable[[AdversaryContext], Objective]

ADVERSARIES: dict[str, Method[AdversaryBuilder]] = {
    "none": Method(lambda context: LossObjective(context.loss_fn)),
    "freelb": Method(build_freelb, (AscentArguments,)),
    "pgd": Method(build_pgd, (AscentArguments, PGDArguments)),
    "roast": Method(build_roast, (RoASTAdversaryArguments,)),
}
