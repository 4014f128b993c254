"""The one training loop, shared by every stage and method (see docs/ARCHITECTURE.md for the hook order).

AdamW with no-decay groups, warmup then a linear/cosine/constant learning rate, clipping, accumulation, bf16
autocast on CUDA, evaluation by epoch or steps, best (plain `from_pretrained`) and last (resumable) checkpoints,
tqdm, DDP under torchrun. Resuming restores weights, optimizer, scheduler, RNG and data position, so a resumed run
ends with the same metrics as an uninterrupted one. No checkpoint is written from a non-finite state, and the
output folder is locked for the run's life. The run's own state is one `TrainState` (`trainer.state`, as HF's
`TrainerState`), and what happens after each optimizer step is a sequence of named decisions (`_should_log`,
`_should_evaluate`, `_should_save`, `_should_snapshot`), as HF's `DefaultFlowCallback` decides them.

Infrastructure is injected, as torchtune's recipes build their parts: the learning-rate schedule
(`scheduler_factory`), where scalars go (`metric_logger`, TensorBoard by default), how checkpoints are stored
(`checkpointer`, folders of the output directory by default, see subnets/checkpointing.py) and the process group
(`distributed`, prepared by `subnets.distributed.init_distributed` before the Trainer is built).

HF Trainer conventions: metrics carry HF's names (eval_*, train_loss, train_runtime, ...); `trainer_state.json`
in the output directory is a `transformers.TrainerState` (log_history, best_model_checkpoint, best_metric,
global_step, ...) and `all_results.json` holds the final metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, NoReturn, Protocol, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm
from transformers import get_scheduler

from .attention import use_sync_free_attention
from .checkpointing import BEST, LAST, STATE_FILE, Checkpointer, DirectoryCheckpointer, step_checkpoint
from .config import TrainingArguments
from .data import Collator, batch_reader
from .distributed import Distributed
from .errors import SubnetsError
from .evaluation import check_label_compatibility, compute_metrics, predict
from .io import atomic_write_json, directory_lock
from .precision import autocast
from .runs import RESULTS_FILE
from .tasks import TaskSpec
from .tensorboard import TensorBoardLogger

NON_MODEL_KEYS = ("labels", "idx")
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "layer_norm.bias")
LOWER_IS_BETTER = ("loss", "ece")
# TensorBoard tag -> the key HF's Trainer uses in log_history (eval/<m> -> eval_<m>; other tags are kept as is)
HF_LOG_KEYS = {"train/loss": "loss", "train/lr": "learning_rate", "train/grad_norm": "grad_norm"}


def log_key(tag: str) -> str:
    """The log_history key of a TensorBoard scalar tag."""
    return HF_LOG_KEYS.get(tag) or ("eval_" + tag.removeprefix("eval/") if tag.startswith("eval/") else tag)


def best_metric(args: TrainingArguments, task: TaskSpec) -> tuple[str, bool]:
    """(eval_<metric> key, greater is better) of --metric_for_best_model, checked against the task's metrics."""
    name = (args.metric_for_best_model or task.metric).removeprefix("eval_")
    known = ["accuracy", "loss", "ece"] + (["f1"] if task.metric == "f1" else [])
    if name not in known:
        raise SubnetsError(f"Unknown --metric_for_best_model '{args.metric_for_best_model}' for task '{task.name}'; "
                           f"expected one of {', '.join(known)} (with or without the eval_ prefix).")
    greater = args.greater_is_better if args.greater_is_better is not None else name not in LOWER_IS_BETTER
    return "eval_" + name, greater


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a batch the model's forward takes (drops labels and example ids)."""
    return {k: v for k, v in batch.items() if k not in NON_MODEL_KEYS}


def _nested_tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for each tensor inside nested dicts, lists and tuples."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _nested_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _nested_tensors(value, f"{prefix}[{i}]")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Objective:
    """A training loss that runs its own forward and backward pass(es); returns the detached loss."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_scale: float) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropyObjective(Objective):
    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_scale: float) -> torch.Tensor:
        logits = model(**model_inputs(batch)).logits
        loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.label_smoothing)
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
    def log_scalars(self, trainer: "Trainer") -> dict[str, float]: return {}  # tag -> value; the logger writes them
    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...
    def on_save(self, trainer: "Trainer", directory: Path, kind: str) -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...
    def state_dict(self) -> dict[str, Any]: return {}  # kept in checkpoint-last under the callback's name
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def callback_names(callbacks: Sequence[Callback]) -> list[str]:
    """The keys of the callbacks' states in checkpoint-last: the class name, `Name#2`, `Name#3`, ... for repeats."""
    names: list[str] = []
    for cb in callbacks:
        base = type(cb).__name__
        names.append(base if base not in names else f"{base}#{sum(n.split('#')[0] == base for n in names) + 1}")
    return names


