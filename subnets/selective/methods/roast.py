"""RoAST's selective training (Kim et al., Findings of EMNLP 2023, Sec. 3.2) and Child-Tuning-D as its limit.

Importance is the empirical diagonal Fisher F = mean of squared gradients, per element of the encoder-layer
parameters: before epoch 1 from one pass of clean cross-entropy over the training set, afterwards accumulated
from the training gradients of the previous epoch. Elements are ranked globally, s = rank / (n - 1) (0 = least
important), and kept with probability p = sigmoid(2 beta (s - alpha)). Once per epoch a mask
m = Bernoulli(p) / p is drawn (E[m] = 1, an unbiased gradient) and multiplied into the gradient before the Adam
moments for the whole epoch.

Guard against the 1/p blow-up: p is floored at `min_keep` (default 0.01) before drawing and rescaling, so the
mask stays exactly unbiased and no factor exceeds 1/min_keep; the elements lifted to the floor are those with
p < min_keep (for alpha 0.9, beta 10: s < 0.67), which adds about min_keep of them to the updated fraction.

Child-Tuning-D (Xu et al. 2021) is the limit beta -> inf: p is 1 for the top (1 - alpha) fraction of the
Fisher ranking and 0 elsewhere, nothing is rescaled and the floor does not apply; with `refresh=False` the
Fisher of the initial pass is kept, so the same child network is trained in every epoch.

Its options (`RoastArguments`) and builder (`build_roast`) close the file.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.training import Callback, Trainer, TrainingParts, model_inputs

from ..masked_adamw import MaskedAdamW
from ..parameters import LayerParameter, encoder_layer_parameters
from ..recording import UpdateMaskRecorder
from ..setup import SelectiveContext, adamw_options
from ..sync import all_reduce_mean

DEFAULT_MIN_KEEP = 0.01


class FisherAccumulator:
    """Running sum of squared gradients of the selected parameters; `mean()` is the diagonal Fisher."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = list(params)
        self.sums: list[torch.Tensor] | None = None
        self.count = 0

    def add(self, gradients: Sequence[torch.Tensor] | None = None) -> None:
        """Add the squares of `gradients` (default: the parameters' current `.grad`)."""
        if gradients is None:
            gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        gradients = [g.detach().float() for g in gradients]
        if self.sums is None:
            self.sums = [torch.zeros_like(g) for g in gradients]
        torch._foreach_addcmul_(self.sums, gradients, gradients)
        self.count += 1

    def mean(self) -> list[torch.Tensor]:
        if self.sums is None or self.count == 0:
            raise SubnetsError("No gradients were accumulated for the Fisher information; expected at least one batch.")
        return torch._foreach_div(self.sums, float(self.count))

    def reset(self) -> None:
        self.sums, self.count = None, 0

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.params[0].device
        self.sums = None if state["sums"] is None else [s.to(device) for s in state["sums"]]
        self.count = state["count"]


def keep_probabilities(fisher: Sequence[torch.Tensor], alpha: float, beta: float, min_keep: float) -> list[torch.Tensor]:
    """p = sigmoid(2 beta (s - alpha)) with s the global Fisher rank / (n - 1); beta = inf gives the hard mask."""
    flat = torch.cat([f.reshape(-1) for f in fisher])
    n = flat.numel()
    relative = torch.empty_like(flat)
    relative[flat.argsort()] = torch.arange(n, device=flat.device, dtype=flat.dtype) / max(n - 1, 1)
    if math.isinf(beta):
        p = (relative >= alpha).to(flat.dtype)
    else:
        p = torch.sigmoid(2 * beta * (relative - alpha)).clamp_min(min_keep)
    return list(p.split([f.numel() for f in fisher]))


def draw_masks(
    probabilities: Sequence[torch.Tensor], shapes: Sequence[torch.Size], generator: torch.Generator
) -> list[torch.Tensor]:
    """m = Bernoulli(p) / p per element (0 where p = 0), reshaped to the parameters' shapes. The uniforms come from
    the CPU `generator` (once per epoch), so a seed draws the same masks on every device."""
    masks = []
    for p, shape in zip(probabilities, shapes):
        kept = torch.rand(p.shape, generator=generator, dtype=p.dtype).to(p.device, non_blocking=True) < p
        masks.append(torch.where(kept, 1 / p, torch.zeros_like(p)).reshape(shape))
    return masks


class RoastMasks:
    """The current epoch's RoAST gradient masks and the Fisher statistics they are drawn from."""

    def __init__(
        self, *, alpha: float, beta: float, min_keep: float = DEFAULT_MIN_KEEP, refresh: bool = True, seed: int = 0
    ):
        if not 0.0 <= alpha <= 1.0:
            raise SubnetsError(f"roast_alpha must lie in [0, 1]; got {alpha}.")
        if not beta > 0:
            raise SubnetsError(f"roast_beta must be positive (or inf for Child-Tuning-D); got {beta}.")
        if not 0.0 < min_keep <= 1.0:
            raise SubnetsError(f"The RoAST keep-probability floor must lie in (0, 1]; got {min_keep}.")
        self.alpha, self.beta, self.min_keep, self.refresh, self.seed = alpha, beta, min_keep, refresh, seed
        self.selected: list[LayerParameter] = []
        self.params: list[torch.nn.Parameter] = []
        self.fisher = FisherAccumulator([])
        self.current: list[torch.Tensor] | None = None

    def bind(self, model: torch.nn.Module) -> "RoastMasks":
        """Rank every element of `model`'s encoder-layer parameters (weights and biases)."""
        self.selected = encoder_layer_parameters(model, weights_only=False)
        self.params = [s.param for s in self.selected]
        self.fisher = FisherAccumulator(self.params)
        self.current = None
        return self

    def redraw(self, epoch: int) -> list[torch.Tensor]:
        """Draw this epoch's masks from the accumulated Fisher (the same on every rank: seeded by seed and epoch)."""
        fisher = self.fisher.mean()
        all_reduce_mean(fisher)
        probabilities = keep_probabilities(fisher, self.alpha, self.beta, self.min_keep)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.current = [m.to(p.dtype) for m, p in
                        zip(draw_masks(probabilities, [p.shape for p in self.params], generator), self.params)]
        if self.refresh:
            self.fisher.reset()
        return self.current

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": self.fisher.state_dict(), "current": self.current}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher.load_state_dict(state["fisher"])
        current = state["current"]
        self.current = None if current is None else [m.to(p.device) for m, p in zip(current, self.params)]


