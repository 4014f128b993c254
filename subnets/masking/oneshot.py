"""What the one-shot methods (magnitude, Wanda, SparseGPT; docs/methods.md, "One-shot pruning") share: their
options (pattern, layer budget, calibration), OWL's outlier-weighted layer budgets (Yin et al. 2024, from Wanda
scores), `prune_one_shot`, which prunes a model layer by layer (per weight, N:M, or whole heads and FFN neurons)
with a method's `MatrixPruner`, and the search that prunes once, evaluates, and saves the pruned model as the run's
checkpoint-best/ (`OneShotSearch`: each one-shot method's builder).

A weight is `[out_features, in_features]` (a `torch.nn.Linear`); "input weights" of a row are its columns. A
pattern `N:M` (`subnets.sparsity`) keeps N weights in every group of M consecutive input weights of a row.

No training: a finished run's directory holds its ticket, state and metrics in checkpoint-best/, and a re-run with
the same options (the stage refuses other options) reads them back instead of pruning again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, NamedTuple, Sequence

import torch
from safetensors.torch import load_file

from ..checkpointing import BEST, DirectoryCheckpointer
from ..errors import SubnetsError
from ..io import atomic_write_json
from ..objectives import AscentArguments, ObjectiveArguments
from ..registry import OptionGroups, check_choice
from ..selective import SelectiveArguments
from ..sparsity import Pattern, format_pattern, nm_mask, parse_pattern, pattern_sparsity
from ..targets import Target, find_encoder_layers
from ..weights import require_plain
from .calibration import (Batch, InputStatistics, calibration_batches, freelb_perturb, input_statistics,
                          read_calibration_file, sample_calibration)
from .callbacks import BINARY_FILE, STATE_FILE, save_mask_file
from .draw import draw_mask, prune_lowest, pruned_count
from .layout import EncoderLayer, encoder_layers, unit_scores
from .search_context import FoundMask, SearchContext, SharedSearchOptions

# OWL (Yin et al. 2024): a weight is an outlier when its Wanda score exceeds M times its layer's mean score, and the
# layer sparsities span [target - lambda, target + lambda]; the defaults M = 5, lambda = 0.08 (as issue 24 cites
# them; the reference code's Hyper_m and Lamda).
OWL_THRESHOLD = 5.0
OWL_LAMBDA = 0.08


def lowest_pruned(scores: torch.Tensor, sparsity: float, dim: int | None = None) -> torch.Tensor:
    """Prune round(sparsity * n) lowest scores of the whole tensor (dim None) or of each slice along `dim`
    (a stable ranking, so the count is exact with ties)."""
    if dim is None:
        return prune_lowest(scores.flatten(), pruned_count(scores.numel(), sparsity)).view_as(scores)
    ranks = torch.argsort(torch.argsort(scores, dim=dim, stable=True), dim=dim)
    return ranks >= pruned_count(scores.shape[dim], sparsity)


def select(scores: torch.Tensor, sparsity: float, pattern: Pattern, *, per_row: bool) -> torch.Tensor:
    """The kept weights of one matrix: N:M groups, else the lowest scores per row or per matrix."""
    if pattern is not None:
        return nm_mask(scores, *pattern)
    return lowest_pruned(scores, sparsity, dim=1 if per_row else None)


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda (Sun et al. 2023, Eq. 1): S_ij = |W_ij| * ||X_j||_2, X_j the j-th input feature over all calibration
    tokens; compared within each output row (the paper's per-output comparison group)."""
    return weight.abs() * input_norms.to(weight.dtype).unsqueeze(0)


