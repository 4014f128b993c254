"""Stage 2: search a mask on a (fine-tuned or pre-trained) model with one of the mask families.

`search_mask` trains the chosen family with the shared `Trainer`, then puts the real-valued mask state (to
draw tickets of any sparsity in stage 3) and the evaluated binary mask into the mask store, and lists their ids
in `<output_dir>/masks.json`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
import torch
from transformers.utils import logging

from subnets.masks import MaskStore

from ..config import TrainingArguments
from ..distributed import is_main_process
from ..errors import SubnetsError
from ..io import atomic_write_json
from ..registry import OptionGroups, check_choice, option_groups
from ..sparsity import sparsity_report
from ..store_options import MaskStoreArguments
from ..targets import Target, find_targets
from ..tasks import TaskSpec
from ..training import Callback, Objective, OptimizerFactory, Trainer
from .draw import SCOPES
from .layout import GRANULARITIES, head_counts, layout_for
from .methods import MASK_METHODS, MaskMethodName
from .oneshot import OneShotArguments
from .search_context import FoundMask, SearchContext
from .sources import RUN_MASKS_FILE, record_meta

logger = logging.get_logger("subnets")

WEIGHT_ONLY_METHODS = ("imp", "random")
"""Methods without a structured form (the one-shot methods check their own granularity, OneShotSearch.check)."""


@dataclass
class SearchArguments:
    """The options every mask method shares; each method's own options are in its option group
    (`subnets.masking.methods`), parsed beside this one and recorded in the same run-config section."""
    _argument_group_name = "method: mask search (every method)"  # its --help section

    method: MaskMethodName = field(default="hard_concrete", metadata={"help": " | ".join(MASK_METHODS)})
    target_sparsity: float = field(default=0.5, metadata={
        "help": "Target fraction of pruned target weights (hard_concrete under --controller fixed only records it)."})
    granularity: Literal[GRANULARITIES] = field(default="weight", metadata={
        "help": "weight | head | neuron | structured"})
    mask_pooler: bool = field(default=False, metadata={
        "help": "Count and mask the pooler (Robust Tickets; a masked pooler blocks compact export)."})
    mask_classifier: bool = field(default=False, metadata={"help": "Count and mask the classifier (SRNets)."})
    scope: Literal[SCOPES] = field(default="per_matrix", metadata={
        "help": "Ranking for scores/IMP/baselines: per_matrix | global"})
    mask_lr: float = field(default=0.1, metadata={"help": "Learning rate of log_alpha / scores."})

    def __post_init__(self) -> None:
        """Reject bad choices while parsing, before a stage creates its run directory."""
        check_choice("method", self.method, MASK_METHODS)
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("scope", self.scope, SCOPES)
        if not 0.0 <= self.target_sparsity < 1.0:
            raise SubnetsError(f"--target_sparsity {self.target_sparsity} is out of range; expected a fraction in [0, 1).")


def search_arguments() -> list[type]:
    """The argument dataclasses stage 2 adds to the training stages': shared options and every method's group."""
    return [SearchArguments, *option_groups(MASK_METHODS)]


def search_targets(model: torch.nn.Module, search: SearchArguments) -> list[Target]:
    """The targets the search masks and counts: at a structured granularity, those it has heads or neurons in."""
    targets = find_targets(model, pooler=search.mask_pooler, classifier=search.mask_classifier)
    if search.granularity == "weight":
        return targets
    counts = head_counts(model, search.granularity)
    kept = [t for t in targets if layout_for(t, search.granularity, *counts) is not None]
    left_out = sorted({t.kind for t in targets if t.layer is None} - {t.kind for t in kept})
    if left_out:
        logger.warning(f"--granularity {search.granularity} masks attention heads and FFN neurons only: the "
                       f"{' and '.join(left_out)} stays unmasked and is not counted in the sparsity.")
    return kept


def check_search(search: SearchArguments, options: OptionGroups) -> None:
    """Refuse options the chosen method contradicts or does not read, and let the method's own check refuse or warn
    (a stage calls this before writing)."""
    method = MASK_METHODS[search.method]
    if search.granularity != "weight" and search.method in WEIGHT_ONLY_METHODS:
        raise SubnetsError(f"--method {search.method} masks single weights only; expected --granularity weight with "
                           f"it, or a structured method (hard_concrete, scores, magnitude, wanda).")
    if OneShotArguments not in method.options and options[OneShotArguments] != OneShotArguments():
        raise SubnetsError(f"--pattern, --layer_budget and the calibration options apply to the one-shot methods "
                           f"(magnitude, wanda, sparsegpt), not --method {search.method}; expected their defaults "
                           f"(stage 3 draws an N:M ticket from any mask state with --pattern).")
    check = getattr(method.build, "check", None)  # builders that check their options: OneShotSearch, hard-concrete's
    if check is not None:
        check(search, options)


def search_mask(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, train: datasets.Dataset,
    eval_dataset: datasets.Dataset | None, training_args: TrainingArguments, search: SearchArguments, *,
    source: str, options: OptionGroups | None = None, mask_store: MaskStoreArguments | None = None,
    objective: Objective | None = None, callbacks: Sequence[Callback] = (),
    optimizer_factory: OptimizerFactory | None = None,
) -> dict[str, Any]:
    """Run the search with the method's option groups from `options` (defaults for those not given) and put the
    masks in `mask_store`; returns HF-style metrics plus `sparsity`, `sparsity_denominator` and the mask ids."""
    options = options or OptionGroups()
    check_search(search, options)
    method = MASK_METHODS[search.method]
    targets = search_targets(model, search)

    def make_trainer(output_dir: Path, extra: Sequence[Callback]) -> Trainer:
        args = dataclasses.replace(training_args, output_dir=str(output_dir))
        return Trainer(model, args, task, train, eval_dataset, tokenizer, objective=objective,
                       callbacks=[*callbacks, *extra], optimizer_factory=optimizer_factory)

    out = Path(training_args.output_dir)
    found = method.build(SearchContext(model, targets, search, options, source, out, make_trainer, train=train,
                                       tokenizer=tokenizer, task=task, seed=training_args.seed))
    report = sparsity_report({n: m.bool().cpu() for n, m in found.ticket.items()}, targets)
    config = {**dataclasses.asdict(search), **options.used_by(method)}
    ids = _store(out, model, found, config, task, source, training_args.seed, mask_store or MaskStoreArguments())
    return {**found.metrics, "sparsity": report.global_sparsity, "sparsity_denominator": report.denominator,
            "target_sparsity": search.target_sparsity, **off_target(report.global_sparsity, search),
            "mask_ids": ids, "method": search.method}


OFF_TARGET = 0.05
"""How far (in sparsity, absolute) a search's ticket may end from --target_sparsity before it is flagged."""


