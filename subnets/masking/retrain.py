"""Stage 3: draw a ticket at an exact sparsity, apply it to an initialisation and retrain with the mask fixed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
import torch

from subnets.masks import MaskStore
from subnets.masks.checkpoint import save_sparse_checkpoint

from ..config import TrainingArguments
from ..distributed import is_main_process
from ..errors import SubnetsError
from ..models import load_classifier
from ..registry import check_choice
from ..runs import BEST
from ..sparsity import UNSTRUCTURED, nm_mask, parse_pattern, pattern_sparsity, pattern_violations, sparsity_report
from ..store_options import MaskStoreArguments
from ..targets import targets_from_names
from ..tasks import TaskSpec
from ..training import Callback, Objective, OptimizerFactory, Trainer
from .callbacks import FixedMaskCallback
from .draw import SCOPES, draw_mask, draw_units
from .fixed import FixedMask
from .layout import encoder_layers
from .sources import init_path, load_mask, record_meta


@dataclass
class RetrainArguments:
    _argument_group_name = "method: ticket (stage 3)"  # its --help section
    mask: str = field(default="", metadata={"help": "Stage-2 run directory, mask store id, or safetensors file."})
    init: str = field(default="pretrained", metadata={"help": "pretrained | finetuned | <stage-1 step>"})
    sparsity: float | None = field(default=None, metadata={"help": "Draw at this sparsity (default: the mask's own)."})
    draw_scope: Literal[SCOPES] = field(default="global", metadata={
        "help": "Ranking when drawing: global | per_matrix"})
    pattern: str = field(default=UNSTRUCTURED, metadata={
        "help": "unstructured | N:M: draw N of every M consecutive input weights from the mask state (e.g. 2:4)."})

    def __post_init__(self) -> None:
        """Reject bad values while parsing, before a stage creates its run directory."""
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise SubnetsError(f"--sparsity {self.sparsity} is out of range; expected a fraction in [0, 1) "
                               f"(1.0 would prune every weight).")
        check_choice("draw_scope", self.draw_scope, SCOPES)
        fixed = pattern_sparsity(parse_pattern(self.pattern))
        if fixed is not None and self.sparsity is not None and abs(self.sparsity - fixed) > 1e-9:
            raise SubnetsError(f"--pattern {self.pattern} prunes exactly {fixed:g}; expected no --sparsity or "
                               f"--sparsity {fixed:g}.")


def read_mask(retrain: RetrainArguments, mask_store: MaskStoreArguments | None = None,
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The mask `--mask` names and its metadata: the state when a ticket is to be drawn, else the stored ticket (a
    mask id is looked up in `mask_store`)."""
    if not retrain.mask:
        raise SubnetsError("No --mask given; expected a stage-2 run directory, a mask store id or a mask file.")
    root = (mask_store or MaskStoreArguments()).root
    drawing = retrain.sparsity is not None or parse_pattern(retrain.pattern) is not None
    return load_mask(retrain.mask, root, prefer="state" if drawing else "ticket")


