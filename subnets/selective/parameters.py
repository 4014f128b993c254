"""The parameters selective fine-tuning acts on: those inside the encoder's transformer blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subnets.errors import SubnetsError
from subnets.targets import canonical_parameter_name, find_encoder_layers


@dataclass(frozen=True, eq=False)
class LayerParameter:
    """A trainable parameter of encoder layer `layer`; `name` is canonical (no parametrization suffix)."""

    name: str
    param: torch.nn.Parameter
    layer: int


def encoder_layer_parameters(model: torch.nn.Module, *, weights_only: bool) -> list[LayerParameter]:
    """Trainable parameters inside the encoder layers, in model order.

    `weights_only=True` keeps the `.weight` tensors (Q, K, V, attention output, FFN and LayerNorm weights: the
    ROSE unit); `False` also keeps biases (RoAST ranks every encoder-layer element).
    """
    owner = {id(p): index for index, layer in enumerate(find_encoder_layers(model)) for p in layer.parameters()}
    selected = []
    for name, param in model.named_parameters():
        canonical = canonical_parameter_name(name)
        if id(param) in owner and param.requires_grad and (not weights_only or canonical.endswith(".weight")):
            selected.append(LayerParameter(canonical, param, owner[id(param)]))
    if not selected:
        raise SubnetsError(
            f"{type(model).__name__} has no trainable encoder-layer parameters; selective fine-tuning needs the "
            "encoder layers unfrozen."
        )
    return selected


class UpdateRatioMeter:
    """Accumulates, per encoder layer, the fraction of selected elements whose mask is non-zero.

    Masks are 0-d (one value per tensor) or element-wise. `add` runs on the masks' device with no host
    synchronisation; `mean()` (at logging steps) returns the average over the added steps and resets.
    """

    def __init__(self, selected: list[LayerParameter], device: torch.device | str):
        numels = torch.tensor([float(s.param.numel()) for s in selected])
        self.numels = numels.to(device)
        self.layers = torch.tensor([s.layer for s in selected]).to(device)
        self.num_layers = 1 + max(s.layer for s in selected)
        self.layer_sizes = torch.zeros(self.num_layers, device=device).index_add_(0, self.layers, self.numels)
        self.sums = torch.zeros(self.num_layers, device=device)
        self.count = 0

    def add(self, masks: list[torch.Tensor]) -> None:
        if masks[0].dim() == 0:  # one value per tensor: the whole tensor is updated or not
            nonzero = (torch.stack(masks) != 0).float() * self.numels
        else:  # non-zero count = L1 norm of |sign(m)|: fused multi-tensor kernels (an L0 norm takes a per-tensor path)
            nonzero = torch.stack(torch._foreach_norm(torch._foreach_abs(torch._foreach_sign(masks)), 1)).float()
        self.sums += torch.zeros_like(self.sums).index_add_(0, self.layers, nonzero) / self.layer_sizes
        self.count += 1

    def mean(self) -> list[float]:
        """Average per-layer ratios since the last call (host values); empty if nothing was added."""
        if self.count == 0:
            return []
        ratios = (self.sums / self.count).tolist()
        self.sums.zero_()
        self.count = 0
        return ratios
