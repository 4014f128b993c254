"""What the one-shot methods (magnitude, Wanda, SparseGPT) share: their options (pattern, layer budget,
calibration) and the search that prunes once, evaluates, and saves the pruned model as the run's checkpoint-best/.

No training: a finished run's directory holds its ticket, state and metrics in checkpoint-best/, and a re-run with
the same options (the stage refuses other options) reads them back instead of pruning again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file

from ...checkpointing import BEST, DirectoryCheckpointer
from ...errors import SubnetsError
from ...io import atomic_write_json
from ...objectives import AscentArguments, ObjectiveArguments
from ...registry import OptionGroups, check_choice
from ...selective import SelectiveArguments
from ..calibration import calibration_batches, freelb_perturb, read_calibration_file, sample_calibration
from ..callbacks import BINARY_FILE, STATE_FILE, save_mask_file
from ..draw import draw_mask
from ...sparsity import format_pattern, parse_pattern, pattern_sparsity
from ..oneshot import OWL_LAMBDA, OWL_THRESHOLD, MatrixPruner, owl_layer_sparsities, prune_one_shot
from .context import FoundMask, SearchContext, SharedSearchOptions

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