def outlier_ratio(scores: Sequence[torch.Tensor], threshold: float = OWL_THRESHOLD) -> float:
    """OWL's layer-wise outlier distribution (LOD): the fraction of a layer's Wanda scores above `threshold` times
    the layer's mean score (over all its matrices together)."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return float((flat > threshold * flat.mean()).float().mean())


def owl_sparsities(ratios: Sequence[float], target: float, lam: float = OWL_LAMBDA) -> list[float]:
    """OWL layer sparsities: outlier ratios rescaled to [0, 2 lambda], centred on the target density, so that layers
    with more outliers keep more weights; the sparsities average to `target` (equal ratios: uniform)."""
    values = torch.tensor(ratios, dtype=torch.float64)
    spread = values.max() - values.min()
    density = (values - values.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(values)
    density = density - density.mean() + (1 - target)
    sparsities = (1 - density).tolist()
    if min(sparsities) < 0 or max(sparsities) >= 1:
        raise SubnetsError(f"OWL with lambda {lam} gives layer sparsities outside [0, 1) at target {target}; "
                           f"expected a smaller --owl_lambda.")
    return sparsities


class PrunedMatrix(NamedTuple):
    """One matrix's result: the kept weights, the updated weight (None: the values stay) and its state (None: the
    method has none to draw other sparsities from)."""

    kept: torch.Tensor
    weight: torch.Tensor | None = None
    state: torch.Tensor | None = None


@dataclass(frozen=True)
class MatrixPruner:
    """How a one-shot method prunes one matrix: the calibration statistics it reads (`none`, `norms` or `hessian`),
    `prune(weight, statistics, sparsity, pattern) -> PrunedMatrix`, and `score(weight, statistics)`: the per-weight
    importance that structured pruning sums per head and FFN neuron (None: no structured form)."""

    statistics: str
    prune: Callable[[torch.Tensor, InputStatistics | None, float, Pattern], PrunedMatrix]
    score: Callable[[torch.Tensor, InputStatistics | None], torch.Tensor] | None = None


def _layer_groups(targets: Sequence[Target]) -> list[tuple[int | None, list[Target]]]:
    """Targets by encoder layer in order, then those outside the layers (pooler, classifier) last."""
    groups: dict[int | None, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.layer, []).append(target)
    return sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or 0))


@torch.no_grad()
def prune_one_shot(model: torch.nn.Module, targets: Sequence[Target], pruner: MatrixPruner,
                   sparsities: Mapping[str, float], pattern: Pattern, batches: Sequence[Batch], *,
                   granularity: str = "weight") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Prune `model` in place, layer by layer: each encoder layer's statistics come from calibration passes through
    the layers already pruned (and updated), as SparseGPT and Wanda do (targets outside the layers come last).

    At `head`, `neuron` or `structured` granularity each encoder layer prunes its lowest-scoring heads and/or FFN
    neurons (the fraction its sparsity gives; `pruner.score` summed over each unit's weights) and the targets
    outside the layers stay dense, so the ticket exports compactly. Returns the ticket and the state (None if
    the method has none)."""
    require_plain(model)
    modules = dict(model.named_modules())
    blocks = find_encoder_layers(model)
    structured = {i: layer for i, layer in enumerate(encoder_layers(model))} if granularity != "weight" else {}
    ticket: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for layer, group in _layer_groups(targets):
        stats = None
        if pruner.statistics != "none":
            stats = input_statistics(model, batches, {t.name: modules[t.module_name] for t in group},
                                     hessian=pruner.statistics == "hessian",
                                     stop_after=blocks[layer] if layer is not None else None)
        if layer in structured:
            results = _prune_units(structured[layer], modules, pruner, stats, sparsities, granularity)
        elif granularity != "weight":
            results = {}  # outside the blocks a structured ticket stays dense
        else:
            results = {t.name: pruner.prune(modules[t.module_name].weight.detach(),
                                            stats[t.name] if stats else None, sparsities[t.name], pattern)
                       for t in group}
        for target in group:
            weight = modules[target.module_name].weight
            result = results.get(target.name) or PrunedMatrix(torch.ones(target.shape, dtype=torch.bool))
            if result.weight is not None:
                weight.copy_(result.weight)
            weight.mul_(result.kept.to(weight.device, weight.dtype))
            ticket[target.name] = result.kept.cpu()
            if result.state is not None:
                state[target.name] = result.state.float().cpu()
    return ticket, (state or None)