def off_target(sparsity: float, search: SearchArguments) -> dict[str, str]:
    """{"sparsity_warning": message} (also logged) when the ticket ends more than OFF_TARGET from the target."""
    if abs(sparsity - search.target_sparsity) <= OFF_TARGET:
        return {}
    message = (f"the ticket is {100 * sparsity:.1f}% sparse against --target_sparsity "
               f"{100 * search.target_sparsity:.1f}%: the search ended far from its target (hard-concrete: train "
               f"longer, raise --mask_lr or the L0 weight, or use --controller lagrangian).")
    logger.warning(f"warning: {message}")
    return {"sparsity_warning": message}


def _store(out: Path, model: torch.nn.Module, found: FoundMask, config: dict[str, Any], task: TaskSpec,
           source: str, seed: int, mask_store: MaskStoreArguments) -> dict[str, str]:
    """Put the ticket (and state) in the store and list their ids in masks.json: main process only ({} elsewhere)."""
    if not is_main_process():
        return {}
    store = MaskStore(mask_store.root)
    meta = record_meta(model, task.name, config["method"], model_name=source, parent=source, seed=seed,
                       step=found.metrics.get("best_step"), target_sparsity=config["target_sparsity"],
                       granularity=config["granularity"], run_dir=str(out.resolve()), config=config)
    if "pattern" in config:  # one-shot methods: the store checks the declared N:M pattern
        meta["pattern"] = config["pattern"]
    if found.weights is not None:
        meta["weights"] = found.weights  # the ticket's own weights (stage 3 --init finetuned retrains them)
    ids = {"ticket": store.put({n: m.bool().cpu() for n, m in found.ticket.items()}, dict(meta, kind="ticket"))}
    if found.state is not None:
        ids["state"] = store.put({n: s.float().cpu() for n, s in found.state.items()}, dict(meta, kind="state"))
    atomic_write_json(out / RUN_MASKS_FILE, {**ids, "store": str(store.root.resolve())})
    return ids
