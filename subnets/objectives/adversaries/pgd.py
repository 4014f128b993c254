"""PGD (Madry et al., ICLR 2018) on the word embeddings (docs/methods.md, adversarial perturbers): the ascent of
`AscentArguments` (shared with FreeLB, `perturbers.py`), projected, and its own loss weight `--adv_weight`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ...errors import SubnetsError
from ...training import Objective
from ..context import AdversaryContext
from ..losses import LossFn, cross_entropy
from ..modules import gradient_sync, input_embeddings, token_mask
from ..perturbers import AscentArguments, PerturbationConfig, ascent_step, initial_delta, project, split_input_ids


@dataclass
class PGDArguments:
    config_group = "ObjectiveArguments"
    _argument_group_name = "adversary: pgd"  # its --help section

    adv_weight: float = field(default=1.0, metadata={"help": "PGD: loss L(clean) + w L(adv)."})


class PGD(Objective):
    """Projected gradient descent (Madry et al. 2018) on the word embeddings: loss = L(clean) + weight * L(adv).

    The K ascent steps only differentiate with respect to the perturbation; parameters get gradients from
    the clean pass and the final adversarial pass.
    """

    def __init__(self, cfg: PerturbationConfig, weight: float = 1.0, loss_fn: LossFn = cross_entropy) -> None:
        if cfg.max_norm == 0:
            raise SubnetsError("PGD needs a perturbation bound: set adv_max_norm > 0.")
        self.cfg = cfg
        self.weight = weight
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], loss_scale: float = 1.0) -> torch.Tensor:
        inputs, input_ids = split_input_ids(model, batch)
        with gradient_sync(model, enabled=False):
            clean = self.loss_fn(model(input_ids=input_ids, **inputs).logits, batch)
            (clean * loss_scale).backward()
        embeds = input_embeddings(model)(input_ids)
        mask = token_mask(inputs, embeds).float()
        delta = project(initial_delta(embeds, mask, self.cfg), self.cfg)
        for _ in range(self.cfg.steps):
            delta.requires_grad_()
            with gradient_sync(model, enabled=False):
                loss = self.loss_fn(model(inputs_embeds=embeds.detach() + delta, **inputs).logits, batch)
                (grad,) = torch.autograd.grad(loss, delta)
            delta = ascent_step(delta.detach(), grad, mask, self.cfg)
        adv = self.loss_fn(model(inputs_embeds=embeds + delta, **inputs).logits, batch)
        (adv * (self.weight * loss_scale)).backward()
        return clean.detach() + self.weight * adv.detach()


def build_pgd(context: AdversaryContext) -> Objective:
    options = context.options
    return PGD(options[AscentArguments].config(), options[PGDArguments].adv_weight, context.loss_fn)
