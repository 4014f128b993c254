"""Mask granularities: how a mask state of "group" shape broadcasts over a weight matrix.

* `weight`: one entry per weight (unstructured).
* `head`: one entry per attention unit: its rows of Q/K/V (output features), its columns of the attention output.
  A unit is one key/value head with the query heads that share it (grouped-query attention; with as many
  key/value heads as query heads, a unit is one head).
* `neuron`: one entry per FFN neuron: its row of FFN in (and of the gate, in a gated MLP), its column of FFN out.
* `structured`: `head` for attention matrices plus `neuron` for FFN matrices.
Targets a granularity does not apply to (e.g. FFN matrices under `head`) are not masked at that granularity.
A fused projection (query-key-value, gate-up) gets one segment of entries per part, each part masked as the
unfused matrix of its role would be.

`encoder_layers(model)` describes, per block, which slices of which matrices form each head unit and each neuron:
the one description used by mask search, the structured baselines and compact export alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import SubnetsError
from ..families import FUSED_ROLES
from ..targets import Target, find_targets, model_family

GRANULARITIES = ("weight", "head", "neuron", "structured")
_HEAD_ROWS, _HEAD_COLS = ("query", "key", "value"), ("attn_out",)
_NEURON_ROWS, _NEURON_COLS = ("ffn_gate", "ffn_in"), ("ffn_out",)
HEAD_KINDS, NEURON_KINDS = _HEAD_ROWS + _HEAD_COLS, _NEURON_ROWS + _NEURON_COLS

UnitMasks = dict[int, torch.Tensor]
"""Per block index, a bool vector over its head units or its FFN neurons (True = kept)."""


@dataclass(frozen=True)
class Layout:
    """Group shape of a target's mask state and how it broadcasts: `axis` None (per weight), 0 (rows), 1 (columns);
    along `axis`, `segments` lists (entries, rows or columns per entry) in order, covering the axis."""

    weight_shape: tuple[int, ...]
    axis: int | None = None
    segments: tuple[tuple[int, int], ...] = ()

    @property
    def group_shape(self) -> tuple[int, ...]:
        if self.axis is None:
            return self.weight_shape
        return (sum(units for units, _ in self.segments),)

    def split(self, groups: torch.Tensor) -> list[torch.Tensor]:
        """Group values per segment (views)."""
        if self.axis is None:
            return [groups]
        return list(groups.split([units for units, _ in self.segments]))

    def unit_weights(self) -> list[int]:
        """Per segment, the number of weights each of its entries covers."""
        if self.axis is None:
            return [1]
        return [width * self.weight_shape[1 - self.axis] for _, width in self.segments]

    def broadcast(self, groups: torch.Tensor) -> torch.Tensor:
        """A view-like tensor of group values that broadcasts against the weight (no full-size copy)."""
        if self.axis is None:
            return groups
        parts = [g.repeat_interleave(width) if width > 1 else g
                 for g, (_, width) in zip(self.split(groups), self.segments)]
        values = parts[0] if len(parts) == 1 else torch.cat(parts)
        return values.unsqueeze(1) if self.axis == 0 else values.unsqueeze(0)

    def expand(self, groups: torch.Tensor) -> torch.Tensor:
        """Group values as a full weight-shaped tensor."""
        return self.broadcast(groups).expand(self.weight_shape).contiguous()

    def group_means(self, per_line: torch.Tensor) -> torch.Tensor:
        """Per group entry, the mean of per-row (or per-column) values along `axis` over the lines it covers."""
        lines = per_line.split([units * width for units, width in self.segments])
        return torch.cat([part.view(units, width).mean(dim=1) for part, (units, width) in zip(lines, self.segments)])


def layout_for(
    target: Target, granularity: str, num_heads: int | None = None, num_kv_heads: int | None = None
) -> Layout | None:
    """The layout of `target` at `granularity`, or None if the granularity does not mask this target.

    Head layouts need the number of query heads and, for grouped-query attention, of key/value heads.
    """
    if granularity not in GRANULARITIES:
        raise SubnetsError(f"Unknown mask granularity '{granularity}'; expected one of {', '.join(GRANULARITIES)}.")
    shape = tuple(target.shape)
    if granularity == "weight":
        return Layout(shape)
    heads = granularity in ("head", "structured")
    neurons = granularity in ("neuron", "structured")
    roles = FUSED_ROLES.get(target.kind, (target.kind,))
    if heads and set(roles) <= set(HEAD_KINDS):
        if not num_heads:
            raise SubnetsError("Head granularity needs the model's number of attention heads; expected "
                               "config.num_attention_heads.")
        return _layout(target, target.kind in _HEAD_COLS, num_kv_heads or num_heads, "head units")
    if neurons and set(roles) <= set(NEURON_KINDS):
        return _layout(target, target.kind in _NEURON_COLS, None, "neurons")
    return None


def _layout(target: Target, columns: bool, units: int | None, unit: str) -> Layout:
    """Entries along the output features (or, for `columns`, the input features): per role slice, `units`
    entries (None: one per feature)."""
    axis = 1 - target.out_axis if columns else target.out_axis
    slices = ((target.kind, 0, target.shape[axis]),) if columns else target.role_slices()
    segments = []
    for role, start, stop in slices:
        count = units or stop - start
        width, rest = divmod(stop - start, count)
        if rest:
            raise SubnetsError(f"The {role} part of '{target.name}' has {stop - start} features, not a multiple of "
                               f"{count} {unit}.")
        segments.append((count, width))
    return Layout(tuple(target.shape), axis, tuple(segments))


def head_counts(model: torch.nn.Module, granularity: str = "structured") -> tuple[int, int]:
    """(query heads, key/value heads) of a model in the family table; SubnetsError for an unknown family."""
    family = model_family(model)
    config = getattr(model, "config", None)
    if family is None:
        raise SubnetsError(
            f"Granularity '{granularity}' needs the model's heads and neurons, but model type "
            f"{getattr(config, 'model_type', None)!r} ({type(model).__name__}) is not in the family table "
            "(docs/families.md); expected --granularity weight (unstructured masks) for it."
        )
    heads = config.num_attention_heads
    kv_heads = getattr(config, family.kv_heads, None) if family.kv_heads else None
    return heads, kv_heads or heads


@dataclass(frozen=True)
class UnitSlice:
    """`units` consecutive units of `width` rows (axis 0) or columns (axis 1) each, from channel `start` of
    `target`'s weight."""

    target: Target
    axis: int
    start: int
    units: int
    width: int

    def blocks(self, tensor: torch.Tensor) -> torch.Tensor:
        """The slice of a weight-shaped tensor as [units, everything of one unit]."""
        part = tensor.narrow(self.axis, self.start, self.units * self.width)
        return (part if self.axis == 0 else part.T).reshape(self.units, -1)

    def channels(self, kept: torch.Tensor) -> torch.Tensor:
        """Indices along `axis` of the channels of the kept units (`kept`: bool [units])."""
        lines = torch.arange(self.units * self.width, device=kept.device)
        return self.start + lines[kept.repeat_interleave(self.width)]


