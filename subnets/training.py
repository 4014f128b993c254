"""The one training loop, shared by every stage and method (see docs/ARCHITECTURE.md for the hook order).

AdamW with no-decay groups, linear warmup/decay, clipping, accumulation, bf16 autocast on CUDA, evaluation by
epoch or steps, best (plain `from_pretrained`) and last (resumable) checkpoints, TensorBoard, tqdm, DDP under
torchrun. Resuming restores weights, optimizer, scheduler, RNG and data position, so a resumed run ends with
the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import datasets
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from .attention import use_sync_free_attention
from .config import TrainingArguments
from .data import Collator, batch_reader
from .errors import SubnetsError
from .evaluation import check_label_compatibility, compute_metrics, predict
from .io import atomic_dir, atomic_write_json
from .models import save_plain_model
from .tasks import TaskSpec
from .tensorboard import ScalarWriter

NON_MODEL_KEYS = ("labels", "idx")
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "layer_norm.bias")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a batch the model's forward takes (drops labels and example ids)."""
    return {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Objective:
    """A training loss that runs its own forward and backward pass(es); returns the detached loss."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_scale: float) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropyObjective(Objective):
    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_scale: float) -> torch.Tensor:
        logits = model(**model_inputs(batch)).logits
        loss = F.cross_entropy(logits.float(), batch["labels"])
        (loss * loss_scale).backward()
        return loss.detach()


class Callback:
    """Hooks into the training loop; every method is optional. See docs/ARCHITECTURE.md for the order."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...
    def param_groups(self, trainer: "Trainer") -> list[dict[str, Any]]: return []
    def extra_loss(self, trainer: "Trainer") -> torch.Tensor | None: return None
    def on_after_backward(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_epoch_begin(self, trainer: "Trainer") -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def log_scalars(self, trainer: "Trainer") -> dict[str, float]: return {}
    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...
    def on_save(self, trainer: "Trainer", directory: Path, kind: str) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...
    def state_dict(self) -> dict[str, Any]: return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


OptimizerFactory = Callable[[list[dict[str, Any]], TrainingArguments], torch.optim.Optimizer]


def adamw_factory(groups: list[dict[str, Any]], args: TrainingArguments) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where every parameter allows it (16% faster minilm steps on CPU than the loop)."""
    params = [p for g in groups for p in g["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, weight_decay=args.weight_decay, fused=fused)


def distributed_setup() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():  # NCCL's communicators use the current device: one GPU per rank
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with no shared storage (safetensors refuses aliases)."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[k] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


class Trainer:
    def __init__(self, model: PreTrainedModel, args: TrainingArguments, task: TaskSpec,
                 train_dataset: datasets.Dataset | None, eval_dataset: datasets.Dataset | None,
                 tokenizer: PreTrainedTokenizerBase, *, objective: Objective | None = None,
                 callbacks: Sequence[Callback] = (), optimizer_factory: OptimizerFactory | None = None):
        if not args.output_dir:
            raise SubnetsError("No --output_dir given; expected a directory for checkpoints, logs and metrics.")
        self.args, self.task, self.tokenizer = args, task, tokenizer
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.objective = objective or CrossEntropyObjective()
        self.callbacks = list(callbacks)
        self.optimizer_factory = optimizer_factory or adamw_factory
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        check_label_compatibility(labels, task, task, f"model {type(model).__name__}")
        self.rank, self.world_size, local_rank = distributed_setup()
        self.is_main_process = self.rank == 0
        self.device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        use_sync_free_attention(self.model)  # no host sync per forward (bitwise-identical outputs)
        self.collator = Collator(tokenizer, pad_to_multiple_of=8 if self.device.type == "cuda" else None)
        self.output_dir = Path(args.output_dir)
        self.writer = ScalarWriter(self.output_dir / "tb" if self.is_main_process else None)
        self.metric_key = "eval_" + (args.metric_for_best_model or task.metric)
        self.global_step = self.epoch = self.step_in_epoch = 0
        self.max_steps = self.steps_per_epoch = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.best: dict[str, Any] = {"value": None, "step": None, "metrics": {}}
        self.last_eval: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self.runtime = 0.0
        self.samples_seen = 0
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._grad_norm: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------- set-up
    def _micro_batches_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.train_dataset) / self.world_size)
        return math.ceil(per_rank / self.args.per_device_train_batch_size)

    def _epoch_groups(self, epoch: int) -> list[list[list[int]]]:
        """This rank's micro-batches of `epoch`, grouped per optimizer step (a seeded permutation per epoch)."""
        n = len(self.train_dataset)
        order = np.random.default_rng([self.args.seed, epoch]).permutation(n)
        padded = np.resize(order, math.ceil(n / self.world_size) * self.world_size)
        mine = padded[self.rank::self.world_size].tolist()
        bs, accum = self.args.per_device_train_batch_size, self.args.gradient_accumulation_steps
        micro = [mine[i:i + bs] for i in range(0, len(mine), bs)]
        return [micro[i:i + accum] for i in range(0, len(micro), accum)]

    def _build_optimizer(self) -> None:
        claimed_groups = [g for cb in self.callbacks for g in cb.param_groups(self)]
        claimed = {id(p) for g in claimed_groups for p in g["params"]}
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad and id(p) not in claimed:
                (no_decay if any(k in name for k in NO_DECAY) else decay).append(p)
        groups = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        groups += claimed_groups
        if not groups:
            raise SubnetsError("Nothing to train: no parameter requires a gradient and no callback adds any.")
        self.optimizer = self.optimizer_factory(groups, self.args)
        warmup = self.args.warmup_steps or int(self.args.warmup_ratio * self.max_steps)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, warmup, self.max_steps)

    def _clipped_parameters(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups if g.get("clip", True) for p in g["params"]]

    # ----------------------------------------------------------------------------------------- checkpoints
    @property
    def last_dir(self) -> Path:
        return self.output_dir / "checkpoint-last"

    @property
    def best_dir(self) -> Path:
        return self.output_dir / "checkpoint-best"

    def _rng_state(self) -> dict[str, Any]:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_last(self) -> None:
        """The resumable checkpoint: raw model state (masks and gates included), optimizer, RNG, position."""
        rng = [self._rng_state()]
        if self.world_size > 1:
            rng = [None] * self.world_size
            dist.all_gather_object(rng, self._rng_state())
        if not self.is_main_process:
            return
        position = {"global_step": self.global_step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                    "max_steps": self.max_steps, "best": self.best, "last_eval": self.last_eval,
                    "last_eval_step": self.last_eval_step,
                    "runtime": self.runtime, "samples_seen": self.samples_seen}
        with atomic_dir(self.last_dir) as tmp:
            save_file(_plain_tensors(self.model.state_dict()), tmp / "model_state.safetensors")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "rng": rng, "callbacks": [cb.state_dict() for cb in self.callbacks], **position},
                       tmp / "trainer_state.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(position, indent=2, default=str))
            for cb in self.callbacks:
                cb.on_save(self, tmp, "last")

    def _resume(self) -> bool:
        if not (self.last_dir / "trainer_state.pt").exists():
            return False
        state = torch.load(self.last_dir / "trainer_state.pt", map_location="cpu", weights_only=False)
        if state["max_steps"] != self.max_steps:
            raise SubnetsError(f"{self.last_dir} was written for {state['max_steps']} training steps, this run has "
                               f"{self.max_steps}; expected the same schedule to resume (or a new --output_dir).")
        missing, unexpected = self.model.load_state_dict(load_file(self.last_dir / "model_state.safetensors"),
                                                         strict=False)
        if missing or unexpected:
            raise SubnetsError(f"{self.last_dir} does not match this model (first mismatched tensor: "
                               f"{(missing or unexpected)[0]}); expected a checkpoint of the same run.")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)
        rng = state["rng"][self.rank]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        for key in ("global_step", "epoch", "step_in_epoch", "best", "last_eval", "last_eval_step", "runtime",
                    "samples_seen"):
            setattr(self, key, state[key])
        return True

    def _save_best(self) -> None:
        def extra(tmp: Path) -> None:
            for cb in self.callbacks:
                cb.on_save(self, tmp, "best")

        save_plain_model(self.model, self.tokenizer, self.best_dir, extra_files=extra)

    # ----------------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Metrics of the current model on the eval set (main process; {} elsewhere or without an eval set)."""
        if self.eval_dataset is None or not self.is_main_process:
            return {}
        logits = predict(self.model, self.eval_dataset, self.collator, self.args.per_device_eval_batch_size,
                         self.device)
        labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        return compute_metrics(self.task, logits, np.asarray(self.eval_dataset["labels"]), labels)

    def _evaluate_and_checkpoint(self) -> None:
        self.last_eval_step = self.global_step
        metrics = self.evaluate()
        if self.is_main_process and metrics:
            self.last_eval = metrics
            for key, value in metrics.items():
                self.writer.scalar("eval/" + key.removeprefix("eval_"), value, self.global_step)
            for cb in self.callbacks:
                cb.on_evaluate(self, metrics)
            if self.metric_key not in metrics:
                raise SubnetsError(f"metric_for_best_model '{self.metric_key}' is not among the eval metrics "
                                   f"{sorted(metrics)}.")
            value = metrics[self.metric_key]
            eligible = self.global_step >= self.args.best_after_fraction * self.max_steps
            if eligible and (self.best["value"] is None or value > self.best["value"]):
                self.best = {"value": value, "step": self.global_step, "metrics": metrics}
                self._save_best()
        self.save_last()
        self.writer.flush()
        if self.world_size > 1:
            dist.barrier()

    # ----------------------------------------------------------------------------------------- training
    def _no_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        return model.no_sync() if (self.world_size > 1 and not sync) else contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.device.type == "cuda" and self.args.bf16)

    def _optimizer_step(self, model: torch.nn.Module, group: list[dict[str, torch.Tensor]]) -> None:
        extras = [loss for cb in self.callbacks if (loss := cb.extra_loss(self)) is not None]
        if extras:
            # Regularisers depend only on replicated parameters, so their gradient is the same on every rank:
            # accumulate it locally; the all-reduce of the last micro-batch averages it unchanged.
            with self._no_sync(model, sync=False):
                torch.stack([e.float() for e in extras]).sum().backward()
        for i, batch in enumerate(group):
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self._no_sync(model, sync=i == len(group) - 1), self._autocast():
                loss = self.objective(model, batch, 1.0 / len(group))
            self._loss_sum += loss.float()
            self._loss_count += 1
            self.samples_seen += len(batch["labels"]) * self.world_size
        for cb in self.callbacks:
            cb.on_after_backward(self)
        if self.args.max_grad_norm > 0:
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self._clipped_parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.step_in_epoch += 1
        for cb in self.callbacks:
            cb.on_step_end(self)

    def _log(self, progress: tqdm) -> None:
        if self._loss_count == 0:
            return
        loss = (self._loss_sum / self._loss_count).item()
        if not math.isfinite(loss):
            raise SubnetsError(f"The training loss became {loss} by step {self.global_step}; expected a finite loss "
                               f"(try a lower --learning_rate); the last good checkpoint in {self.last_dir} is kept.")
        scalars = {"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0]}
        if self._grad_norm is not None:
            scalars["train/grad_norm"] = float(self._grad_norm)
        for cb in self.callbacks:
            scalars.update(cb.log_scalars(self))
        self.writer.scalars(scalars, self.global_step)
        progress.set_postfix(loss=f"{loss:.4f}")
        self._loss_sum.zero_()
        self._loss_count = 0

    def train(self) -> dict[str, float]:
        """Train to `max_steps` (resuming from checkpoint-last if present); returns HF-style metrics."""
        if self.train_dataset is None or len(self.train_dataset) == 0:
            raise SubnetsError("The training set is empty; expected at least one example.")
        args = self.args
        self.steps_per_epoch = math.ceil(self._micro_batches_per_epoch() / args.gradient_accumulation_steps)
        self.max_steps = (args.max_steps if args.max_steps > 0
                          else math.ceil(args.num_train_epochs * self.steps_per_epoch))
        for cb in self.callbacks:
            cb.on_train_begin(self)
        self._build_optimizer()
        resumed = self._resume()
        if not resumed:
            set_seed(args.seed + self.rank)
            if 0 in args.save_model_at_steps and self.is_main_process:
                save_plain_model(self.model, self.tokenizer, self.output_dir / "checkpoint-step-0")
        model: torch.nn.Module = self.model
        if self.world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=args.ddp_find_unused_parameters)
        self.model.train()
        progress = tqdm(total=self.max_steps, initial=self.global_step, desc="train",
                        disable=not self.is_main_process or args.disable_tqdm, dynamic_ncols=True)
        read = batch_reader(self.train_dataset, self.collator)
        start = time.perf_counter() - self.runtime
        while self.global_step < self.max_steps:
            groups = self._epoch_groups(self.epoch)
            if self.step_in_epoch == 0:
                for cb in self.callbacks:
                    cb.on_epoch_begin(self)
            # The loader gets its own generator: creating an iterator otherwise draws from the global RNG,
            # which would shift the dropout stream of a resumed run.
            loader = torch.utils.data.DataLoader(groups[self.step_in_epoch:], batch_size=None,
                                                 collate_fn=lambda g: [read(b) for b in g],
                                                 num_workers=args.dataloader_num_workers,
                                                 generator=torch.Generator().manual_seed(args.seed + self.epoch))
            for group in loader:
                self._optimizer_step(model, group)
                progress.update(1)
                end_of_epoch = self.step_in_epoch == len(groups)
                if self.global_step % args.logging_steps == 0 or end_of_epoch or self.global_step == self.max_steps:
                    self._log(progress)
                if end_of_epoch:
                    for cb in self.callbacks:
                        cb.on_epoch_end(self)
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.runtime = time.perf_counter() - start
                evaluate = ((args.eval_strategy == "epoch" and end_of_epoch)
                            or (args.eval_strategy == "steps" and self.global_step % args.eval_steps == 0)
                            or self.global_step == self.max_steps)
                if evaluate:
                    self._evaluate_and_checkpoint()
                elif args.save_steps and self.global_step % args.save_steps == 0:
                    self.save_last()
                if self.global_step in args.save_model_at_steps and self.is_main_process:
                    save_plain_model(self.model, self.tokenizer, self.output_dir / f"checkpoint-step-{self.global_step}")
                if self.global_step >= self.max_steps or end_of_epoch:
                    break
        progress.close()
        if self.last_eval_step != self.global_step and self.eval_dataset is not None:
            self._evaluate_and_checkpoint()  # every rank takes part (it holds collectives)
        for cb in self.callbacks:
            cb.on_train_end(self)
        self.writer.flush()
        return self.summary()

    def summary(self) -> dict[str, float]:
        """HF Trainer-style metrics: eval_* of the best checkpoint, last_eval_* of the final model, train_*."""
        out: dict[str, Any] = dict(self.best["metrics"] or self.last_eval)
        out.update({"last_" + k: v for k, v in self.last_eval.items()})
        out.update({"best_step": self.best["step"], "train_steps": self.global_step, "train_runtime": self.runtime,
                    "train_samples": self.samples_seen,
                    "train_samples_per_second": self.samples_seen / self.runtime if self.runtime else 0.0,
                    "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch})
        return out
