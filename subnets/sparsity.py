"""Sparsity reports of binary masks and the TensorBoard scalars of mask search and selective fine-tuning.

Every number names its denominator (which targets were counted), because the papers count differently. N:M
patterns (keep N of every M consecutive input weights of a row) are parsed, drawn and checked here.
Tags follow docs/methods.md (TensorBoard): `sparsity/global`, `sparsity/expected_l0`, `sparsity/layer_<i>/<kind>`,
`sparsity/kind/<kind>`, `mask/flip_rate`, `mask/gates_near_0`, `mask/gates_near_1`, `update/ratio/layer_<i>`.
The `*_scalars` functions return {tag: value}; callbacks return them from `log_scalars` and the Trainer's metric
logger writes them. They are called at logging steps only, so reading values back to the host here is fine.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import re

import numpy as np
import torch

from .errors import SubnetsError
from .targets import Target, describe_denominator, targets_from_names

Pattern = tuple[int, int] | None  # (N, M), or None: unstructured
UNSTRUCTURED = "unstructured"


def parse_pattern(pattern: str) -> Pattern:
    """'unstructured' -> None; 'N:M' (0 < N < M) -> (N, M)."""
    if pattern == UNSTRUCTURED:
        return None
    match = re.fullmatch(r"(\d+):(\d+)", pattern)
    if not match or not 0 < int(match.group(1)) < int(match.group(2)):
        raise SubnetsError(f"Unknown --pattern '{pattern}'; expected unstructured or N:M with 0 < N < M, "
                           f"such as 2:4 or 4:8.")
    return int(match.group(1)), int(match.group(2))


def format_pattern(pattern: Pattern) -> str:
    return UNSTRUCTURED if pattern is None else f"{pattern[0]}:{pattern[1]}"


def pattern_sparsity(pattern: Pattern) -> float | None:
    """The sparsity an N:M pattern fixes (1 - N/M), None for unstructured."""
    return None if pattern is None else 1 - pattern[0] / pattern[1]


def _groups(values: torch.Tensor, pattern: tuple[int, int], name: str) -> torch.Tensor:
    """A matrix as [rows, cols / M, M] groups of M consecutive input weights."""
    n, m = pattern
    if values.dim() != 2 or values.shape[1] % m:
        raise SubnetsError(f"'{name}' of shape {tuple(values.shape)} cannot hold a {n}:{m} pattern; expected a "
                           f"matrix whose input features are a multiple of {m}.")
    return values.reshape(values.shape[0], -1, m)


def nm_mask(scores: torch.Tensor, n: int, m: int, name: str = "a matrix") -> torch.Tensor:
    """Keep the N highest scores in every group of M consecutive columns of each row (True = kept)."""
    groups = _groups(scores, (n, m), name)
    kept = torch.zeros_like(groups, dtype=torch.bool)
    kept.scatter_(2, groups.topk(n, dim=2).indices, True)
    return kept.reshape(scores.shape)


def pattern_violations(mask: Mapping[str, torch.Tensor], pattern: Pattern) -> list[str]:
    """The entries of a binary mask where some group of M consecutive input weights does not keep exactly N
    (every entry for a matrix the pattern cannot tile); none for unstructured."""
    if pattern is None:
        return []
    bad = []
    for name, kept in mask.items():
        ok = kept.dim() == 2 and kept.shape[1] % pattern[1] == 0
        if not ok or not bool((_groups(kept.bool(), pattern, name).sum(-1) == pattern[0]).all()):
            bad.append(name)
    return bad


@dataclass
class SparsityReport:
    """Fractions of pruned weights (mask False) over the counted targets.

    `global_sparsity` = pruned / total over all targets; `per_tensor` by parameter name; `per_layer` by block;
    `per_kind` by matrix kind; `per_layer_kind` by (layer, kind); `denominator` names the targets. A fused
    projection (e.g. ModernBERT's `Wqkv`) counts under the roles of its parts (query, key, value) in `per_kind` and
    `per_layer_kind`.
    """

    global_sparsity: float
    pruned: int
    total: int
    denominator: str
    per_tensor: dict[str, float] = field(default_factory=dict)
    per_layer: dict[int, float] = field(default_factory=dict)
    per_kind: dict[str, float] = field(default_factory=dict)
    per_layer_kind: dict[tuple[int, str], float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (used by `metrics.json` and the mask CLI)."""
        return {
            "sparsity": self.global_sparsity,
            "pruned": self.pruned,
            "total": self.total,
            "sparsity_denominator": self.denominator,
            "per_tensor": self.per_tensor,
            "per_layer": {str(k): v for k, v in self.per_layer.items()},
            "per_kind": self.per_kind,
            "per_layer_kind": {f"layer_{i}/{k}": v for (i, k), v in self.per_layer_kind.items()},
        }

    def as_record_field(self) -> dict[str, Any]:
        """The `sparsity` field of a stored ticket's metadata (docs/masks.md)."""
        return {"global": self.global_sparsity, "pruned": self.pruned, "total": self.total,
                "denominator": self.denominator, "per_tensor": self.per_tensor}


def count_nonzero(mask: torch.Tensor) -> int:
    """Number of non-zero entries (numpy on the CPU, where it is ~30x faster than torch for bool tensors)."""
    if mask.device.type != "cpu":
        return int(torch.count_nonzero(mask))
    return int(np.count_nonzero(mask.detach().numpy()))


def sparsity_report(mask: Mapping[str, torch.Tensor], targets: Sequence[Target] | None = None) -> SparsityReport:
    """Sparsity of a binary mask (True = kept) over `targets`.

    Without `targets` the mask's own keys are the denominator, placed into layers and kinds by their names.
    With `targets`, every target must have a mask entry of its shape (a target without one is an error, so
    that a denominator never silently counts unmasked matrices as dense or absent).
    """
    if targets is None:
        targets = targets_from_names({name: tuple(t.shape) for name, t in mask.items()})
    per_tensor: dict[str, float] = {}
    by_layer: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_layer_kind: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    pruned_all = total_all = 0
    for target in targets:
        values = _checked_entry(mask, target)
        total = values.numel()
        pruned = total - count_nonzero(values)
        per_tensor[target.name] = pruned / max(total, 1)
        pruned_all, total_all = pruned_all + pruned, total_all + total
        if target.layer is not None:
            by_layer[target.layer][0] += pruned
            by_layer[target.layer][1] += total
        for role, role_pruned, role_total in _per_role(values, target, pruned, total):
            groups = [by_kind[role]] + ([by_layer_kind[(target.layer, role)]] if target.layer is not None else [])
            for group in groups:
                group[0] += role_pruned
                group[1] += role_total
    if total_all == 0:
        raise SubnetsError("Cannot report sparsity over an empty set of targets; expected at least one mask entry.")
    return SparsityReport(
        global_sparsity=pruned_all / total_all,
        pruned=pruned_all,
        total=total_all,
        denominator=describe_denominator(targets),
        per_tensor=per_tensor,
        per_layer=_ratios(by_layer),
        per_kind=_ratios(by_kind),
        per_layer_kind=_ratios(by_layer_kind),
    )


def _per_role(values: torch.Tensor, target: Target, pruned: int, total: int) -> list[tuple[str, int, int]]:
    """(role, pruned, total) per role: a fused projection counted per part, any other target as its kind."""
    if not target.parts:
        return [(target.kind, pruned, total)]
    counts = []
    for role, start, stop in target.parts:
        part = values.narrow(target.out_axis, start, stop - start)
        counts.append((role, part.numel() - count_nonzero(part), part.numel()))
    return counts


def _ratios(counts: Mapping[Any, list[int]]) -> dict:
    return {key: pruned / max(total, 1) for key, (pruned, total) in counts.items()}


def _checked_entry(mask: Mapping[str, torch.Tensor], target: Target) -> torch.Tensor:
    if target.name not in mask:
        raise SubnetsError(f"The mask has no entry for target '{target.name}'; expected one per counted target.")
    values = mask[target.name]
    if tuple(values.shape) != tuple(target.shape):
        raise SubnetsError(f"Mask entry '{target.name}' has shape {tuple(values.shape)}; expected {tuple(target.shape)}.")
    if values.dtype != torch.bool:
        raise SubnetsError(f"Mask entry '{target.name}' has dtype {values.dtype}; expected a binary (bool) mask.")
    return values


def flip_rate(previous: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]) -> float:
    """Fraction of weights whose kept/pruned state changed between two binary masks with the same keys."""
    flipped = total = 0
    for name, now in current.items():
        if name not in previous:
            raise SubnetsError(f"Cannot compare masks: '{name}' is missing from the previous mask.")
        flipped += int((previous[name] != now).sum())
        total += now.numel()
    return flipped / max(total, 1)


