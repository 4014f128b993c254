"""Per layer x matrix kind tables of per-tensor values (of any record), update frequency per layer over the steps
of an update log, and the comparison of two binary masks."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch

from subnets.errors import SubnetsError
from subnets.sparsity import count_nonzero
from subnets.targets import ENCODER_KINDS, targets_from_names

from .bits import overlap_counts
from .record import MaskRecord


def layer_kind_grid(values: Mapping[str, float], shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Aggregate per-tensor fractions into {"layers": {i: {kind: v}}, "other": {kind: v}}, weighted by size.

    Tensors are placed by their names (`subnets.targets.targets_from_names`); several tensors of one cell (e.g.
    a weight and its bias) are averaged by their number of entries.
    """
    sums: dict[tuple[int | None, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for target in targets_from_names({name: shapes[name] for name in values}):
        cell = sums[(target.layer, target.kind)]
        cell[0] += values[target.name] * max(target.numel, 1)
        cell[1] += max(target.numel, 1)
    layers: dict[int, dict[str, float]] = defaultdict(dict)
    other: dict[str, float] = {}
    for (layer, kind), (weighted, count) in sums.items():
        if layer is None:
            other[kind] = weighted / count
        else:
            layers[layer][kind] = weighted / count
    return {"layers": {i: layers[i] for i in sorted(layers)}, "other": other}


def grid_columns(grid: Mapping[str, Any]) -> list[str]:
    """Matrix kinds present in a grid's layers, in the canonical order (Q, K, V, AO, FFN in, FFN out, others)."""
    present = {kind for row in grid["layers"].values() for kind in row}
    return [k for k in ENCODER_KINDS if k in present] + sorted(present - set(ENCODER_KINDS))


def record_grid(record: MaskRecord) -> tuple[dict[str, Any], str]:
    """The layer x kind grid of a record and what its values are."""
    shapes = {name: info["shape"] for name, info in record.meta["tensors"].items()}
    if record.kind == "ticket":
        return layer_kind_grid(record.meta["sparsity"]["per_tensor"], shapes), "sparsity"
    if record.kind == "update":
        steps = max(record.meta["steps_logged"], 1)
        ratios = {name: count / steps for name, count in record.meta["update_counts"].items()}
        return layer_kind_grid(ratios, shapes), "update ratio"
    means = {name: float(t.float().mean()) for name, t in record.masks.items()}
    return layer_kind_grid(means, shapes), f"mean {record.meta.get('method') or 'state'} state value"


def state_values(record: MaskRecord, limit: int = 1_000_000) -> torch.Tensor:
    """A state record's entries as one float vector (an evenly spaced subset of at most `limit` of them)."""
    flat = torch.cat([t.detach().float().flatten() for t in record.masks.values()])
    return flat[:: max(1, -(-flat.numel() // limit))]


def update_frequency_by_layer(record: MaskRecord) -> tuple[list[int], dict[int, list[float]]]:
    """Per logged step, the fraction of each encoder layer's logged entries that were updated."""
    shapes = {name: info["shape"] for name, info in record.meta["tensors"].items()}
    layer_of = {t.name: t.layer for t in targets_from_names(shapes) if t.layer is not None}
    steps: list[int] = []
    per_layer: dict[int, list[float]] = defaultdict(list)
    for step, masks in record.steps():
        updated: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for name, mask in masks.items():
            if name in layer_of:
                cell = updated[layer_of[name]]
                cell[0] += count_nonzero(mask)
                cell[1] += mask.numel()
        steps.append(step)
        for layer, (count, total) in updated.items():
            per_layer[layer].append(count / max(total, 1))
    return steps, dict(per_layer)


def check_same_layout(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    """Two masks are comparable if they have the same tensor names and shapes; name the first difference."""
    for name in list(a) + [n for n in b if n not in a]:
        if name not in a or name not in b:
            side = "first" if name not in a else "second"
            raise SubnetsError(f"Cannot compare the masks: tensor '{name}' is missing from the {side} mask.")
        if tuple(a[name].shape) != tuple(b[name].shape):
            raise SubnetsError(
                f"Cannot compare the masks: tensor '{name}' has shape {tuple(a[name].shape)} vs {tuple(b[name].shape)}."
            )
        if a[name].dtype != torch.bool or b[name].dtype != torch.bool:
            raise SubnetsError(f"Cannot compare the masks: tensor '{name}' is not binary in both (draw a ticket first).")


def _overlap(inter: int, union: int, differ: int, total: int) -> dict[str, float | int]:
    # IoU (Jaccard) of the kept sets: |A and B| / |A or B|; two empty masks are identical (IoU 1).
    return {
        "iou": inter / union if union else 1.0,
        "hamming": differ,
        "hamming_fraction": differ / total if total else 0.0,
        "kept_both": inter,
        "total": total,
    }


def diff_masks(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """IoU (Jaccard) of the kept weights and Hamming distance: overall, per layer, per tensor."""
    check_same_layout(a, b)
    counts: dict[str, tuple[int, int, int, int]] = {}
    for name in a:
        inter, union = overlap_counts(a[name], b[name])
        counts[name] = (inter, union, union - inter, a[name].numel())  # |A xor B| = |A or B| - |A and B|
    per_layer: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for target in targets_from_names({name: a[name].shape for name in a}):
        key = target.layer if target.layer is not None else target.kind
        per_layer[key] = [s + c for s, c in zip(per_layer[key], counts[target.name])]
    overall = [sum(c[i] for c in counts.values()) for i in range(4)]
    return {
        **_overlap(*overall),
        "per_layer": {str(k): _overlap(*v) for k, v in per_layer.items()},
        "per_tensor": {name: _overlap(*c) for name, c in counts.items()},
    }
