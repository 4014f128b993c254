"""Stage 2: search a mask on a (fine-tuned or pre-trained) model with one of the mask families.

`search_mask` trains the chosen family with the shared `Trainer`, then puts the real-valued mask state (to
draw tickets of any sparsity in stage 3) and the evaluated binary mask into the mask store, and lists their ids
in `<output_dir>/masks.json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import datasets
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from masks import MaskStore
from masks.store import check_store_root
from masks.store import store_root as mask_store_root

from ..config import TrainingArguments
from ..errors import SubnetsError
from ..io import atomic_write_json
from ..models import load_classifier
from ..sparsity import sparsity_report
from ..targets import Target, find_targets
from ..tasks import TaskSpec
from ..training import Callback, Objective, OptimizerFactory, Trainer
from ..weights import apply_masks
from .base import binary_mask
from .baselines import magnitude_mask, random_mask, target_weights
from .callbacks import BINARY_FILE, STATE_FILE, FixedLambda, FixedMaskCallback, Lagrangian, ScoreSchedule
from .draw import SCOPES
from .fixed import FixedMask
from .hard_concrete import attach_hard_concrete
from .imp import imp_prune, imp_sparsity, rewind, snapshot
from .layout import GRANULARITIES
from .scores import SCORE_INITS, attach_scores
from .sources import RUN_MASKS_FILE, init_path, record_meta

METHODS = ("hard_concrete", "scores", "imp", "random", "magnitude")
CONTROLLERS = ("fixed", "lagrangian")
SCHEDULES = ("fixed", "cubic")


@dataclass
class SearchArguments:
    method: str = field(default="hard_concrete", metadata={"help": "|".join(METHODS)})
    target_sparsity: float = field(default=0.5, metadata={"help": "Target fraction of pruned target weights."})
    granularity: str = field(default="weight", metadata={"help": "weight | head | neuron | structured"})
    mask_pooler: bool = field(default=True, metadata={"help": "Count and mask the pooler (Robust Tickets)."})
    mask_classifier: bool = field(default=False, metadata={"help": "Count and mask the classifier (SRNets)."})
    scope: str = field(default="per_matrix", metadata={"help": "Ranking for scores/IMP/baselines: per_matrix | global"})
    mask_lr: float = field(default=0.1, metadata={"help": "Learning rate of log_alpha / scores."})
    mask_weight_decay: float = field(default=1e-6, metadata={"help": "Weight decay of log_alpha (Robust Tickets)."})
    controller: str = field(default="fixed", metadata={"help": "Hard-concrete L0 control: fixed | lagrangian"})
    l0_lambda: float = field(default=1.0, metadata={"help": "Fixed controller: final lambda of the L0 term."})
    lambda_ramp: tuple[float, float] = field(default=(0.1, 0.4), metadata={"help": "Fixed controller: ramp (fractions)."})
    lagrangian_lr: float = field(default=0.1, metadata={"help": "Lagrangian controller: multipliers' learning rate."})
    target_warmup: float = field(default=0.5, metadata={"help": "Lagrangian controller: target warm-up fraction."})
    score_init: str = field(default="hard", metadata={"help": "Score masks: hard | soft"})
    sparsity_schedule: str = field(default="fixed", metadata={"help": "Score masks: fixed | cubic"})
    initial_sparsity: float = field(default=0.0, metadata={"help": "Cubic schedule: starting sparsity."})
    schedule_window: tuple[float, float] = field(default=(0.0, 0.8), metadata={"help": "Cubic schedule: (t0, t1) fractions."})
    threshold_interval: int = field(default=10, metadata={"help": "Score masks: steps between threshold resets."})
    imp_rate: float = field(default=0.1, metadata={"help": "IMP: fraction of the remaining weights pruned per round."})
    imp_rewind: str = field(default="pretrained", metadata={"help": "IMP: pretrained | finetuned | <step> | none"})
    imp_prune_first: bool = field(default=False, metadata={"help": "IMP: prune at step 0 before the first training."})
    mask_seed: int = field(default=0, metadata={"help": "Seed of the random baseline."})
    mask_store: str | None = field(default=None, metadata={"help": "Mask store root ($SUBNETS_MASK_STORE, ./masks_store)."})

    def __post_init__(self) -> None:
        """Reject bad choices while parsing, before a stage creates its run directory."""
        choices = {"method": METHODS, "controller": CONTROLLERS, "sparsity_schedule": SCHEDULES,
                   "score_init": SCORE_INITS, "granularity": GRANULARITIES, "scope": SCOPES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise SubnetsError(f"Unknown --{name} '{getattr(self, name)}'; expected one of {', '.join(allowed)}.")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise SubnetsError(f"--target_sparsity {self.target_sparsity} is out of range; expected a fraction in [0, 1).")
        check_store_root(mask_store_root(self.mask_store))


def search_targets(model: torch.nn.Module, search: SearchArguments) -> list[Target]:
    return find_targets(model, pooler=search.mask_pooler, classifier=search.mask_classifier)


def search_mask(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, train: datasets.Dataset,
    eval_dataset: datasets.Dataset | None, training_args: TrainingArguments, search: SearchArguments, *,
    source: str, objective: Objective | None = None, callbacks: Sequence[Callback] = (),
    optimizer_factory: OptimizerFactory | None = None,
) -> dict[str, Any]:
    """Run the search; returns HF-style metrics plus `sparsity`, `sparsity_denominator` and the mask ids."""
    targets = search_targets(model, search)

    def make_trainer(output_dir: Path, extra: Sequence[Callback]) -> Trainer:
        args = dataclasses.replace(training_args, output_dir=str(output_dir))
        return Trainer(model, args, task, train, eval_dataset, tokenizer, objective=objective,
                       callbacks=[*callbacks, *extra], optimizer_factory=optimizer_factory)

    out = Path(training_args.output_dir)
    if search.method in ("hard_concrete", "scores"):
        control = _mask_callback(model, targets, search)
        metrics = make_trainer(out, [control]).train()
        best = out / "checkpoint-best"
        ticket = load_file(best / BINARY_FILE) if (best / BINARY_FILE).exists() else binary_mask(control.masks)
        state = load_file(best / STATE_FILE) if (best / STATE_FILE).exists() else None
    elif search.method == "imp":
        ticket, state, metrics = _run_imp(model, targets, search, source, make_trainer, out)
    else:
        if search.method == "random":
            ticket = random_mask(targets, search.target_sparsity, scope=search.scope, seed=search.mask_seed)
        else:
            ticket = magnitude_mask(model, targets, search.target_sparsity, scope=search.scope)
        state = {n: w.abs().float() for n, w in target_weights(model, targets).items()} \
            if search.method == "magnitude" else None
        apply_masks(model, ticket)
        metrics = make_trainer(out, []).evaluate()
    report = sparsity_report({n: m.bool().cpu() for n, m in ticket.items()}, targets)
    ids = _store(out, model, ticket, state, search, task, source, training_args.seed, metrics.get("best_step"))
    return {**metrics, "sparsity": report.global_sparsity, "sparsity_denominator": report.denominator,
            "mask_ids": ids, "method": search.method}


def _mask_callback(model: torch.nn.Module, targets: list[Target], search: SearchArguments) -> Callback:
    if search.method == "hard_concrete":
        gates = attach_hard_concrete(model, targets, granularity=search.granularity)
        if search.controller == "lagrangian":
            return Lagrangian(gates, target=search.target_sparsity, lr=search.mask_lr,
                              lagrangian_lr=search.lagrangian_lr, warmup_fraction=search.target_warmup)
        start, end = search.lambda_ramp
        return FixedLambda(gates, lam=search.l0_lambda, lr=search.mask_lr, weight_decay=search.mask_weight_decay,
                           ramp_start=start, ramp_end=end)
    cubic = search.sparsity_schedule == "cubic"
    initial = search.initial_sparsity if cubic else search.target_sparsity
    masks = attach_scores(model, targets, init=search.score_init, sparsity=initial, granularity=search.granularity)
    start, end = search.schedule_window if cubic else (0.0, 0.0)
    return ScoreSchedule(masks, final=search.target_sparsity, initial=initial, lr=search.mask_lr,
                         interval=search.threshold_interval, scope=search.scope, start=start, end=end)


def _run_imp(model, targets, search, source, make_trainer, out):
    """Rounds of (train, prune, rewind) -- or (prune, rewind, train) with `imp_prune_first` -- each with a new
    Trainer (fresh optimizer and schedule), until the round sparsity reaches the target."""
    rounds = max(1, math.ceil(math.log(1 - search.target_sparsity) / math.log(1 - search.imp_rate) - 1e-9))
    reference = _rewind_reference(model, search, source)
    mask, metrics = None, {}
    survived = {t.name: torch.zeros(t.shape) for t in targets}
    for round_index in range(1, rounds + 1):
        extra = [FixedMaskCallback(FixedMask(model, mask))] if mask is not None else []
        if not search.imp_prune_first:
            metrics = make_trainer(out / f"round-{round_index}", extra).train()
        mask = imp_prune(model, targets, mask, round_index, scope=search.scope, rate=search.imp_rate)
        for name, keep in mask.items():
            survived[name] += keep.cpu().float()
        if reference is not None:
            rewind(model, reference, mask)
        else:
            apply_masks(model, mask)
        if search.imp_prune_first:
            metrics = make_trainer(out / f"round-{round_index}", [FixedMaskCallback(FixedMask(model, mask))]).train()
    # State for drawing other sparsities: rounds survived, ties broken by the final magnitude (< 1).
    weights = target_weights(model, targets)
    state = {n: survived[n] + (weights[n].abs().float().cpu() / (weights[n].abs().max().float().cpu() + 1e-12)) * 0.5
             for n in survived}
    metrics["imp_rounds"] = rounds
    metrics["imp_round_sparsity"] = imp_sparsity(rounds, search.imp_rate)
    return mask, state, metrics


def _rewind_reference(model: torch.nn.Module, search: SearchArguments, source: str) -> dict[str, torch.Tensor] | None:
    if search.imp_rewind == "none":
        return None
    path, _ = init_path(source, search.imp_rewind)
    if path == source:
        return snapshot(model)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    reference, _ = load_classifier(path, labels)
    return {n: p.to(next(model.parameters()).device) for n, p in snapshot(reference).items()}


def _store(out: Path, model: torch.nn.Module, ticket, state, search: SearchArguments, task: TaskSpec, source: str,
           seed: int, step: int | None) -> dict[str, str]:
    store = MaskStore(mask_store_root(search.mask_store))
    meta = record_meta(model, task.name, search.method, model_name=source, parent=source, seed=seed, step=step,
                       target_sparsity=search.target_sparsity, granularity=search.granularity,
                       run_dir=str(out.resolve()), config=dataclasses.asdict(search))
    ids = {"ticket": store.put({n: m.bool().cpu() for n, m in ticket.items()}, dict(meta, kind="ticket"))}
    if state is not None:
        ids["state"] = store.put({n: s.float().cpu() for n, s in state.items()}, dict(meta, kind="state"))
    atomic_write_json(out / RUN_MASKS_FILE, {**ids, "store": str(store.root.resolve())})
    return ids