def sparsity_scalars(report: SparsityReport, *, flip: float | None = None) -> dict[str, float]:
    """`sparsity/global`, `sparsity/layer_<i>/<kind>`, `sparsity/kind/<kind>` and, if given, `mask/flip_rate`."""
    scalars = {"sparsity/global": report.global_sparsity}
    scalars.update({f"sparsity/layer_{layer}/{kind}": v for (layer, kind), v in sorted(report.per_layer_kind.items())})
    scalars.update({f"sparsity/kind/{kind}": value for kind, value in sorted(report.per_kind.items())})
    if flip is not None:
        scalars["mask/flip_rate"] = flip
    return scalars


def gate_stats(gates: Mapping[str, torch.Tensor], *, tolerance: float = 0.01) -> dict[str, float]:
    """Fractions of gate values (in [0, 1]) within `tolerance` of 0 and of 1, over all entries."""
    near_0 = near_1 = total = 0
    for values in gates.values():
        values = values.detach()
        near_0 += int((values <= tolerance).sum())
        near_1 += int((values >= 1 - tolerance).sum())
        total += values.numel()
    total = max(total, 1)
    return {"mask/gates_near_0": near_0 / total, "mask/gates_near_1": near_1 / total}


# Hard-concrete gates (Louizos et al., 2018; docs/methods.md, hard-concrete): stretch limits l, r; temperature beta
HARD_CONCRETE_LIMITS = (-0.1, 1.1)
HARD_CONCRETE_BETA = 2.0 / 3.0
HARD_CONCRETE_L0_SHIFT = HARD_CONCRETE_BETA * math.log(-HARD_CONCRETE_LIMITS[0] / HARD_CONCRETE_LIMITS[1])


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """The probability that each hard-concrete gate is non-zero, sigmoid(log_alpha - beta log(-l / r)) (Louizos
    et al., eq. 12): the expected L0 of mask search and what `subnets-masks plot` draws for a gate state."""
    return torch.sigmoid(log_alpha - HARD_CONCRETE_L0_SHIFT)


def gate_scalars(
    gates: Mapping[str, torch.Tensor], *, expected_l0: float | None = None, tolerance: float = 0.01
) -> dict[str, float]:
    """`mask/gates_near_0`, `mask/gates_near_1` (deterministic gate values) and `sparsity/expected_l0`.

    `expected_l0` is the expected fraction of non-zero gates (docs/methods.md, hard-concrete), logged as given.
    """
    scalars = gate_stats(gates, tolerance=tolerance)
    if expected_l0 is not None:
        scalars["sparsity/expected_l0"] = float(expected_l0)
    return scalars


def update_ratio_scalars(ratios_per_layer: Mapping[int, float] | Sequence[float]) -> dict[str, float]:
    """`update/ratio/layer_<i>`: the fraction of layer i's parameters updated (selective fine-tuning)."""
    items = ratios_per_layer.items() if isinstance(ratios_per_layer, Mapping) else enumerate(ratios_per_layer)
    return {f"update/ratio/layer_{layer}": float(ratio) for layer, ratio in items}
