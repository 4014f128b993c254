"""One short run of every stage family through its stage script, with a guard around the steady-state steps.

Shared by tests/test_cuda.py (guard: `torch.cuda.set_sync_debug_mode("error")`) and tests/test_host_syncs.py
(guard: a recorder of host-reading tensor calls, which runs on CPU). `SteadyStateGuard` is added to the stage's
callbacks (through `subnets.pipelines.common.build_training_parts`); it opens the guard at the end of step WARMUP_STEPS
and closes it at the end of the last step, before the loop logs, evaluates or checkpoints, so that the guarded steps
are the training loop's hot path: objective, callbacks, clipping, optimizer, scheduler.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch

from subnets.training import Callback

MAX_STEPS, WARMUP_STEPS = 4, 2
WORDS_POSITIVE, WORDS_NEGATIVE = ["good", "great", "fine", "superb"], ["bad", "awful", "poor", "dull"]
FILLER = ["the", "movie", "was", "plot", "story", "really", "a", "film"]

# family -> (stage module under pipelines/, stage options); "{...}" fields are filled from the workspace
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "dense": ("stage1_finetune", []),
    "freelb": ("stage1_finetune", ["--adversary", "freelb", "--adv_steps", "1"]),
    "pgd": ("stage1_finetune", ["--adversary", "pgd", "--adv_steps", "1", "--adv_max_norm", "0.1"]),
    "poe": ("stage1_finetune", ["--debias", "poe", "--bias_predictions", "{bias}"]),
    "rose_first": ("stage1_finetune", ["--selective", "rose_first", "--rose_upper", "60"]),
    "rose_second": ("stage1_finetune", ["--selective", "rose_second", "--rose_upper", "60"]),
    "roast": ("stage1_finetune", ["--selective", "roast", "--adversary", "roast", "--roast_fisher_batches", "2"]),
    "hard_concrete": ("stage2_search", ["--method", "hard_concrete", "--controller", "lagrangian",
                                        "--target_sparsity", "0.3"]),
    "hard_concrete_fixed": ("stage2_search", ["--method", "hard_concrete", "--controller", "fixed",
                                              "--target_sparsity", "0.3"]),
    "hard_concrete_structured": ("stage2_search", ["--method", "hard_concrete", "--granularity", "structured",
                                                   "--mask_pooler", "false", "--controller", "lagrangian",
                                                   "--target_sparsity", "0.3"]),
    "scores": ("stage2_search", ["--method", "scores", "--target_sparsity", "0.3", "--threshold_interval", "1"]),
    # two rounds: the second trains with the first round's mask fixed
    "imp_round": ("stage2_search", ["--method", "imp", "--target_sparsity", "0.19"]),
    "imp_prune_first": ("stage2_search", ["--method", "imp", "--target_sparsity", "0.19", "--imp_prune_first"]),
    "fixed_mask_retrain": ("stage3_retrain", ["--mask", "{magnitude_run}", "--sparsity", "0.3",
                                              "--init", "pretrained"]),
}


class SteadyStateGuard(Callback):
    """Holds `guard()` open over training steps WARMUP_STEPS + 1 .. max_steps of every run it joins; records the
    dtypes of the model's logits (bf16 autocast shows as bfloat16)."""

    def __init__(self, guard: Callable[[], ContextManager]):
        self.guard, self.open = guard, None
        self.guarded_steps, self.logit_dtypes = 0, set()

    def on_train_begin(self, trainer) -> None:
        trainer.model.register_forward_hook(lambda module, args, output: self.logit_dtypes.add(output.logits.dtype))

    def on_step_end(self, trainer) -> None:
        if self.open is not None:
            self.guarded_steps += 1
        if trainer.global_step == trainer.max_steps:
            self.close()
        elif trainer.global_step == WARMUP_STEPS:
            self.open = self.guard()
            self.open.__enter__()

    def close(self) -> None:
        if self.open is not None:
            self.open, opened = None, self.open
            opened.__exit__(None, None, None)


def write_split(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 4) + [rng.choice(WORDS_POSITIVE if label else WORDS_NEGATIVE)]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)}\t{label}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_workspace(root: Path) -> dict[str, str]:
    """A tiny SST-2 (64 train / 16 dev: 8 steps per epoch at batch 8, so no epoch ends inside the guarded
    steps), a tiny pre-trained BERT and bias-model predictions for PoE; returns the placeholders of FAMILIES."""
    from subnets.data import load_split
    from subnets.models import tiny_model
    from subnets.weights import save_plain_model
    from subnets.objectives import PredictionCache, dataset_fingerprint
    from subnets.tasks import get_task

    data = root / "data"
    write_split(data / "glue" / "SST-2" / "train.tsv", 64, seed=1)
    write_split(data / "glue" / "SST-2" / "dev.tsv", 16, seed=2)
    save_plain_model(*tiny_model("bert"), root / "pretrained")
    task = get_task("sst2")
    train = load_split(task, "train", data)
    ids, labels = np.asarray(train["idx"], np.int64), np.asarray(train["label"], np.int64)
    probs = np.full((len(ids), 2), 0.3, np.float32)
    probs[np.arange(len(ids)), labels] = 0.7  # a bias model that leans towards the gold label
    PredictionCache(ids, probs, labels, task.name, dataset_fingerprint(ids, labels)).save(root / "bias.safetensors")
    return {"data": str(data), "pretrained": str(root / "pretrained"), "bias": str(root / "bias.safetensors"),
            "magnitude_run": str(root / "magnitude")}


def stage_argv(places: dict[str, str], out: Path, options: list[str]) -> list[str]:
    return ["--model_name_or_path", places["pretrained"], "--task_name", "sst2", "--data_dir", places["data"],
            "--output_dir", str(out), "--per_device_train_batch_size", "8", "--max_steps", str(MAX_STEPS),
            "--logging_steps", "100", "--max_seq_length", "16", "--learning_rate", "1e-3", "--disable_tqdm", "true",
            *[option.format(**places) for option in options]]


def prepare_family(family: str, places: dict[str, str]) -> None:
    """Make what `family`'s run starts from (fixed-mask retraining: a magnitude ticket, no training)."""
    if family == "fixed_mask_retrain" and not Path(places["magnitude_run"]).is_dir():
        from subnets.pipelines import stage2_search

        stage2_search.main(stage_argv(places, Path(places["magnitude_run"]), ["--method", "magnitude"]))


def run_family(family: str, places: dict[str, str], out: Path, guard: SteadyStateGuard, monkeypatch) -> None:
    """Run `family`'s stage with `guard` among its callbacks (the guard is closed even if the run fails)."""
    import importlib

    import subnets.pipelines.common as common

    prepare_family(family, places)
    module_name, options = FAMILIES[family]
    module = importlib.import_module(f"subnets.pipelines.{module_name}")
    original = common.build_training_parts

    def with_guard(*args, **kwargs):
        setup = original(*args, **kwargs)
        setup.callbacks.append(guard)
        return setup

    monkeypatch.setattr(common, "build_training_parts", with_guard)
    try:
        module.main(stage_argv(places, out, options))
    finally:
        guard.close()


@contextlib.contextmanager
def cuda_sync_errors():
    """Every synchronising CUDA call raises while open."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