def _prune_units(layer: EncoderLayer, modules: Mapping[str, torch.nn.Module], pruner: MatrixPruner,
                 stats: Mapping[str, InputStatistics] | None, sparsities: Mapping[str, float],
                 granularity: str) -> dict[str, PrunedMatrix]:
    """One encoder layer at a structured granularity: its head units and/or FFN neurons with the lowest summed
    score are pruned (a unit's score: `pruner.score` summed over every matrix slice it spans, fused projections
    and gated MLPs included); the state is each unit's score, expanded over its weights."""
    if pruner.score is None:
        raise SubnetsError("This one-shot method has no structured form; expected --granularity weight.")
    targets = {s.target.name: s.target for s in (*layer.heads, *layer.neurons)}
    scores = {name: pruner.score(modules[t.module_name].weight.detach(), stats[name] if stats else None)
              for name, t in targets.items()}
    kept = {name: torch.ones(t.shape, dtype=torch.bool) for name, t in targets.items()}
    state = {name: torch.zeros(t.shape) for name, t in targets.items()}
    for slices, applies in ((layer.heads, granularity in ("head", "structured")),
                            (layer.neurons, granularity in ("neuron", "structured"))):
        if not slices:
            continue
        units = unit_scores(slices, scores).cpu()
        units_kept = lowest_pruned(units, sparsities[slices[0].target.name] if applies else 0.0)
        for s in slices:  # write each unit's verdict and score over its rows (axis 0) or columns (axis 1)
            lines = torch.arange(s.start, s.start + s.units * s.width)
            dropped = lines[~units_kept.repeat_interleave(s.width)]
            (kept[s.target.name] if s.axis == 0 else kept[s.target.name].T)[dropped] = False
            (state[s.target.name] if s.axis == 0 else state[s.target.name].T)[lines] = \
                units.repeat_interleave(s.width)[:, None]
    return {name: PrunedMatrix(kept[name], state=state[name]) for name in targets}


def owl_layer_sparsities(model: torch.nn.Module, targets: Sequence[Target], batches: Sequence[Batch], target: float,
                         *, threshold: float = OWL_THRESHOLD, lam: float = OWL_LAMBDA) -> dict[str, float]:
    """Per target, its encoder layer's OWL sparsity, from the Wanda scores of the dense model on the calibration
    batches (targets outside the layers keep `target`)."""
    modules = dict(model.named_modules())
    layered = [t for t in targets if t.layer is not None]
    stats = input_statistics(model, batches, {t.name: modules[t.module_name] for t in layered})
    groups = [(layer, group) for layer, group in _layer_groups(layered)]
    ratios = [outlier_ratio([wanda_scores(modules[t.module_name].weight.detach(), stats[t.name].norms)
                             for t in group], threshold) for _, group in groups]
    per_layer = dict(zip([layer for layer, _ in groups], owl_sparsities(ratios, target, lam)))
    return {t.name: per_layer[t.layer] if t.layer is not None else target for t in targets}


LAYER_BUDGETS = ("uniform", "owl")
CALIBRATION_PERTURBS = ("none", "freelb")
RESULT_FILE = "oneshot_metrics.json"  # in checkpoint-best/: the metrics of the finished one-shot run


