"""Where a run's checkpoints live and how they are written and read: the Trainer's checkpointer seam.

`DirectoryCheckpointer`, the default, keeps them as folders of the output directory:
* `checkpoint-last/` (resumable): `model_state.safetensors` (the raw model state, parametrizations included),
  `trainer_state.json` (one plain dict: position, RNG, optimizer, scheduler and callback states) with its
  tensors in `trainer_state.safetensors` (see subnets/state_io.py). No pickle is written or read.
* `checkpoint-best/`, `checkpoint-step-<k>/`: plain `from_pretrained` folders (masks made permanent).
Every folder is written beside its place and swapped in (`io.atomic_dir`); `recover()` puts back a swap a crash
interrupted and removes temporary files a crashed writer left.

Another checkpointer (object storage, fewer files, ...) implements `Checkpointer` and is handed to the Trainer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no model classes
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import SubnetsError
from .io import atomic_dir, recover_interrupted_swap, remove_stale_temps
from .weights import save_plain_model
from .state_io import decode, dumps, encode, plain_tensors

LAST, BEST = "checkpoint-last", "checkpoint-best"
MODEL_STATE_FILE = "model_state.safetensors"
STATE_FILE = "trainer_state.json"  # also the name of the output directory's HF TrainerState
STATE_TENSORS_FILE = "trainer_state.safetensors"
LEGACY_STATE_FILE = "trainer_state.pt"  # a pickle written by earlier versions; never loaded

AddFiles = Callable[[Path], None]  # callbacks' `on_save`: adds files to a checkpoint folder before it is swapped in


def step_checkpoint(step: int) -> str:
    """The name of the plain snapshot taken at `step` (`--save_model_at_steps`)."""
    return f"checkpoint-step-{step}"


class Checkpointer(Protocol):
    """Writes and reads a run's checkpoints; called on the main process only."""

    def recover(self) -> None:
        """Before training: undo what a crash left half-written."""

    def save_last(self, state: Mapping[str, Any], model_state: Mapping[str, torch.Tensor], add_files: AddFiles) -> None:
        """The resumable checkpoint: the trainer state (plain values and tensors) and the raw model state."""

    def load_last(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """(trainer state, model state) of the resumable checkpoint; None if there is none."""

    def save_model(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                   add_files: AddFiles | None = None) -> None:
        """A plain model checkpoint called `name` (BEST or a `step_checkpoint`)."""

    def remove_model(self, name: str) -> None:
        """Delete the plain model checkpoint `name` (`--save_total_limit`); nothing if it is absent."""

    def location(self, name: str) -> str:
        """Where checkpoint `name` (LAST, BEST, a step) lives, for messages and trainer_state.json."""


class DirectoryCheckpointer:
    """Checkpoints as folders of `root` (the run's output directory); see the module docstring."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def recover(self) -> None:
        for name in (LAST, BEST):
            recover_interrupted_swap(self.root / name)
        remove_stale_temps(self.root)

    def save_last(self, state: Mapping[str, Any], model_state: Mapping[str, torch.Tensor], add_files: AddFiles) -> None:
        tree, tensors = encode(dict(state))
        with atomic_dir(self.root / LAST) as tmp:
            save_file(plain_tensors(dict(model_state)), tmp / MODEL_STATE_FILE)
            save_file(tensors, tmp / STATE_TENSORS_FILE)
            (tmp / STATE_FILE).write_text(dumps(tree), encoding="utf-8")
            add_files(tmp)

    def load_last(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        last = self.root / LAST
        if not last.exists():
            return None
        if (last / LEGACY_STATE_FILE).exists() and not (last / STATE_FILE).exists():
            raise SubnetsError(f"{last} was written by an older version of subnets ({LEGACY_STATE_FILE}, a pickle, "
                               f"which is not loaded for safety); expected a JSON + safetensors checkpoint: delete "
                               f"{last} to restart this run, or use a new --output_dir.")
        try:
            tree = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))
            state = decode(tree, load_file(last / STATE_TENSORS_FILE))
            model_state = load_file(last / MODEL_STATE_FILE)
            int(state["max_steps"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            raise SubnetsError(f"{last} is damaged ({e.__class__.__name__}: {e}); expected the complete checkpoint "
                               f"a run writes: delete {last} to restart this run from the beginning.") from e
        return state, model_state

    def save_model(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
                   add_files: AddFiles | None = None) -> None:
        save_plain_model(model, tokenizer, self.root / name, extra_files=add_files)

    def remove_model(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)

    def location(self, name: str) -> str:
        return str(self.root / name)
