"""What a mask method's builder (`subnets.masking.methods`) receives (`SearchContext`) and returns (`FoundMask`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedTokenizerBase
import torch
from safetensors.torch import load_file

from ..registry import OptionGroups
from ..runs import BEST
from ..targets import Target
from ..tasks import TaskSpec
from ..training import Callback, Trainer
from .base import binary_mask
from .callbacks import BINARY_FILE, STATE_FILE, MaskSearchCallback


class SharedSearchOptions(Protocol):
    """The options of `subnets.masking.search.SearchArguments` that every method reads (typed here so that the
    methods do not import the stage module that imports them)."""

    target_sparsity: float
    granularity: str
    scope: str
    mask_lr: float


class FoundMask(NamedTuple):
    """A search's result: the binary ticket, the real-valued state to draw other sparsities from (None: the
    method has none), the HF-style metrics, and the folder of the weights the ticket belongs to when the method
    changed them (SparseGPT) or saved them (`weights`, recorded in the ticket's metadata; None: the source's)."""

    ticket: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor] | None
    metrics: dict[str, Any]
    weights: str | None = None


@dataclass
class SearchContext:
    """The model with its prunable targets, the options shared by every method (`search`), the method's own option
    groups (`options[HardConcreteArguments]`, ...), the model it started from and a trainer factory
    (`make_trainer(output_dir, extra_callbacks)`: the stage's objective, callbacks and optimizer plus `extra`);
    one-shot methods also read the training split, tokenizer, task and seed (calibration data)."""

    model: torch.nn.Module
    targets: list[Target]
    search: SharedSearchOptions
    options: OptionGroups
    source: str
    output_dir: Path
    make_trainer: Callable[[Path, Sequence[Callback]], Trainer]
    train: datasets.Dataset | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    task: TaskSpec | None = None
    seed: int = 0

    def train_mask(self, control: MaskSearchCallback) -> FoundMask:
        """Train a parametrized mask under its callback; the ticket and state of checkpoint-best (the final masks
        if no checkpoint holds them)."""
        metrics = self.make_trainer(self.output_dir, [control]).train()
        best = self.output_dir / BEST
        ticket = load_file(best / BINARY_FILE) if (best / BINARY_FILE).exists() else binary_mask(control.masks)
        state = load_file(best / STATE_FILE) if (best / STATE_FILE).exists() else None
        return FoundMask(ticket, state, metrics)