class MetricLogger(Protocol):
    """Where the loop's scalars go (main process only): the training scalars and the callbacks' `log_scalars`
    at logging steps, `eval/<metric>` at evaluations. Default: `tensorboard.TensorBoardLogger`."""

    def log_dict(self, scalars: Mapping[str, float], step: int) -> None: ...
    def flush(self) -> None: ...


OptimizerFactory = Callable[[list[dict[str, Any]], TrainingArguments], torch.optim.Optimizer]
# (optimizer, arguments, number of optimizer steps) -> a scheduler stepped once per optimizer step
SchedulerFactory = Callable[[torch.optim.Optimizer, TrainingArguments, int], LRScheduler]


@dataclasses.dataclass
class TrainingParts:
    """What the method options add to a training run (`subnets.parts.build_training_parts`, a selective method's
    builder): its optimizer, callbacks and objective; None / empty for AdamW, no callbacks and cross-entropy."""

    optimizer_factory: OptimizerFactory | None = None
    callbacks: list[Callback] = dataclasses.field(default_factory=list)
    objective: Objective | None = None

    def trainer_options(self) -> dict[str, Any]:
        """The parts as keyword arguments of `Trainer` (and of `ticket_trainer`, `masking.search.search_mask`)."""
        return {"objective": self.objective, "callbacks": self.callbacks, "optimizer_factory": self.optimizer_factory}


def adamw_factory(groups: list[dict[str, Any]], args: TrainingArguments) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where every parameter allows it (16% faster minilm steps on CPU than the loop)."""
    params = [p for g in groups for p in g["params"]]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, weight_decay=args.weight_decay, fused=fused)


def hf_scheduler_factory(optimizer: torch.optim.Optimizer, args: TrainingArguments, max_steps: int) -> LRScheduler:
    """`--lr_scheduler_type` (linear, cosine, constant_with_warmup, ...) after `--warmup_steps` or `--warmup_ratio`."""
    warmup = args.warmup_steps or int(args.warmup_ratio * max_steps)
    return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=max_steps)


@dataclasses.dataclass(eq=False)
class TrainState:
    """The loop's own run state, as HF's `TrainerState`: where the run is and what it recorded. checkpoint-last
    keeps it (`to_dict`) beside the RNG, optimizer, scheduler and callback states, which their owners hold."""

    max_steps: int = 0
    global_step: int = 0
    epoch: int = 0  # whole epochs done
    step_in_epoch: int = 0  # optimizer steps done in the current epoch
    best_metric: float | None = None  # value of `metric_for_best_model` at checkpoint-best
    best_step: int | None = None
    best_metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # all eval metrics of checkpoint-best
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    last_eval_step: int | None = None
    runtime: float = 0.0  # seconds of training, summed over resumes
    samples_seen: int = 0  # over all ranks
    # HF's log_history: one dict per logging step and per evaluation (plain JSON values)
    log_history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    train_loss_sum: float = 0.0  # the logged losses so far (for train_loss)
    train_loss_count: int = 0
    # the loss summed on the device since the last logging step, so a resume between logging steps logs the same
    pending_loss_sum: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(()))
    pending_loss_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        """checkpoint-last's keys for this state, in the order and nesting the trainer has always written."""
        return {"global_step": self.global_step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "max_steps": self.max_steps,
                "best": {"value": self.best_metric, "step": self.best_step, "metrics": self.best_metrics},
                "last_eval": self.last_eval, "last_eval_step": self.last_eval_step, "runtime": self.runtime,
                "samples_seen": self.samples_seen, "log_history": self.log_history,
                "train_loss_sum": self.train_loss_sum, "train_loss_count": self.train_loss_count,
                "pending_loss": {"sum": self.pending_loss_sum, "count": self.pending_loss_count}}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any], device: torch.device) -> "TrainState":
        """The state in `saved` (a checkpoint-last dict; other keys are ignored), its pending loss on `device`.
        A checkpoint written before the pending loss was kept resumes with none."""
        best, pending = saved["best"], saved.get("pending_loss", {"sum": torch.zeros(()), "count": 0})
        return cls(max_steps=saved["max_steps"], global_step=saved["global_step"], epoch=saved["epoch"],
                   step_in_epoch=saved["step_in_epoch"], best_metric=best["value"], best_step=best["step"],
                   best_metrics=best["metrics"], last_eval=saved["last_eval"], last_eval_step=saved["last_eval_step"],
                   runtime=saved["runtime"], samples_seen=saved["samples_seen"], log_history=saved["log_history"],
                   train_loss_sum=saved["train_loss_sum"], train_loss_count=saved["train_loss_count"],
                   pending_loss_sum=pending["sum"].to(device), pending_loss_count=pending["count"])