@dataclass(frozen=True)
class EncoderLayer:
    """One block's structure: the matrix slices that form its head units and its FFN neurons, the slices of
    non-target projections whose rows follow the heads (`coupled`), the attention module that holds the head-count
    attributes, the head dimension and the query heads per unit."""

    heads: tuple[UnitSlice, ...]
    neurons: tuple[UnitSlice, ...]
    coupled: tuple[UnitSlice, ...]
    attention_name: str
    head_size: int
    group_size: int

    @property
    def num_heads(self) -> int:
        """Head units (key/value heads with their query heads)."""
        return self.heads[0].units

    @property
    def intermediate_size(self) -> int:
        return self.neurons[0].units


def _slices(target: Target, layout: Layout) -> list[UnitSlice]:
    found, start = [], 0
    for units, width in layout.segments:
        found.append(UnitSlice(target, layout.axis, start, units, width))
        start += units * width
    return found


def encoder_layers(model: torch.nn.Module) -> list[EncoderLayer]:
    """The structure of every block of a model in the family table, in order (see `EncoderLayer`)."""
    heads, kv_heads = head_counts(model)
    family = model_family(model)
    by_layer: dict[int, list[Target]] = {}
    for target in find_targets(model):
        by_layer.setdefault(target.layer, []).append(target)
    modules = dict(model.named_modules())
    layers = []
    for index in sorted(by_layer):
        head_slices, neuron_slices = [], []
        for target in by_layer[index]:
            layout = layout_for(target, "structured", heads, kv_heads)
            attention = target.kind in HEAD_KINDS or target.kind == "qkv"
            (head_slices if attention else neuron_slices).extend(_slices(target, layout))
        query_target = next(t for t in by_layer[index] if t.kind in ("query", "qkv"))
        head_size = query_target.role_slices()[0][2] // heads
        prefix = query_target.module_name[: -len(family.roles[query_target.kind])]
        coupled = []
        for path in family.coupled_rows:
            if prefix + path in modules:
                weight = modules[prefix + path].weight
                target = Target(f"{prefix}{path}.weight", prefix + path, index, "coupled", tuple(weight.shape))
                coupled.append(UnitSlice(target, 0, 0, kv_heads, weight.shape[0] // kv_heads))
        layers.append(EncoderLayer(tuple(head_slices), tuple(neuron_slices), tuple(coupled),
                                   prefix + family.attention, head_size, heads // kv_heads))
    return layers


def unit_scores(slices: tuple[UnitSlice, ...], scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per unit (head unit or FFN neuron), the sum of the per-weight `scores` (by target name, weight-shaped) over
    every matrix slice it spans."""
    return sum(s.blocks(scores[s.target.name].float()).sum(1) for s in slices)
