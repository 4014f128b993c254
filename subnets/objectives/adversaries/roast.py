"""RoAST's adversarial term (Kim et al., Findings of EMNLP 2023, Sec. 3.1; docs/methods.md, adversarial
perturbers): one normalised step on the embedding output, with its own options (`--roast_eps`,
`--roast_adv_weight`, `--adv_kl_weight`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ...errors import SubnetsError
from ...training import Objective
from ..context import AdversaryContext
from ..losses import LossFn, cross_entropy, symmetric_kl
from ..modules import embeddings_block, gradient_sync, split_batch
from ..perturbers import AscentArguments
from .pgd import PGDArguments


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


class RoASTPerturbation(Objective):
    """RoAST's adversarial term (Kim et al., Findings of EMNLP 2023, Sec. 3.1): one step on the embedding
    output (after LayerNorm), gradient normalised per token by its max-abs value, radius eps.

    loss = (1 - adv_weight) * L(clean) + adv_weight * L(adv) + kl_weight * symKL(clean, adv) summed over the batch.
    """

    def __init__(self, eps: float = 0.1, adv_weight: float = 0.5, kl_weight: float = 0.01,
                 loss_fn: LossFn = cross_entropy) -> None:
        if eps <= 0:
            raise SubnetsError(f"RoAST needs a positive perturbation size (--roast_eps), got {eps}.")
        self.eps = eps
        self.adv_weight = adv_weight
        self.kl_weight = kl_weight
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], loss_scale: float = 1.0) -> torch.Tensor:
        inputs, _ = split_batch(batch)
        block = embeddings_block(model)
        probes: list[torch.Tensor] = []

        def add_probe(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            # A zero leaf added to the output: its gradient is the output's gradient, even when every weight
            # below it is frozen (mask search) and the output itself does not require grad.
            if not isinstance(output, torch.Tensor):
                raise SubnetsError(f"{type(module).__name__} returned {type(output).__name__}; RoAST expects a tensor.")
            probes.append(torch.zeros_like(output, requires_grad=True))
            return output + probes[-1]

        handle = block.register_forward_hook(add_probe)
        try:
            with gradient_sync(model, enabled=False):
                clean_logits = model(**inputs).logits
        finally:
            handle.remove()
        clean = self.loss_fn(clean_logits, batch)
        (grad,) = torch.autograd.grad(clean, probes[0], retain_graph=True)
        grad = grad.float()
        delta = self.eps * grad / grad.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)

        handle = block.register_forward_hook(lambda module, args, output: output + delta.to(output.dtype))
        try:
            adv_logits = model(**inputs).logits
        finally:
            handle.remove()
        adv = self.loss_fn(adv_logits, batch)
        consistency = symmetric_kl(clean_logits, adv_logits)
        loss = (1 - self.adv_weight) * clean + self.adv_weight * adv + self.kl_weight * consistency
        (loss * loss_scale).backward()
        return loss.detach()


def build_roast(context: AdversaryContext) -> Objective:
    # --adv_lr and --adv_weight meant RoAST's eps and weight before they had their own options: refuse them
    # rather than ignore them silently.
    options = context.options
    ascent, pgd = options[AscentArguments], options[PGDArguments]
    if ascent.adv_lr != AscentArguments.adv_lr or pgd.adv_weight != PGDArguments.adv_weight:
        raise SubnetsError("--adversary roast takes its perturbation size from --roast_eps and its loss weight from "
                           "--roast_adv_weight; expected --adv_lr and --adv_weight (FreeLB/PGD options) left at "
                           "their defaults.")
    roast = options[RoASTAdversaryArguments]
    return RoASTPerturbation(roast.roast_eps, roast.roast_adv_weight, roast.adv_kl_weight, context.loss_fn)
