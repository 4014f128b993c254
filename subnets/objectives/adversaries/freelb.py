"""FreeLB (Zhu et al., ICLR 2020) as Robust Tickets uses it (docs/methods.md, adversarial perturbers): K ascent
steps on the word embeddings, options `AscentArguments` (shared with PGD, `perturbers.py`)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ...training import Objective
from ..context import AdversaryContext
from ..losses import LossFn, cross_entropy
from ..modules import gradient_sync, input_embeddings, token_mask
from ..perturbers import AscentArguments, PerturbationConfig, ascent_step, initial_delta, project, split_input_ids


class FreeLB(Objective):
    """FreeLB as used by Robust Tickets: K ascent steps on the word embeddings; each step backpropagates
    loss/K into the parameters, so their gradient is the average over the K perturbed inputs (no clean pass)."""

    def __init__(self, cfg: PerturbationConfig, loss_fn: LossFn = cross_entropy) -> None:
        self.cfg = cfg
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], loss_scale: float = 1.0) -> torch.Tensor:
        inputs, input_ids = split_input_ids(model, batch)
        words = input_embeddings(model)
        steps = self.cfg.steps
        total = torch.zeros((), device=input_ids.device)
        delta = mask = None
        for step in range(steps):
            # Re-embed each step: the graph of the previous step was freed by its backward pass.
            embeds = words(input_ids)
            if delta is None:
                mask = token_mask(inputs, embeds).float()
                delta = project(initial_delta(embeds, mask, self.cfg), self.cfg)
            delta.requires_grad_()
            last = step == steps - 1
            with gradient_sync(model, enabled=last):
                loss = self.loss_fn(model(inputs_embeds=embeds + delta, **inputs).logits, batch) / steps
                (loss * loss_scale).backward()
            total = total + loss.detach()
            if not last:
                delta = ascent_step(delta.detach(), delta.grad.detach(), mask, self.cfg)
        return total


def build_freelb(context: AdversaryContext) -> Objective:
    return FreeLB(context.options[AscentArguments].config(), context.loss_fn)