class Trainer:
    def __init__(self, model: PreTrainedModel, args: TrainingArguments, task: TaskSpec,
                 train_dataset: datasets.Dataset | None, eval_dataset: datasets.Dataset | None,
                 tokenizer: PreTrainedTokenizerBase, *, objective: Objective | None = None,
                 callbacks: Sequence[Callback] = (), optimizer_factory: OptimizerFactory | None = None,
                 scheduler_factory: SchedulerFactory | None = None, metric_logger: MetricLogger | None = None,
                 checkpointer: Checkpointer | None = None, distributed: Distributed | None = None):
        if not args.output_dir:
            raise SubnetsError("No --output_dir given; expected a directory for checkpoints, logs and metrics.")
        self.args, self.task, self.tokenizer = args, task, tokenizer
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.objective = objective or CrossEntropyObjective(args.label_smoothing_factor)
        self.callbacks = list(callbacks)
        self.optimizer_factory = optimizer_factory or adamw_factory
        self.scheduler_factory = scheduler_factory or hf_scheduler_factory
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        check_label_compatibility(labels, task, task, f"model {type(model).__name__}")
        self.distributed = distributed or Distributed.current()
        if args.use_cpu:
            self.distributed = self.distributed.on_cpu()
        self.rank, self.world_size = self.distributed.rank, self.distributed.world_size
        self.is_main_process = self.distributed.is_main_process
        self.device = self.distributed.device
        if args.gradient_checkpointing:
            if not model.supports_gradient_checkpointing:
                raise SubnetsError(f"{type(model).__name__} does not support --gradient_checkpointing.")
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.model = model.to(self.device)
        use_sync_free_attention(self.model)  # no host sync per forward (bitwise-identical outputs)
        if args.torch_compile:  # in place (nn.Module.compile): the model keeps its type, DDP and hooks see it
            self.model.compile(backend=args.torch_compile_backend)
        self.collator = Collator(tokenizer, pad_to_multiple_of=8 if self.device.type == "cuda" else None)
        self.output_dir = Path(args.output_dir)
        if metric_logger is None:
            metric_logger = TensorBoardLogger(self.output_dir / "tb" if args.report_to == "tensorboard" else None)
        self.metric_logger = metric_logger
        self.checkpointer = checkpointer or DirectoryCheckpointer(self.output_dir)
        self.metric_key, self.greater_is_better = best_metric(args, task)
        self.state = TrainState(pending_loss_sum=torch.zeros((), device=self.device))
        self.steps_per_epoch = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: LRScheduler | None = None
        self.saved_step: int | None = None  # the step checkpoint-last holds on disk (None: not written yet)
        self._grad_norm: torch.Tensor | None = None

    # The run state callbacks read (docs/ARCHITECTURE.md), kept in `state`.
    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def max_steps(self) -> int:
        return self.state.max_steps

    @property
    def epoch(self) -> int:
        return self.state.epoch

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
        self.scheduler = self.scheduler_factory(self.optimizer, self.args, self.max_steps)

    def _clipped_parameters(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups if g.get("clip", True) for p in g["params"]]

    # ----------------------------------------------------------------------------------------- checkpoints
    def _rng_state(self) -> dict[str, Any]:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_last(self) -> None:
        """The resumable checkpoint: raw model state (masks and gates included), optimizer, RNG, position."""
        callbacks = {name: state for name, cb in zip(callback_names(self.callbacks), self.callbacks)
                     if (state := cb.state_dict())}
        self._check_finite(callbacks)
        rng = [self._rng_state()]
        if self.world_size > 1:
            rng = [None] * self.world_size
            dist.all_gather_object(rng, self._rng_state())
        if not self.is_main_process:
            return
        state = {**self.state.to_dict(), "rng": rng, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "callbacks": callbacks}

        def add_files(tmp: Path) -> None:
            for cb in self.callbacks:
                cb.on_save(self, tmp, "last")

        self.checkpointer.save_last(state, self.model.state_dict(), add_files)
        self.saved_step = self.global_step

    def _load_callback_states(self, saved: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Give each callback the state saved under its name (see `callback_names`)."""
        names = callback_names(self.callbacks)
        if isinstance(saved, list):  # written before states were keyed by name: by position, as then
            saved = {name: state for name, state in zip(names, saved) if state}
        unknown = sorted(set(saved) - set(names))
        if unknown:
            raise SubnetsError(f"{self.checkpointer.location(LAST)} holds the state of callback '{unknown[0]}', which "
                               f"this run does not have (its callbacks: {', '.join(names) or 'none'}); expected the "
                               f"same callbacks as the run that wrote it, or a new --output_dir.")
        for name, cb in zip(names, self.callbacks):
            if name in saved:
                cb.load_state_dict(saved[name])

    def _resume(self) -> bool:
        loaded = self.checkpointer.load_last()
        if loaded is None:
            return False
        saved, model_state = loaded
        where = self.checkpointer.location(LAST)
        if saved["max_steps"] != self.max_steps:
            raise SubnetsError(f"{where} was written for {saved['max_steps']} training steps, this run has "
                               f"{self.max_steps}; expected the same schedule to resume (or a new --output_dir).")
        missing, unexpected = self.model.load_state_dict(model_state, strict=False)
        if missing or unexpected:
            raise SubnetsError(f"{where} does not match this model (first mismatched tensor: "
                               f"{(missing or unexpected)[0]}); expected a checkpoint of the same run.")
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
        except ValueError as e:
            raise SubnetsError(f"{where} does not match this run's optimizer ({e}); expected a checkpoint "
                               f"of the same run.") from e
        self.scheduler.load_state_dict(saved["scheduler"])
        self._load_callback_states(saved["callbacks"])
        rng = saved["rng"][self.rank]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.state = TrainState.from_dict(saved, self.device)
        self.saved_step = self.global_step
        return True

    def _check_finite(self, callback_states: Mapping[str, Any] | None = None) -> None:
        """Stop before a checkpoint is written from a diverged state (NaN/inf loss, weights or trained tensors, and
        the callbacks' states `save_last` is about to write)."""
        pending, count = self.state.pending_loss_sum, self.state.pending_loss_count
        if count and not bool(torch.isfinite(pending)):
            self._diverged(f"The training loss became {(pending / count).item()}")
        named = [(n, t) for n, t in self.model.state_dict().items() if t.is_floating_point()]
        if self.optimizer is not None:
            named += [(f"optimizer group {i} parameter {j}", p) for i, g in enumerate(self.optimizer.param_groups)
                      for j, p in enumerate(g["params"])]
        named += [(f"callback {name} {key}", t) for name, state in (callback_states or {}).items()
                  for key, t in _nested_tensors(state) if t.is_floating_point()]
        # one flag per tensor, gathered on the model's device (a callback's state may live elsewhere)
        finite = (torch.stack([torch.isfinite(t).all().to(self.device) for _, t in named]) if named
                  else torch.ones(1, dtype=torch.bool))
        if not bool(finite.all()):
            self._diverged(f"The weights became non-finite (first: {named[int((~finite).nonzero()[0])][0]})")

    def _diverged(self, what: str) -> NoReturn:
        if self.saved_step is None:
            on_disk = f"no {LAST} has been written in {self.output_dir}"
        else:
            on_disk = f"{LAST} is kept at step {self.saved_step} in {self.output_dir}"
            if self.state.best_step is not None:
                on_disk += f" ({BEST}: step {self.state.best_step})"
        raise SubnetsError(f"{what} by step {self.global_step}; expected finite values (try a lower "
                           f"--learning_rate). Nothing was saved from this state: {on_disk}.")

    def _save_best(self) -> None:
        def add_files(tmp: Path) -> None:
            for cb in self.callbacks:
                cb.on_save(self, tmp, "best")

        self.checkpointer.save_model(BEST, self.model, self.tokenizer, add_files)

    # ----------------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Metrics of the current model on the eval set (main process; {} elsewhere or without an eval set)."""
        if self.eval_dataset is None or not self.is_main_process:
            return {}
        start = time.perf_counter()
        logits = predict(self.model, self.eval_dataset, self.collator, self.args.per_device_eval_batch_size,
                         self.device, bf16=self.args.bf16)
        labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        metrics = compute_metrics(self.task, logits, np.asarray(self.eval_dataset["labels"]), labels)
        runtime = time.perf_counter() - start
        return {**metrics, "eval_runtime": runtime, "eval_samples_per_second": len(logits) / runtime}

    def _evaluate_and_checkpoint(self) -> None:
        self._check_finite()
        self.state.last_eval_step = self.global_step
        metrics = self.evaluate()
        if self.is_main_process and metrics:
            self.state.last_eval = metrics
            self._record({"eval/" + key.removeprefix("eval_"): value for key, value in metrics.items()})
            for cb in self.callbacks:
                cb.on_evaluate(self, metrics)
            if self.metric_key not in metrics:
                raise SubnetsError(f"metric_for_best_model '{self.metric_key}' is not among the eval metrics "
                                   f"{sorted(metrics)}.")
            if self._should_keep_best(metrics[self.metric_key]):
                self.state.best_metric, self.state.best_step = metrics[self.metric_key], self.global_step
                self.state.best_metrics = metrics
                self._save_best()
        self.save_last()
        self.write_state()
        self._flush_logger()
        if self.world_size > 1:
            dist.barrier()

    # ----------------------------------------------------------------------------------------- training
    def _no_sync(self, model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        return model.no_sync() if (self.world_size > 1 and not sync) else contextlib.nullcontext()

    def autocast(self) -> torch.autocast:
        """The precision of this run's forward passes: bf16 autocast on CUDA with --bf16, float32 otherwise."""
        return autocast(self.device, self.args.bf16)

    def to_device(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def batches(self, dataset: datasets.Dataset, batch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """This process's share of `dataset` (every world_size-th example from its rank on, in order) as batches
        on the device, collated as the training batches are; `batch_size` defaults to the training one."""
        read = batch_reader(dataset, self.collator)
        mine = list(range(self.rank, len(dataset), self.world_size))
        size = batch_size or self.args.per_device_train_batch_size
        for start in range(0, len(mine), size):
            yield self.to_device(read(mine[start:start + size]))

    def _optimizer_step(self, model: torch.nn.Module, group: list[dict[str, torch.Tensor]]) -> None:
        extras = [loss for cb in self.callbacks if (loss := cb.extra_loss(self)) is not None]
        if extras:
            # Regularisers depend only on replicated parameters, so their gradient is the same on every rank:
            # accumulate it locally; the all-reduce of the last micro-batch averages it unchanged.
            with self._no_sync(model, sync=False):
                torch.stack([e.float() for e in extras]).sum().backward()
        state = self.state
        for i, batch in enumerate(group):
            batch = self.to_device(batch)
            with self._no_sync(model, sync=i == len(group) - 1), self.autocast():
                loss = self.objective(model, batch, 1.0 / len(group))
            state.pending_loss_sum += loss.float()
            state.pending_loss_count += 1
            state.samples_seen += len(batch["labels"]) * self.world_size
        self._notify("on_after_backward")
        if self.args.max_grad_norm > 0:
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self._clipped_parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.step_in_epoch += 1
        self._notify("on_step_end")

    def _notify(self, hook: str) -> None:
        """Call the callbacks' `hook(trainer)` in order."""
        for cb in self.callbacks:
            getattr(cb, hook)(self)

    def _log(self, progress: tqdm) -> None:
        state = self.state
        if state.pending_loss_count == 0:
            return
        loss = (state.pending_loss_sum / state.pending_loss_count).item()
        if not math.isfinite(loss):
            self._diverged(f"The training loss became {loss}")
        scalars = {"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0]}
        if self._grad_norm is not None:
            scalars["train/grad_norm"] = float(self._grad_norm)
        for cb in self.callbacks:
            scalars.update(cb.log_scalars(self))
        self._record(scalars)
        state.train_loss_sum += float(state.pending_loss_sum)
        state.train_loss_count += state.pending_loss_count
        progress.set_postfix(loss=f"{loss:.4f}")
        state.pending_loss_sum.zero_()
        state.pending_loss_count = 0

    @property
    def epoch_progress(self) -> float:
        """Epochs done, fractional (HF's `epoch`)."""
        state = self.state
        return state.epoch + state.step_in_epoch / self.steps_per_epoch if self.steps_per_epoch else float(state.epoch)

    def _log_entry(self, values: dict[str, float]) -> None:
        self.state.log_history.append({**values, "epoch": self.epoch_progress, "step": self.global_step})

    def _record(self, scalars: Mapping[str, float]) -> None:
        """Scalars of this step: to log_history under HF's keys, and to the metric logger (main process)."""
        self._log_entry({log_key(tag): float(value) for tag, value in scalars.items()})
        if self.is_main_process:
            self.metric_logger.log_dict(scalars, self.global_step)

    def _flush_logger(self) -> None:
        if self.is_main_process:
            self.metric_logger.flush()

    def write_state(self) -> None:
        """`trainer_state.json` in the output directory, loadable with `transformers.TrainerState.load_from_json`."""
        if not self.is_main_process:
            return
        state, args = self.state, self.args
        best = self.checkpointer.location(BEST) if state.best_step is not None else None
        atomic_write_json(self.output_dir / STATE_FILE, {
            "epoch": self.epoch_progress, "global_step": state.global_step, "max_steps": state.max_steps,
            "logging_steps": args.logging_steps, "eval_steps": args.eval_steps, "save_steps": args.save_steps,
            "train_batch_size": args.per_device_train_batch_size, "num_train_epochs": args.num_train_epochs,
            "log_history": state.log_history, "best_metric": state.best_metric,
            "best_global_step": state.best_step, "best_model_checkpoint": best,
            "is_local_process_zero": True, "is_world_process_zero": True})

    def _save_step_snapshot(self) -> None:
        """checkpoint-step-<k>; with --save_total_limit, this run's older snapshots beyond the limit are removed."""
        self.checkpointer.save_model(step_checkpoint(self.global_step), self.model, self.tokenizer)
        limit = self.args.save_total_limit
        if limit:
            kept = sorted(s for s in self.args.save_model_at_steps if s <= self.global_step)
            for step in kept[:-limit]:
                self.checkpointer.remove_model(step_checkpoint(step))

    def train(self) -> dict[str, float]:
        """Train to `max_steps` (resuming from checkpoint-last if present); returns HF-style metrics.

        The output folder stays locked meanwhile; first the checkpointer undoes what a crash left half-written.
        """
        if self.train_dataset is None or len(self.train_dataset) == 0:
            raise SubnetsError("The training set is empty; expected at least one example.")
        with directory_lock(self.output_dir, enabled=self.is_main_process):
            if self.is_main_process:
                self.checkpointer.recover()
            return self._train()

    # ----------------------------------------------------------------------------------------- flow decisions
    # Made after each optimizer step, in this order (HF's DefaultFlowCallback); `end_of_epoch`: the step ended one.
    def _should_log(self, end_of_epoch: bool) -> bool:
        return (self.global_step % self.args.logging_steps == 0 or end_of_epoch
                or self.global_step == self.max_steps)

    def _should_evaluate(self, end_of_epoch: bool) -> bool:
        """Evaluate, then write checkpoint-last (and checkpoint-best on a new best)."""
        strategy = self.args.eval_strategy
        return ((strategy == "epoch" and end_of_epoch)
                or (strategy == "steps" and self.global_step % self.args.eval_steps == 0)
                or self.global_step == self.max_steps)

    def _should_save(self) -> bool:
        """Write checkpoint-last without evaluating (`--save_steps`)."""
        return bool(self.args.save_steps) and self.global_step % self.args.save_steps == 0

    def _should_snapshot(self) -> bool:
        """Write checkpoint-step-<k> (`--save_model_at_steps`; main process)."""
        return self.global_step in self.args.save_model_at_steps and self.is_main_process

    def _should_keep_best(self, value: float) -> bool:
        """`value` of the best metric replaces checkpoint-best: better, and late enough (--best_after_fraction)."""
        best = self.state.best_metric
        better = best is None or (value > best if self.greater_is_better else value < best)
        return better and self.global_step >= self.args.best_after_fraction * self.max_steps

    # ----------------------------------------------------------------------------------------- the loop
    def _train(self) -> dict[str, float]:
        self._begin()
        model = self.distributed.wrap(self.model, self.args.ddp_find_unused_parameters)
        self.model.train()
        progress = tqdm(total=self.max_steps, initial=self.global_step, desc="train",
                        disable=not self.is_main_process or self.args.disable_tqdm, dynamic_ncols=True)
        state, start = self.state, time.perf_counter() - self.state.runtime
        while state.global_step < state.max_steps:
            groups = self._epoch_groups(state.epoch)
            if state.step_in_epoch == 0:
                self._notify("on_epoch_begin")
            for group in self._loader(groups[state.step_in_epoch:]):
                self._optimizer_step(model, group)
                progress.update(1)
                end_of_epoch = state.step_in_epoch == len(groups)
                if self._should_log(end_of_epoch):
                    self._log(progress)
                if end_of_epoch:
                    self._notify("on_epoch_end")
                    state.epoch, state.step_in_epoch = state.epoch + 1, 0
                state.runtime = time.perf_counter() - start
                if self._should_evaluate(end_of_epoch):
                    self._evaluate_and_checkpoint()
                elif self._should_save():
                    self.save_last()
                if self._should_snapshot():
                    self._check_finite()
                    self._save_step_snapshot()
                if state.global_step >= state.max_steps or end_of_epoch:
                    break
        progress.close()
        return self._end()

    def _begin(self) -> None:
        """The schedule, the callbacks' start, the optimizer; then resume from checkpoint-last, or seed a new run."""
        args = self.args
        self.steps_per_epoch = math.ceil(self._micro_batches_per_epoch() / args.gradient_accumulation_steps)
        self.state.max_steps = (args.max_steps if args.max_steps > 0
                                else math.ceil(args.num_train_epochs * self.steps_per_epoch))
        self._notify("on_train_begin")
        self._build_optimizer()
        if self._resume():
            if self.is_main_process:
                print(f"resuming from {self.checkpointer.location(LAST)} at step {self.global_step} of "
                      f"{self.max_steps} (epoch {self.epoch})", flush=True)
            return
        set_seed(args.seed + self.rank)
        if 0 in args.save_model_at_steps and self.is_main_process:
            self._save_step_snapshot()

    def _loader(self, groups: list[list[list[int]]]) -> torch.utils.data.DataLoader:
        """The rest of an epoch's optimizer-step groups, read (in workers with --dataloader_num_workers)."""
        read = batch_reader(self.train_dataset, self.collator)
        # The loader gets its own generator: creating an iterator otherwise draws from the global RNG,
        # which would shift the dropout stream of a resumed run.
        return torch.utils.data.DataLoader(groups, batch_size=None, collate_fn=lambda g: [read(b) for b in g],
                                           num_workers=self.args.dataloader_num_workers,
                                           generator=torch.Generator().manual_seed(self.args.seed + self.epoch))

    def _end(self) -> dict[str, float]:
        """The final evaluation if the last step had none, the callbacks' end, trainer_state.json and the results."""
        if self.state.last_eval_step != self.global_step and self.eval_dataset is not None:
            self._evaluate_and_checkpoint()  # every rank takes part (it holds collectives)
        self._notify("on_train_end")
        summary = self.summary()
        if not any("train_runtime" in entry for entry in self.state.log_history):
            self._log_entry({k: summary[k] for k in ("train_runtime", "train_samples_per_second",
                                                     "train_steps_per_second", "train_loss")})
        self.write_state()
        if self.is_main_process:
            atomic_write_json(self.output_dir / RESULTS_FILE, summary)
        self._flush_logger()
        return summary

    def summary(self) -> dict[str, float]:
        """HF Trainer-style metrics: eval_* of the best checkpoint, last_eval_* of the final model, train_*."""
        state = self.state
        out: dict[str, Any] = dict(state.best_metrics or state.last_eval)
        out.update({"last_" + k: v for k, v in state.last_eval.items()})
        runtime = state.runtime
        out.update({"best_step": state.best_step, "train_steps": state.global_step, "train_runtime": runtime,
                    "train_samples": state.samples_seen,
                    "train_samples_per_second": state.samples_seen / runtime if runtime else 0.0,
                    "train_steps_per_second": state.global_step / runtime if runtime else 0.0,
                    "train_loss": (state.train_loss_sum / state.train_loss_count if state.train_loss_count
                                   else float("nan")),
                    "epoch": self.epoch_progress})
        return out
