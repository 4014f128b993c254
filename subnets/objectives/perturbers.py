"""Adversarial perturbers in embedding space: FreeLB, PGD and RoAST's single step.

Every perturber keeps all model inputs of the batch (token_type_ids included, unlike the Robust Tickets
reference, which dropped them in the adversarial pass), calls the module it is given (so DDP wrappers, masks
and gates stay in the loop), and works under autocast: perturbations and their gradients are float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..errors import SubnetsError
from ..targets import model_family
from ..training import Objective
from .losses import LossFn, cross_entropy, symmetric_kl
from .modules import embeddings_block, gradient_sync, input_embeddings, split_batch, token_mask, unwrap

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


def _split_ids(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    family = model_family(unwrap(model))
    if family is not None and family.last_token_head:
        raise SubnetsError(f"{type(unwrap(model)).__name__} pools its last non-padding token, which it cannot find "
                           "from the inputs_embeds that FreeLB and PGD feed it; expected an encoder model for "
                           "--adversary freelb|pgd.")
    inputs, _ = split_batch(batch)
    if "input_ids" not in inputs:
        raise SubnetsError("Embedding perturbers need 'input_ids' in the batch (not precomputed inputs_embeds).")
    return inputs, inputs.pop("input_ids")


class FreeLB(Objective):
    """FreeLB as used by Robust Tickets: K ascent steps on the word embeddings; each step backpropagates
    loss/K into the parameters, so their gradient is the average over the K perturbed inputs (no clean pass)."""

    def __init__(self, cfg: PerturbationConfig, loss_fn: LossFn = cross_entropy) -> None:
        self.cfg = cfg
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], loss_scale: float = 1.0) -> torch.Tensor:
        inputs, input_ids = _split_ids(model, batch)
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
        inputs, input_ids = _split_ids(model, batch)
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

