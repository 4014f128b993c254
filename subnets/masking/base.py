"""Masks as `torch.nn.utils.parametrize` parametrizations of target weights (no fork of `transformers`).

A `MaskParametrization` owns a mask state of group shape (gates, scores) and multiplies the weight by the
current mask in its forward. `attach` registers one per target and freezes the model's own weights (no weight
gradients at all: `requires_grad=False`), `detach` removes them, leaving the masked weights as plain tensors.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch.nn.utils import parametrize

from ..errors import SubnetsError
from ..targets import Target
from .layout import Layout, head_counts, layout_for


class MaskParametrization(torch.nn.Module):
    """Base class: `forward(weight) -> masked weight`; subclasses define `gate()` and `binary()` (group shape)."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout

    def gate(self) -> torch.Tensor:
        """The multiplier applied in the current mode (stochastic while training where the method samples)."""
        raise NotImplementedError

    def binary(self) -> torch.Tensor:
        """The current binary (kept = True) mask in group shape, as used at evaluation."""
        raise NotImplementedError

    def state(self) -> torch.Tensor:
        """The real-valued mask state in group shape (higher = more important), for drawing a ticket."""
        raise NotImplementedError

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.layout.broadcast(self.gate()).to(weight.dtype)


def attach(
    model: torch.nn.Module,
    targets: Iterable[Target],
    granularity: str,
    make: Callable[[Target, Layout, torch.Tensor], MaskParametrization],
) -> dict[str, MaskParametrization]:
    """Register `make(target, layout, weight)` on every target that `granularity` applies to; freeze all weights.

    Returns the parametrizations keyed by parameter name. Every parameter of `model` other than the mask states
    ends with `requires_grad=False`.
    """
    modules = dict(model.named_modules())
    counts = head_counts(model, granularity) if granularity != "weight" else ()
    attached: dict[str, MaskParametrization] = {}
    for target in targets:
        layout = layout_for(target, granularity, *counts)
        if layout is None:
            continue
        module = modules[target.module_name]
        if parametrize.is_parametrized(module, "weight"):
            raise SubnetsError(f"'{target.name}' already carries a mask; expected an unmasked model.")
        weight = module.weight.detach()
        mask = make(target, layout, weight).to(weight.device)
        parametrize.register_parametrization(module, "weight", mask, unsafe=True)
        attached[target.name] = mask
    if not attached:
        raise SubnetsError(f"No target can be masked at granularity '{granularity}'.")
    mask_params = {id(p) for m in attached.values() for p in m.parameters()}
    for param in model.parameters():
        if id(param) not in mask_params:
            param.requires_grad_(False)
    return attached


def attached_masks(model: torch.nn.Module) -> dict[str, MaskParametrization]:
    """The mask parametrizations currently on `model`, keyed by canonical parameter name."""
    found = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, MaskParametrization):
                    found[f"{name}.weight"] = p
    return found


def detach(model: torch.nn.Module) -> None:
    """Remove every mask parametrization, leaving the currently masked weights (in eval mode: deterministic)."""
    was_training = model.training
    model.eval()
    for name in attached_masks(model):
        module = model.get_submodule(name.rsplit(".", 1)[0])
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    model.train(was_training)


def binary_mask(masks: dict[str, MaskParametrization]) -> dict[str, torch.Tensor]:
    """Weight-shaped bool masks (True = kept) of the current evaluation-time mask."""
    return {name: m.layout.expand(m.binary()) for name, m in masks.items()}


def mask_states(masks: dict[str, MaskParametrization]) -> dict[str, torch.Tensor]:
    """Weight-shaped float mask states (for drawing a ticket at any sparsity)."""
    return {name: m.layout.expand(m.state().detach().float()) for name, m in masks.items()}


def target_weights(model: torch.nn.Module, targets: Iterable[Target]) -> dict[str, torch.Tensor]:
    """The current values of the target weights (parametrized weights give their masked values)."""
    modules = dict(model.named_modules())
    return {t.name: modules[t.module_name].weight.detach() for t in targets}
