"""The built-in adversaries' option groups and builders (registered in `arguments.ADVERSARIES`).

Each adversary reads only its own options: FreeLB and PGD share the ascent options (`--adv_steps`, `--adv_lr`
= step size eta, `--adv_init_mag`, `--adv_max_norm`, `--adv_norm`), PGD adds `--adv_weight`, and RoAST's single
step has its own `--roast_eps`, `--roast_adv_weight` and `--adv_kl_weight` (docs/objectives.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import SubnetsError
from ..registry import OptionGroups, check_choice
from ..training import Objective
from .losses import LossFn
from .perturbers import NORMS, PGD, FreeLB, PerturbationConfig, RoASTPerturbation


@dataclass
class AscentArguments:
    """FreeLB and PGD: K ascent steps of size eta from a random start, optionally projected."""
    _argument_group_name = "adversary: freelb / pgd ascent"  # its --help section

    config_group = "ObjectiveArguments"

    adv_steps: int = field(default=2, metadata={"help": "FreeLB, PGD: ascent steps K."})
    adv_lr: float = field(default=0.1, metadata={"help": "FreeLB, PGD: ascent step size eta."})
    adv_init_mag: float = field(default=0.05, metadata={
        "help": "FreeLB, PGD: magnitude of the random initial perturbation (0: start from zero)."})
    adv_max_norm: float = field(default=0.0, metadata={
        "help": "FreeLB, PGD: bound on the perturbation's norm per example (0: unbounded, as in Robust Tickets; PGD "
                "needs > 0)."})
    adv_norm: Literal[NORMS] = field(default="l2", metadata={
        "help": "FreeLB, PGD: norm of steps and bound: l2 | linf."})

    def __post_init__(self) -> None:
        check_choice("adv_norm", self.adv_norm, NORMS)

    def config(self) -> PerturbationConfig:
        return PerturbationConfig(self.adv_steps, self.adv_lr, self.adv_init_mag, self.adv_max_norm, self.adv_norm)


@dataclass
class PGDArguments:
    config_group = "ObjectiveArguments"
    _argument_group_name = "adversary: pgd"  # its --help section

    adv_weight: float = field(default=1.0, metadata={"help": "PGD: loss L(clean) + w L(adv)."})


@dataclass
class RoASTAdversaryArguments:
    """RoAST's single step on the embedding output (Kim et al. 2023)."""
    _argument_group_name = "adversary: roast"  # its --help section

    config_group = "ObjectiveArguments"

    roast_eps: float = field(default=0.1, metadata={"help": "RoAST adversary: perturbation size eps."})
    roast_adv_weight: float = field(default=0.5, metadata={
        "help": "RoAST adversary: loss (1 - w) L(clean) + w L(adv) + kl_weight symKL."})
    adv_kl_weight: float = field(default=0.01, metadata={
        "help": "RoAST adversary: weight of the symmetric KL between clean and adversarial predictions."})


def build_freelb(options: OptionGroups, loss_fn: LossFn) -> Objective:
    return FreeLB(options[AscentArguments].config(), loss_fn)


def build_pgd(options: OptionGroups, loss_fn: LossFn) -> Objective:
    return PGD(options[AscentArguments].config(), options[PGDArguments].adv_weight, loss_fn)


def build_roast(options: OptionGroups, loss_fn: LossFn) -> Objective:
    # --adv_lr and --adv_weight meant RoAST's eps and weight before they had their own options: refuse them
    # rather than ignore them silently.
    ascent, pgd = options[AscentArguments], options[PGDArguments]
    if ascent.adv_lr != AscentArguments.adv_lr or pgd.adv_weight != PGDArguments.adv_weight:
        raise SubnetsError("--adversary roast takes its perturbation size from --roast_eps and its loss weight from "
                           "--roast_adv_weight; expected --adv_lr and --adv_weight (FreeLB/PGD options) left at "
                           "their defaults.")
    roast = options[RoASTAdversaryArguments]
    return RoASTPerturbation(roast.roast_eps, roast.roast_adv_weight, roast.adv_kl_weight, loss_fn)
