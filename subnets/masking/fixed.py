"""Fixed binary masks on plain weights: pruned weights are zeroed and stay exactly zero.

After every optimizer step the pruned entries are multiplied by zero again, so weight decay and momentum
(which would otherwise move a zero weight) can never leave a pruned weight non-zero. Gradients of pruned
entries are zeroed before clipping so that the gradient norm only counts the surviving weights.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..weights import check_shapes, raw_parameter


class FixedMask:
    """A bool mask dict bound to a model's parameters (keys: canonical parameter names); binding it zeroes the
    pruned weights (as `subnets.weights.apply_masks` does), and `zero_weights` does so again after each step.

    The multipliers live on the parameters' device: a Trainer moves the model after the mask is built, so
    `FixedMaskCallback` binds the mask again when training begins (`bind`), after the move."""

    def __init__(self, model: torch.nn.Module, mask: Mapping[str, torch.Tensor]):
        check_shapes(model, mask)
        self.names = list(mask)
        self.multipliers = [keep.bool() for keep in mask.values()]
        self.bind(model)

    def bind(self, model: torch.nn.Module) -> None:
        """Hold `model`'s parameters as they are now (device included) and zero their pruned entries."""
        self.params = [raw_parameter(model, name) for name in self.names]
        self.multipliers = [keep.to(device=p.device, dtype=p.dtype) for p, keep in zip(self.params, self.multipliers)]
        self.zero_weights()

    @property
    def mask(self) -> dict[str, torch.Tensor]:
        """The binary mask (on the parameters' device)."""
        return {name: keep != 0 for name, keep in zip(self.names, self.multipliers)}

    @torch.no_grad()
    def zero_weights(self) -> None:
        torch._foreach_mul_(self.params, self.multipliers)

    @torch.no_grad()
    def zero_grads(self) -> None:
        grads, multipliers = [], []
        for param, multiplier in zip(self.params, self.multipliers):
            if param.grad is not None:
                grads.append(param.grad)
                multipliers.append(multiplier)
        if grads:
            torch._foreach_mul_(grads, multipliers)
