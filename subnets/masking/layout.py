"""Mask granularities: how a mask state of "group" shape broadcasts over a weight matrix.

* `weight`: one entry per weight (unstructured).
* `head`: one entry per attention head: rows of Q/K/V (output features), columns of the attention output.
* `neuron`: one entry per FFN neuron: rows of FFN in, columns of FFN out.
* `structured`: `head` for attention matrices plus `neuron` for FFN matrices.
Targets a granularity does not apply to (e.g. FFN matrices under `head`) are not masked at that granularity.

`encoder_layers(model)` groups the six matrices of each encoder layer with their `structured` layouts: the one
description of which rows and columns form a head or a neuron, used by mask search and by compact export alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SubnetsError
from ..targets import Target, find_targets

GRANULARITIES = ("weight", "head", "neuron", "structured")
_HEAD_ROWS, _HEAD_COLS = ("query", "key", "value"), ("attn_out",)
_NEURON_ROWS, _NEURON_COLS = ("ffn_in",), ("ffn_out",)
HEAD_KINDS, NEURON_KINDS = _HEAD_ROWS + _HEAD_COLS, _NEURON_ROWS + _NEURON_COLS

UnitMasks = dict[int, torch.Tensor]
"""Per encoder layer index, a bool vector over its heads or its FFN neurons (True = kept)."""


@dataclass(frozen=True)
class Layout:
    """Group shape of a target's mask state and how it broadcasts: `axis` None (per weight), 0 (rows), 1 (columns);
    each group entry covers `repeat` consecutive rows or columns."""

    weight_shape: tuple[int, ...]
    axis: int | None = None
    repeat: int = 1

    @property
    def group_shape(self) -> tuple[int, ...]:
        if self.axis is None:
            return self.weight_shape
        return (self.weight_shape[self.axis] // self.repeat,)

    def broadcast(self, groups: torch.Tensor) -> torch.Tensor:
        """A view-like tensor of group values that broadcasts against the weight (no full-size copy)."""
        if self.axis is None:
            return groups
        values = groups.repeat_interleave(self.repeat) if self.repeat > 1 else groups
        return values.unsqueeze(1) if self.axis == 0 else values.unsqueeze(0)

    def expand(self, groups: torch.Tensor) -> torch.Tensor:
        """Group values as a full weight-shaped tensor."""
        return self.broadcast(groups).expand(self.weight_shape).contiguous()

    def weights_per_group(self) -> int:
        """Number of weights each group entry covers."""
        if self.axis is None:
            return 1
        return self.repeat * self.weight_shape[1 - self.axis]


def layout_for(target: Target, granularity: str, num_heads: int | None = None) -> Layout | None:
    """The layout of `target` at `granularity`, or None if the granularity does not mask this target."""
    if granularity not in GRANULARITIES:
        raise SubnetsError(f"Unknown mask granularity '{granularity}'; expected one of {', '.join(GRANULARITIES)}.")
    shape = tuple(target.shape)
    if granularity == "weight":
        return Layout(shape)
    heads = granularity in ("head", "structured")
    neurons = granularity in ("neuron", "structured")
    if heads and target.kind in _HEAD_ROWS + _HEAD_COLS:
        if not num_heads:
            raise SubnetsError("Head granularity needs the model's number of attention heads; expected config.num_attention_heads.")
        axis = 0 if target.kind in _HEAD_ROWS else 1
        if shape[axis] % num_heads:
            raise SubnetsError(f"'{target.name}' has {shape[axis]} features, not a multiple of {num_heads} heads.")
        return Layout(shape, axis, shape[axis] // num_heads)
    if neurons and target.kind in _NEURON_ROWS + _NEURON_COLS:
        return Layout(shape, 0 if target.kind in _NEURON_ROWS else 1, 1)
    return None


def num_attention_heads(model: torch.nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_attention_heads", None)


@dataclass(frozen=True)
class EncoderLayer:
    """The six prunable matrices of one encoder layer (kind -> target) with their `structured` layouts (a head is
    `head_size` rows of Q/K/V and columns of the attention output; a neuron a row of FFN in and a column of FFN
    out), and the attention module that owns Q/K/V and holds the head-count attributes."""

    targets: dict[str, Target]
    layouts: dict[str, Layout]
    attention_name: str
    head_size: int

    @property
    def num_heads(self) -> int:
        return self.layouts["query"].group_shape[0]

    @property
    def intermediate_size(self) -> int:
        return self.layouts["ffn_in"].group_shape[0]


def encoder_layers(model: torch.nn.Module) -> list[EncoderLayer]:
    """The encoder layers of a BERT-family model, in order (see `EncoderLayer`)."""
    by_layer: dict[int, dict[str, Target]] = {}
    for target in find_targets(model):
        by_layer.setdefault(target.layer, {})[target.kind] = target
    modules = dict(model.named_modules())
    layers = []
    for index in sorted(by_layer):
        targets = by_layer[index]
        attention_name = targets["query"].module_name.rsplit(".", 1)[0]
        head_size = getattr(modules[attention_name], "attention_head_size", None)
        if not isinstance(head_size, int):
            raise SubnetsError(
                f"The attention module '{attention_name}' of {type(model).__name__} has no integer "
                "`attention_head_size`; compact export supports BERT, RoBERTa, DistilBERT, ELECTRA and DeBERTa-v2."
            )
        num_heads = targets["query"].shape[0] // head_size
        layouts = {kind: layout_for(target, "structured", num_heads) for kind, target in targets.items()}
        layers.append(EncoderLayer(targets, layouts, attention_name, head_size))
    return layers