def ticket_from(retrain: RetrainArguments, mask: dict[str, torch.Tensor], meta: dict[str, Any],
                model: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The binary ticket: drawn from the mask state at `--sparsity` (whole heads / neurons for a state of a
    structured search, which needs `model` for their layout), or the stored binary mask as is."""
    pattern = parse_pattern(retrain.pattern)
    binary = all(t.dtype == torch.bool for t in mask.values())
    granularity = meta.get("granularity", "weight")
    if pattern is not None:
        if granularity != "weight" and not binary:
            raise SubnetsError(f"Mask '{retrain.mask}' is a {granularity} state, drawn as whole heads and neurons; "
                               f"--pattern {retrain.pattern} needs a --granularity weight state.")
        return _pattern_ticket(mask, binary, pattern, retrain)
    if retrain.sparsity is None:
        if not binary:
            raise SubnetsError(f"Mask '{retrain.mask}' is a real-valued state; expected --sparsity to draw a ticket from it.")
        return mask
    state = {n: t.float() for n, t in mask.items()}
    if granularity == "weight":
        return draw_mask(state, retrain.sparsity, scope=retrain.draw_scope)
    if model is None:
        raise SubnetsError(f"Mask '{retrain.mask}' is a {granularity} state; drawing its whole heads and neurons "
                           f"needs the model (its layout).")
    return draw_units(state, retrain.sparsity, encoder_layers(model), granularity, scope=retrain.draw_scope)


def draw_ticket(retrain: RetrainArguments, mask_store: MaskStoreArguments | None = None,
                model: torch.nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """`read_mask` then `ticket_from`: the binary ticket and the mask's metadata."""
    mask, meta = read_mask(retrain, mask_store)
    return ticket_from(retrain, mask, meta, model), meta


def _pattern_ticket(mask: dict[str, torch.Tensor], binary: bool, pattern: tuple[int, int],
                    retrain: RetrainArguments) -> dict[str, torch.Tensor]:
    """An N:M ticket: the N highest state values of every group of M consecutive input weights, or a stored
    binary ticket that already holds the pattern (SparseGPT's, which has no state)."""
    if not binary:
        return {name: nm_mask(state.float(), *pattern, name=name) for name, state in mask.items()}
    bad = pattern_violations(mask, pattern)
    if bad:
        raise SubnetsError(f"Mask '{retrain.mask}' is a binary ticket without the {retrain.pattern} pattern "
                           f"({bad[0]}); expected a mask state to draw it from (hard-concrete, scores, IMP, "
                           f"magnitude, Wanda).")
    return mask


def load_initialisation(source: str, init: str, label_names: Sequence[str], weights: str | None = None,
                        ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Pre-trained weights with a fresh classifier, the fine-tuned weights, or a stage-1 step snapshot.

    `weights`: the folder a ticket's record names as its own weights (a one-shot run's checkpoint-best/, e.g.
    SparseGPT's updated weights); `finetuned` then starts from them."""
    if init == "finetuned" and weights is not None:
        if not Path(weights, "config.json").is_file():
            raise SubnetsError(f"The mask's weights {weights} are gone; expected the one-shot run's checkpoint-best/ "
                               f"(or --init pretrained).")
        return load_classifier(weights, label_names)
    path, fresh_head = init_path(source, init)
    return load_classifier(path, label_names, fresh_head=fresh_head)


def ticket_trainer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ticket: dict[str, torch.Tensor], task: TaskSpec,
    train: datasets.Dataset, eval_dataset: datasets.Dataset | None, training_args: TrainingArguments, *,
    objective: Objective | None = None, callbacks: Sequence[Callback] = (),
    optimizer_factory: OptimizerFactory | None = None,
) -> Trainer:
    """A Trainer for `model` with `ticket` applied and kept fixed (raises if the ticket does not fit the model)."""
    fixed = FixedMask(model, ticket)
    return Trainer(model, training_args, task, train, eval_dataset, tokenizer, objective=objective,
                   callbacks=[*callbacks, FixedMaskCallback(fixed)], optimizer_factory=optimizer_factory)


def retrain_ticket(trainer: Trainer, ticket: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Retrain with the ticket fixed (see `ticket_trainer`); metrics plus the actual `sparsity` over its targets."""
    metrics = trainer.train()
    targets = targets_from_names({n: tuple(m.shape) for n, m in ticket.items()})
    report = sparsity_report({n: m.bool().cpu() for n, m in ticket.items()}, targets)
    return {**metrics, "sparsity": report.global_sparsity, "sparsity_denominator": report.denominator}


def store_ticket(out: Path, tokenizer: PreTrainedTokenizerBase, ticket: dict[str, torch.Tensor], task: TaskSpec,
                 retrain: RetrainArguments, mask_meta: dict[str, Any], seed: int, model_name: str,
                 mask_store: MaskStoreArguments | None = None) -> str | None:
    """Put the drawn ticket in the mask store and save `checkpoint-best-sparse/`: the best retrained model in
    sparse-aware form (kept values + bit mask referencing the store record). Main process only; returns the id."""
    if not is_main_process():
        return None
    best, _ = load_classifier(out / BEST)
    parent = mask_meta.get("id") or mask_meta.get("file") or retrain.mask
    meta = record_meta(best, task.name, mask_meta.get("method", "drawn"), model_name=model_name, parent=str(parent),
                       seed=seed, init=retrain.init,
                       target_sparsity=retrain.sparsity if retrain.sparsity is not None else
                       pattern_sparsity(parse_pattern(retrain.pattern)), draw_scope=retrain.draw_scope,
                       pattern=retrain.pattern, granularity=mask_meta.get("granularity", "weight"),
                       run_dir=str(out.resolve()))
    mask_id = MaskStore((mask_store or MaskStoreArguments()).root).put(
        {n: m.bool().cpu() for n, m in ticket.items()}, dict(meta, kind="ticket"))
    save_sparse_checkpoint(best, ticket, out / "checkpoint-best-sparse", tokenizer=tokenizer, mask_id=mask_id)
    return mask_id

