"""What the embedding-space perturbers share (docs/methods.md, adversarial perturbers): the ascent options and
steps of FreeLB and PGD (`adversaries/freelb.py`, `adversaries/pgd.py`; one-shot calibration reuses the steps).

Every perturber (`adversaries/`) keeps all model inputs of the batch (token_type_ids included, unlike the Robust
Tickets reference, which dropped them in the adversarial pass), calls the module it is given (so DDP wrappers,
masks and gates stay in the loop), and works under autocast: perturbations and their gradients are float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import torch
from torch import nn

from ..errors import SubnetsError
from ..registry import check_choice
from ..targets import model_family
from .modules import split_batch, unwrap

NORMS = ("l2", "linf")


@dataclass(frozen=True)
class PerturbationConfig:
    """Step size `lr` (eta), number of ascent steps, init magnitude, optional norm bound (0: none)."""

    steps: int = 1
    lr: float = 0.1
    init_mag: float = 0.0
    max_norm: float = 0.0
    norm: str = "l2"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SubnetsError(f"adv_steps must be at least 1, got {self.steps}.")
        if self.norm not in NORMS:
            raise SubnetsError(f"adv_norm must be one of {', '.join(NORMS)}, got '{self.norm}'.")
        if self.lr < 0 or self.init_mag < 0 or self.max_norm < 0:
            raise SubnetsError("adv_lr, adv_init_mag and adv_max_norm must be non-negative.")


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


def _per_example_norm(x: torch.Tensor) -> torch.Tensor:
    """l2 norm over all but the batch dimension, shaped [batch, 1, 1] for broadcasting."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def initial_delta(embeds: torch.Tensor, mask: torch.Tensor, cfg: PerturbationConfig) -> torch.Tensor:
    """FreeLB initialisation (Zhu et al. 2020, Alg. 1): l2: U(-1,1) * mask * init_mag / sqrt(len * hidden),
    with len the number of real tokens; linf: U(-init_mag, init_mag) * mask."""
    if cfg.init_mag == 0:
        return torch.zeros_like(embeds, dtype=torch.float32)
    delta = torch.empty(embeds.shape, dtype=torch.float32, device=embeds.device).uniform_(-1, 1) * mask
    if cfg.norm == "linf":
        return delta * cfg.init_mag
    dims = mask.sum(dim=(1, 2), keepdim=True) * embeds.shape[-1]
    return delta * (cfg.init_mag / dims.clamp_min(1).sqrt())


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, cfg: PerturbationConfig) -> torch.Tensor:
    """delta + eta * g / ||g|| per example (l2) or delta + eta * sign(g) (linf), then the optional projection."""
    if cfg.norm == "l2":
        delta = delta + cfg.lr * grad / _per_example_norm(grad).clamp_min(1e-12)
    else:
        delta = delta + cfg.lr * grad.sign()
    return project(delta * mask, cfg)


def project(delta: torch.Tensor, cfg: PerturbationConfig) -> torch.Tensor:
    """Project onto the l2 ball (per example) or l-inf box of radius max_norm; no-op when max_norm is 0."""
    if cfg.max_norm == 0:
        return delta
    if cfg.norm == "linf":
        return delta.clamp(-cfg.max_norm, cfg.max_norm)
    return delta * (cfg.max_norm / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def split_input_ids(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(the other model inputs, input_ids): FreeLB and PGD perturb the embeddings of `input_ids`."""
    family = model_family(unwrap(model))
    if family is not None and family.last_token_head:
        raise SubnetsError(f"{type(unwrap(model)).__name__} pools its last non-padding token, which it cannot find "
                           "from the inputs_embeds that FreeLB and PGD feed it; expected an encoder model for "
                           "--adversary freelb|pgd.")
    inputs, _ = split_batch(batch)
    if "input_ids" not in inputs:
        raise SubnetsError("Embedding perturbers need 'input_ids' in the batch (not precomputed inputs_embeds).")
    return inputs, inputs.pop("input_ids")