@dataclass
class OneShotArguments:
    config_group = "SearchArguments"
    _argument_group_name = "method: one-shot (magnitude, wanda, sparsegpt)"  # its --help section

    pattern: str = field(default="unstructured", metadata={
        "help": "One-shot methods: unstructured | N:M (keep N of every M consecutive input weights, e.g. 2:4, 4:8)."})
    layer_budget: Literal[LAYER_BUDGETS] = field(default="uniform", metadata={
        "help": "One-shot methods: uniform | owl (outlier-weighted layer sparsities, Yin et al. 2024)."})
    owl_threshold: float = field(default=OWL_THRESHOLD, metadata={"help": "OWL: outlier threshold M (paper: 5)."})
    owl_lambda: float = field(default=OWL_LAMBDA, metadata={
        "help": "OWL: layer sparsities lie in target +- lambda (paper: 0.08)."})
    calibration_samples: int = field(default=128, metadata={
        "help": "Wanda, SparseGPT, OWL: calibration examples drawn (with --seed) from the training split."})
    calibration_file: str | None = field(default=None, metadata={
        "help": "Calibrate on this .txt/CSV/TSV/JSONL of texts instead (an attack JSONL: its 'perturbed' column)."})
    calibration_max_length: int = field(default=128, metadata={"help": "Token limit of --calibration_file texts."})
    calibration_perturb: Literal[CALIBRATION_PERTURBS] = field(default="none", metadata={
        "help": "none | freelb: statistics over FreeLB-perturbed embeddings (--adv_steps, --adv_lr, ...)."})

    def __post_init__(self) -> None:
        parse_pattern(self.pattern)
        check_choice("layer_budget", self.layer_budget, LAYER_BUDGETS)
        check_choice("calibration_perturb", self.calibration_perturb, CALIBRATION_PERTURBS)
        if self.calibration_samples <= 0:
            raise SubnetsError(f"--calibration_samples is {self.calibration_samples}; expected a positive number.")


def _training_choices(groups: OptionGroups) -> dict[str, str]:
    """The training choices a one-shot run would ignore (it trains nothing): option -> value."""
    objective, selective = groups[ObjectiveArguments], groups[SelectiveArguments]
    return {"adversary": objective.adversary, "debias": objective.debias, "selective": selective.selective}


def _check(search: SharedSearchOptions, pruner: MatrixPruner, options: OneShotArguments,
           training: dict[str, str]) -> None:
    """Refuse options that would have no effect or contradict each other."""
    for option, value in training.items():
        if value != "none":
            raise SubnetsError(f"--method {search.method} trains nothing, so --{option} {value} would have no effect; "
                               f"expected --{option} none (robust calibration: --calibration_perturb freelb).")
    pattern = parse_pattern(options.pattern)
    fixed = pattern_sparsity(pattern)
    if fixed is not None and abs(fixed - search.target_sparsity) > 1e-9:
        raise SubnetsError(f"--pattern {options.pattern} prunes exactly {fixed:g}; expected --target_sparsity "
                           f"{fixed:g}.")
    if options.layer_budget == "owl" and pattern is not None:
        raise SubnetsError("--layer_budget owl sets layer sparsities of an unstructured mask; expected --pattern "
                           "unstructured.")
    if search.scope == "global" and (pruner.statistics != "none" or pruner.score is None or pattern is not None or
                                     options.layer_budget != "uniform"):
        raise SubnetsError(f"--scope global ranks |W| over all matrices; expected --scope per_matrix with "
                           f"--method {search.method}, a --pattern or --layer_budget owl.")
    if search.granularity != "weight" and (pruner.score is None or pattern is not None or
                                           options.layer_budget != "uniform" or search.scope == "global"):
        raise SubnetsError(f"--granularity {search.granularity} prunes whole heads and neurons by their summed "
                           f"scores (magnitude, wanda); expected --granularity weight with --method {search.method}, "
                           f"a --pattern, --layer_budget owl or --scope global.")
    calibrated = pruner.statistics != "none" or options.layer_budget == "owl"
    if not calibrated and (options.calibration_file or options.calibration_perturb != "none"):
        raise SubnetsError(f"--method {search.method} reads no calibration data here; expected no --calibration_file "
                           f"or --calibration_perturb (or --layer_budget owl).")


def _calibration(context: SearchContext, options: OneShotArguments, device: torch.device) -> list[dict]:
    if options.calibration_file:
        data = read_calibration_file(options.calibration_file, context.task, context.tokenizer,
                                     options.calibration_max_length)
    else:
        data = sample_calibration(context.train, options.calibration_samples, context.seed)
    batches = calibration_batches(data, context.tokenizer, device)
    if options.calibration_perturb == "freelb":
        batches = freelb_perturb(context.model, batches, context.options[AscentArguments].config(), context.seed)
    return batches