class RoastAdamW(MaskedAdamW):
    """AdamW whose gradients are multiplied by the current RoAST masks before the moments are updated."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], *, roast: RoastMasks, **adamw: Any):
        super().__init__(params, **adamw)
        if not roast.params:
            raise SubnetsError("RoastAdamW needs RoastMasks bound to the model (RoastMasks.bind) before it is built.")
        self.roast = roast

    def gradient_multipliers(self) -> dict[torch.Tensor, torch.Tensor]:
        if self.roast.current is None:
            raise SubnetsError("RoAST has no gradient masks at the optimizer step; expected RoastCallback among the "
                               "training callbacks (it draws them at the start of every epoch).")
        return {p: m for p, m in zip(self.roast.params, self.roast.current) if p.grad is not None}


def initial_fisher_pass(trainer: Trainer, fisher: FisherAccumulator, max_batches: int = 0) -> None:
    """One pass of clean cross-entropy over (this rank's share of) the training set, squared gradients summed.

    The batches and their precision are the trainer's (`Trainer.batches`, `Trainer.autocast`). The model stays
    in training mode (dropout on), as in the epochs whose gradients later replace this estimate. `max_batches`
    > 0 stops early (quick runs); gradients are cleared afterwards.
    """
    model = trainer.model
    model.train()
    for batch in itertools.islice(trainer.batches(trainer.train_dataset), max_batches or None):
        model.zero_grad(set_to_none=True)
        with trainer.autocast():
            logits = model(**model_inputs(batch)).logits
        F.cross_entropy(logits.float(), batch["labels"]).backward()
        fisher.add()
    model.zero_grad(set_to_none=True)


class RoastCallback(Callback):
    """Draws the masks at every epoch start, accumulates the Fisher during the epoch and records the masks."""

    def __init__(self, roast: RoastMasks, recorder: UpdateMaskRecorder, *, fisher_batches: int = 0):
        self.roast, self.recorder, self.fisher_batches = roast, recorder, fisher_batches

    def on_train_begin(self, trainer: Any) -> None:
        self.roast.bind(trainer.model)
        self.recorder.start(trainer, self.roast.selected)

    def on_epoch_begin(self, trainer: Any) -> None:
        if self.roast.fisher.count == 0:
            initial_fisher_pass(trainer, self.roast.fisher, self.fisher_batches)
        masks = self.roast.redraw(trainer.epoch)
        self.recorder.observe(trainer, masks, force=True)

    def log_scalars(self, trainer: Any) -> dict[str, float]:
        return self.recorder.ratio_scalars()  # the epoch's masks, at the first logging step after they are drawn

    def on_after_backward(self, trainer: Any) -> None:
        if self.roast.refresh:
            self.roast.fisher.add()

    def on_train_end(self, trainer: Any) -> None:
        self.recorder.finish(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"roast": self.roast.state_dict(), "recorder": self.recorder.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.roast.load_state_dict(state["roast"])
        self.recorder.load_state_dict(state["recorder"])


@dataclass
class RoastArguments:
    config_group = "SelectiveArguments"
    _argument_group_name = "selective optimizer: roast"  # its --help section
    allow_inf = ("roast_beta",)  # inf: Child-Tuning-D (see subnets.config.check_finite)

    roast_alpha: float = field(default=0.9, metadata={
        "help": "RoAST: keep probability sigmoid(2 beta (s - alpha)) of an element with relative Fisher rank s "
                "(sentiment 0.9, entailment 0.6)."})
    roast_beta: float = field(default=10.0, metadata={
        "help": "RoAST: sharpness (sentiment 10, entailment 1); inf gives Child-Tuning-D's hard top-(1-alpha) mask."})
    roast_min_keep: float = field(default=DEFAULT_MIN_KEEP, metadata={
        "help": "RoAST: floor on the keep probability, bounding the unbiased 1/p rescale by 1/min_keep."})
    roast_refresh_fisher: bool = field(default=True, metadata={
        "help": "RoAST: re-estimate the Fisher from each epoch's gradients (false: keep the initial pass, as "
                "Child-Tuning-D)."})
    roast_fisher_batches: int = field(default=0, metadata={
        "help": "RoAST: batches of the initial clean Fisher pass (0: the whole training set)."})

    def __post_init__(self) -> None:
        if math.isnan(self.roast_beta):
            raise SubnetsError("--roast_beta must be a positive number or inf, got nan.")


def build_roast(context: SelectiveContext) -> TrainingParts:
    args = context.options[RoastArguments]
    roast = RoastMasks(alpha=args.roast_alpha, beta=args.roast_beta, min_keep=args.roast_min_keep,
                       refresh=args.roast_refresh_fisher, seed=context.seed)

    def roast_optimizer(groups: list[dict[str, Any]], training: TrainingArguments) -> torch.optim.Optimizer:
        return RoastAdamW(groups, roast=roast, **adamw_options(training))

    callback = RoastCallback(roast, context.recorder, fisher_batches=args.roast_fisher_batches)
    return TrainingParts(roast_optimizer, [callback])
