"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Chen et al. 2020, "The Lottery Ticket
Hypothesis for Pre-trained BERT Networks"; SRNets' IMP). docs/methods.md, "Iterative magnitude pruning".

Each round prunes the lowest |W| among the surviving weights, layer-wise or globally, to the round's sparsity;
then surviving weights may be rewound to a reference state (pre-trained, fine-tuned, or step-k weights). The
classifier head is never rewound (it keeps its trained values), as in the lottery-ticket reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from ...config import check_value
from ...models import classifier_modules, load_classifier
from ...targets import Target
from ...weights import apply_masks
from ..base import target_weights
from ..callbacks import FixedMaskCallback
from ..draw import draw_mask
from ..fixed import FixedMask
from ..search_context import FoundMask, SearchContext
from ..sources import init_path

DEFAULT_RATE = 0.1


def imp_sparsity(round_index: int, rate: float = DEFAULT_RATE) -> float:
    """Sparsity after `round_index` rounds that each prune `rate` of the remaining weights: 10%, 19%, 27.1%, ..."""
    return 1.0 - (1.0 - rate) ** round_index


def imp_prune(
    model: torch.nn.Module,
    targets: Iterable[Target],
    mask: Mapping[str, torch.Tensor] | None,
    round_index: int,
    *,
    scope: str = "per_matrix",
    rate: float = DEFAULT_RATE,
) -> dict[str, torch.Tensor]:
    """The mask after round `round_index` (1-based): previously pruned weights stay pruned."""
    magnitudes = {n: w.abs() for n, w in target_weights(model, targets).items()}
    return draw_mask(magnitudes, imp_sparsity(round_index, rate), scope=scope, keep_pruned=mask)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter (a rewind point)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def rewind(model: torch.nn.Module, reference: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> None:
    """Reset every parameter except the classifier head to `reference`, then zero the pruned weights."""
    head = {id(p) for m in classifier_modules(model) for p in m.parameters()}
    for name, param in model.named_parameters():
        if id(param) not in head and name in reference:
            param.copy_(reference[name])
    apply_masks(model, mask)


@dataclass
class IMPArguments:
    config_group = "SearchArguments"
    _argument_group_name = "method: imp"  # its --help section

    imp_rate: float = field(default=0.1, metadata={"help": "IMP: fraction of the remaining weights pruned per round."})
    imp_rewind: str = field(default="pretrained", metadata={"help": "IMP: pretrained | finetuned | <step> | none"})
    imp_prune_first: bool = field(default=False, metadata={"help": "IMP: prune at step 0 before the first training."})

    def __post_init__(self) -> None:
        check_value(self, "imp_rate", 0 < self.imp_rate < 1, "a fraction of the remaining weights in (0, 1)")


def build_imp(context: SearchContext) -> FoundMask:
    """Rounds of (train, prune, rewind) -- or (prune, rewind, train) with `imp_prune_first` -- each with a new
    Trainer (fresh optimizer and schedule), until the round sparsity reaches the target."""
    options, model, targets = context.options[IMPArguments], context.model, context.targets
    scope, out = context.search.scope, context.output_dir
    rounds = max(1, math.ceil(math.log(1 - context.search.target_sparsity) / math.log(1 - options.imp_rate) - 1e-9))
    reference = _rewind_reference(model, options.imp_rewind, context.source)
    mask, metrics = None, {}
    survived = {t.name: torch.zeros(t.shape) for t in targets}
    for round_index in range(1, rounds + 1):
        extra = [FixedMaskCallback(FixedMask(model, mask))] if mask is not None else []
        if not options.imp_prune_first:
            metrics = context.make_trainer(out / f"round-{round_index}", extra).train()
        mask = imp_prune(model, targets, mask, round_index, scope=scope, rate=options.imp_rate)
        for name, keep in mask.items():
            survived[name] += keep.cpu().float()
        if reference is not None:
            rewind(model, reference, mask)
        else:
            apply_masks(model, mask)
        if options.imp_prune_first:
            fixed = [FixedMaskCallback(FixedMask(model, mask))]
            metrics = context.make_trainer(out / f"round-{round_index}", fixed).train()
    # State for drawing other sparsities: rounds survived, ties broken by the final magnitude (< 1).
    weights = target_weights(model, targets)
    state = {n: survived[n] + (weights[n].abs().float().cpu() / (weights[n].abs().max().float().cpu() + 1e-12)) * 0.5
             for n in survived}
    metrics["imp_rounds"] = rounds
    metrics["imp_round_sparsity"] = imp_sparsity(rounds, options.imp_rate)
    return FoundMask(mask, state, metrics)


def _rewind_reference(model: torch.nn.Module, rewind_to: str, source: str) -> dict[str, torch.Tensor] | None:
    if rewind_to == "none":
        return None
    path, _ = init_path(source, rewind_to)
    if path == source:
        return snapshot(model)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    reference, _ = load_classifier(path, labels)
    return {n: p.to(next(model.parameters()).device) for n, p in snapshot(reference).items()}