@dataclass(frozen=True)
class OneShotSearch:
    """The builder of a one-shot method: calling it prunes (`search_one_shot`); `check(search, options)` refuses
    contradicting options before a stage writes anything (`subnets.masking.search.check_search`)."""

    pruner: MatrixPruner

    def check(self, search: SharedSearchOptions, options: OptionGroups) -> None:
        _check(search, self.pruner, options[OneShotArguments], _training_choices(options))

    def __call__(self, context: SearchContext) -> FoundMask:
        return search_one_shot(context, self.pruner)


def search_one_shot(context: SearchContext, pruner: MatrixPruner) -> FoundMask:
    """Prune once with `pruner` (layer by layer through the pruned layers), evaluate, save checkpoint-best/."""
    options, search, out = context.options[OneShotArguments], context.search, context.output_dir
    _check(search, pruner, options, _training_choices(context.options))
    best = out / BEST
    if (best / RESULT_FILE).is_file() and (best / BINARY_FILE).is_file():
        return _finished(context, best)
    calibrated = pruner.statistics != "none" or options.layer_budget == "owl"
    if calibrated and options.calibration_file is None and context.train is None:
        raise SubnetsError("One-shot calibration needs the training split or a --calibration_file; got neither.")
    trainer = context.make_trainer(out, [])  # puts the model on the run's device
    start, cpu_start = time.perf_counter(), time.process_time()
    pattern = parse_pattern(options.pattern)
    batches = _calibration(context, options, trainer.device) if calibrated else []
    target = search.target_sparsity
    if options.layer_budget == "owl":
        sparsities = owl_layer_sparsities(context.model, context.targets, batches, target,
                                          threshold=options.owl_threshold, lam=options.owl_lambda)
    else:
        sparsities = {t.name: target for t in context.targets}
    if search.scope == "global":
        ticket, state = _global(context, pruner, target)
    else:
        ticket, state = prune_one_shot(context.model, context.targets, pruner, sparsities, pattern, batches,
                                       granularity=search.granularity)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    metrics = {**trainer.evaluate(), "prune_seconds": seconds, "prune_cpu_seconds": cpu_seconds,
               "pattern": format_pattern(pattern), "layer_budget": options.layer_budget}
    if options.layer_budget == "owl":
        metrics["layer_sparsities"] = sorted({t.layer: sparsities[t.name] for t in context.targets
                                              if t.layer is not None}.items())

    def add_files(directory: Path) -> None:
        save_mask_file(directory / BINARY_FILE, ticket)
        if state is not None:
            save_mask_file(directory / STATE_FILE, state)
        atomic_write_json(directory / RESULT_FILE, metrics)

    DirectoryCheckpointer(out).save_model(BEST, context.model, context.tokenizer, add_files)
    return FoundMask(ticket, state, metrics, weights=str(best.resolve()))


def _global(context: SearchContext, pruner: MatrixPruner,
            sparsity: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One ranking of the method's scores over all matrices (magnitude with --scope global)."""
    modules = dict(context.model.named_modules())
    state = {t.name: pruner.score(modules[t.module_name].weight.detach(), None) for t in context.targets}
    ticket = draw_mask(state, sparsity, scope="global")
    with torch.no_grad():
        for t in context.targets:
            weight = modules[t.module_name].weight
            weight.mul_(ticket[t.name].to(weight.device, weight.dtype))
    return {n: m.cpu() for n, m in ticket.items()}, {n: s.float().cpu() for n, s in state.items()}


def _finished(context: SearchContext, best: Path) -> FoundMask:
    """The result a finished one-shot run saved, with its pruned weights loaded into the model (a re-run with the
    same options prunes nothing again)."""
    saved = type(context.model).from_pretrained(best, trust_remote_code=False)
    context.model.load_state_dict(saved.state_dict())
    names = [t.name for t in context.targets]  # the targets' order, so that the store sees the same records

    def read(file: str) -> dict[str, torch.Tensor]:
        saved = load_file(best / file)
        return {name: saved[name] for name in names if name in saved}

    state = read(STATE_FILE) if (best / STATE_FILE).is_file() else None
    metrics = json.loads((best / RESULT_FILE).read_text())
    return FoundMask(read(BINARY_FILE), state, metrics, weights=str(best.resolve()))
