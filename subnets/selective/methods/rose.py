"""ROSE: robust selective fine-tuning (Jiang et al., EMNLP 2022).

Every optimizer step each scored tensor (a `.weight` inside an encoder layer) gets a keep mask M in [0, 1]
(one scalar per tensor, or element-wise as an option). A tensor whose score lies outside the percentile band
[q_lower, q_upper] of all scores gets M = 0 and is frozen for that step (see `MaskedAdamW`).

* First order: score = ||grad_W KL_sym||_F, with KL_sym the symmetric KL divergence between the predictions of
  two dropout forward passes, summed over the batch and divided by 4 (paper Eq. 3-4; `ROSE_KL_SCALE`).
* Second order: score = |(1 - beta1) ||g|| / ||m_prev|| - 1| with m the Adam first moment (paper Eq. 6); every
  tensor is kept at the first step, where m_prev = 0.
* Ensemble: M = (1 - gamma) M_second + gamma M_first (paper Eq. 7), values in {0, gamma, 1 - gamma, 1}.

The masks are computed on the device with a handful of stacked kernels (`torch._foreach_norm`, one sort), no
host synchronisation. Under torch.distributed the first-order gradients are all-reduced before scoring, so
every rank computes the same masks.

Its options (`RoseArguments`) and builder (`build_rose`, one per variant in `SELECTIVE_METHODS`) close the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.objectives.losses import symmetric_kl
from subnets.objectives.modules import gradient_sync
from subnets.training import Callback, Objective, TrainingParts, model_inputs

from ..masked_adamw import MaskedAdamW
from ..parameters import LayerParameter, encoder_layer_parameters
from ..recording import UpdateMaskRecorder
from ..setup import SelectiveContext, adamw_options
from ..sync import all_reduce_mean

ROSE_VARIANTS = ("first", "second", "ensemble")
# `score_examples=None` (the command-line default) scores from the first B / DEFAULT_SCORE_DIVISOR examples of
# each batch (at least one); docs/selective.md gives its agreement with the exact score on real runs.
DEFAULT_SCORE_DIVISOR = 4
# ||m_prev|| is floored here so that the second-order score stays finite where the momentum is exactly zero.
MOMENTUM_NORM_FLOOR = 1e-12
# ROSE Eq. 3: KL_sym = (KL(p_a || p_b) + KL(p_b || p_a)) / 4, summed over the batch (the scores are its gradient norms)
ROSE_KL_SCALE = 0.25


def band_mask(scores: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """1.0 where q_lower <= score <= q_upper, else 0.0; q_p is the p-th percentile (0-100) of all `scores`.

    Percentiles interpolate linearly like `torch.quantile`, computed from one sort with host-side indices so
    that nothing synchronises with the device; the band [0, 100] keeps everything.
    """
    flat = scores.reshape(-1).float()
    ordered = flat.sort().values
    last = flat.numel() - 1

    def percentile(p: float) -> torch.Tensor:
        position = p / 100 * last
        below = int(position)
        above = min(below + 1, last)
        return torch.lerp(ordered[below], ordered[above], position - below)

    keep = (flat >= percentile(lower)) & (flat <= percentile(upper))
    return keep.to(scores.dtype).reshape(scores.shape)


def second_order_scores(grad_size: torch.Tensor, momentum_size: torch.Tensor, beta1: float) -> torch.Tensor:
    """|(1 - beta1) |g| / |m_prev| - 1| for norms (per tensor) or magnitudes (element-wise)."""
    return ((1 - beta1) * grad_size / momentum_size.clamp_min(MOMENTUM_NORM_FLOOR) - 1).abs()


class RoseMasks:
    """Computes the ROSE keep masks of the scored tensors once per optimizer step.

    `last` holds the masks of the most recent step (for logging); `add_first_order_gradients` is fed by
    `RoseFirstObjective` (summed over the micro-batches of a step).
    """

    def __init__(
        self, variant: str, *, lower: float = 0.0, upper: float = 100.0, gamma: float = 0.5, elementwise: bool = False
    ):
        if variant not in ROSE_VARIANTS:
            raise SubnetsError(f"Unknown ROSE variant '{variant}'; expected one of {', '.join(ROSE_VARIANTS)}.")
        if not 0.0 <= lower <= upper <= 100.0:
            raise SubnetsError(f"ROSE percentiles must satisfy 0 <= lower <= upper <= 100; got {lower}, {upper}.")
        if not 0.0 <= gamma <= 1.0:
            raise SubnetsError(f"ROSE-Ensemble gamma must lie in [0, 1]; got {gamma}.")
        self.variant, self.lower, self.upper, self.gamma = variant, lower, upper, gamma
        self.elementwise = elementwise
        self.scored: list[LayerParameter] = []
        self.params: list[torch.nn.Parameter] = []
        self.first_order_gradients: list[torch.Tensor] | None = None
        self.last: list[torch.Tensor] | None = None

    def bind(self, model: torch.nn.Module) -> "RoseMasks":
        """Score the `.weight` tensors of `model`'s encoder layers (call before building the optimizer)."""
        self.scored = encoder_layer_parameters(model, weights_only=True)
        self.params = [s.param for s in self.scored]
        self.first_order_gradients, self.last = None, None
        return self

    @property
    def uses_first_order(self) -> bool:
        return self.variant in ("first", "ensemble")

    def add_first_order_gradients(self, gradients: Sequence[torch.Tensor]) -> None:
        if self.first_order_gradients is None:
            self.first_order_gradients = [g.detach() for g in gradients]
        else:
            torch._foreach_add_(self.first_order_gradients, list(gradients))

    def compute(self, optimizer: MaskedAdamW) -> list[torch.Tensor]:
        """The keep masks for this step, one per scored tensor (0-d, or shaped like the tensor)."""
        masks: list[torch.Tensor] | None = None
        if self.variant in ("second", "ensemble"):
            masks = self._second_order(optimizer)
        if self.uses_first_order:
            first = self._first_order()
            masks = first if masks is None else torch._foreach_add(
                torch._foreach_mul(masks, 1 - self.gamma), torch._foreach_mul(first, self.gamma)
            )
        self.last = masks
        return masks

    def _band(self, scores: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        """Per-tensor scores (a vector) -> one band over all tensors; element-wise -> a band per tensor."""
        if self.elementwise:
            return [band_mask(s, self.lower, self.upper) for s in scores]
        return list(band_mask(scores, self.lower, self.upper).unbind())

    def _first_order(self) -> list[torch.Tensor]:
        gradients = self.first_order_gradients
        if gradients is None:
            raise SubnetsError(
                "ROSE-First/Ensemble found no dropout-KL gradients at the optimizer step; expected the training "
                "objective to be RoseFirstObjective (`--selective rose_first|rose_ensemble` sets it)."
            )
        self.first_order_gradients = None
        all_reduce_mean(gradients)
        if self.elementwise:
            return self._band(torch._foreach_abs(gradients))
        return self._band(torch.stack(torch._foreach_norm(gradients)))

    def _second_order(self, optimizer: MaskedAdamW) -> list[torch.Tensor]:
        reference = self.params[0]
        if optimizer.steps_taken == 0:  # m_prev = 0: keep everything at the first step
            one = torch.ones((), dtype=reference.dtype, device=reference.device)
            return [torch.ones_like(p) if self.elementwise else one for p in self.params]
        beta1 = optimizer.defaults["betas"][0]
        grads = [p.grad for p in self.params]
        momenta = [optimizer.state[p]["exp_avg"] for p in self.params]
        if self.elementwise:
            return self._band([second_order_scores(g.abs(), m.abs(), beta1) for g, m in zip(grads, momenta)])
        grad_norms = torch.stack(torch._foreach_norm(grads))
        momentum_norms = torch.stack(torch._foreach_norm(momenta))
        return self._band(second_order_scores(grad_norms, momentum_norms, beta1))


class RoseAdamW(MaskedAdamW):
    """AdamW with ROSE's per-step keep masks; ROSE uses betas (0.9, 0.98) (set them in the training arguments)."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], *, rose: RoseMasks, **adamw: Any):
        super().__init__(params, **adamw)
        if not rose.params:
            raise SubnetsError("RoseAdamW needs RoseMasks bound to the model (RoseMasks.bind) before it is built.")
        optimized = {id(p) for group in self.param_groups for p in group["params"]}
        missing = [s.name for s in rose.scored if id(s.param) not in optimized]
        if missing:
            raise SubnetsError(f"ROSE scores '{missing[0]}', which the optimizer does not train; expected every "
                               "scored encoder weight to be among the optimized parameters.")
        self.rose = rose

    def keep_masks(self) -> dict[torch.Tensor, torch.Tensor]:
        if any(p.grad is None for p in self.rose.params):
            raise SubnetsError("A ROSE-scored encoder weight has no gradient at the optimizer step; expected every "
                               "encoder layer to take part in the forward pass.")
        return dict(zip(self.rose.params, self.rose.compute(self)))


class RoseFirstObjective(Objective):
    """Cross-entropy over two dropout passes plus the gradient of their symmetric KL for ROSE-First scores.

    The two passes run as one forward of the doubled batch (dropout draws independent masks per row, so this
    equals two separate passes). The KL gradient is taken with `torch.autograd.grad` w.r.t. the scored tensors
    only, then the mean CE of both passes is backpropagated into `.grad`. Exact cost: one forward of 2B
    examples and two backward passes of 2B examples, about (2 + 4 + 4) / 3 = 3.3x a dense step by FLOP count.

    `score_examples` = k < B scores from the first k examples of the (shuffled) batch only (None: k = B /
    DEFAULT_SCORE_DIVISOR, at least 1; 0: the whole batch, exact): those run as their
    own doubled forward with both backward passes, the other B - k examples as a second doubled forward with the
    CE backward alone, so the KL backward costs k/B of the exact one, (6 + 4k/B) / 3 in all. The CE gradient is
    unchanged; the KL gradient is scaled by B/k, an unbiased estimate of the full batch's (the band only ranks
    the scores, so the scale matters only across accumulated micro-batches).
    """

    def __init__(self, rose: RoseMasks, score_examples: int | None = 0):
        if not rose.uses_first_order:
            raise SubnetsError(f"RoseFirstObjective needs the first-order or ensemble variant, got '{rose.variant}'.")
        if score_examples is not None and score_examples < 0:
            raise SubnetsError(f"ROSE-First score examples must be 0 (the whole batch) or positive; got {score_examples}.")
        self.rose, self.score_examples = rose, score_examples

    @staticmethod
    def _dropout_pair(model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                      labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean CE of two dropout passes of `inputs` (one doubled forward) and the logits of each pass."""
        doubled = {key: torch.cat([value, value]) for key, value in inputs.items()}
        logits_a, logits_b = model(**doubled).logits.float().chunk(2)
        return (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_b, labels)) / 2, logits_a, logits_b

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], loss_scale: float) -> torch.Tensor:
        inputs, labels = model_inputs(batch), batch["labels"]
        size = len(labels)
        if self.score_examples is None:
            scored = max(1, size // DEFAULT_SCORE_DIVISOR)
        else:
            scored = min(self.score_examples or size, size)
        head = {key: value[:scored] for key, value in inputs.items()}
        # DDP decides at the forward pass whether the backward all-reduces: the block holds both, so that a
        # split batch reduces once, after the tail's backward
        with gradient_sync(model, enabled=scored == size):
            loss, logits_a, logits_b = self._dropout_pair(model, head, labels[:scored])
            kl = ROSE_KL_SCALE * symmetric_kl(logits_a, logits_b)
            kl_gradients = torch.autograd.grad(kl * (loss_scale * size / scored),
                                               self.rose.params, retain_graph=True, materialize_grads=True)
            self.rose.add_first_order_gradients(kl_gradients)
            (loss * (loss_scale * scored / size)).backward()
        if scored == size:
            return loss.detach()
        tail = {key: value[scored:] for key, value in inputs.items()}
        rest, _, _ = self._dropout_pair(model, tail, labels[scored:])
        (rest * (loss_scale * (size - scored) / size)).backward()
        return (loss.detach() * scored + rest.detach() * (size - scored)) / size


class RoseCallback(Callback):
    """Binds ROSE to the trainer's model and records each step's masks: update ratios per layer to TensorBoard,
    every N-th step to the mask store."""

    def __init__(self, rose: RoseMasks, recorder: UpdateMaskRecorder):
        self.rose, self.recorder = rose, recorder

    def on_train_begin(self, trainer: Any) -> None:
        self.rose.bind(trainer.model)
        self.recorder.start(trainer, self.rose.scored)

    def on_step_end(self, trainer: Any) -> None:
        if self.rose.last is not None:
            self.recorder.observe(trainer, self.rose.last)

    def log_scalars(self, trainer: Any) -> dict[str, float]:
        return self.recorder.ratio_scalars()  # one scalar per layer, averaged over the steps since the last log

    def on_train_end(self, trainer: Any) -> None:
        self.recorder.finish(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"recorder": self.recorder.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recorder.load_state_dict(state.get("recorder", {}))


@dataclass
class RoseArguments:
    config_group = "SelectiveArguments"
    _argument_group_name = "selective optimizer: rose"  # its --help section

    rose_lower: float = field(default=0.0, metadata={
        "help": "ROSE: lower percentile (0-100) of the per-tensor scores; tensors below it are frozen for the step."})
    rose_upper: float = field(default=100.0, metadata={
        "help": "ROSE: upper percentile (0-100); tensors scoring above it are frozen for the step."})
    rose_gamma: float = field(default=0.5, metadata={
        "help": "ROSE-Ensemble: M = (1 - gamma) M_second + gamma M_first."})
    rose_score_examples: int | None = field(default=None, metadata={
        "help": "ROSE-First/Ensemble: score with the dropout-KL gradient of the first N examples of each batch "
                "(default: a quarter of the batch, which selects the same tensors as the exact score as often as "
                "two exact scores agree, see docs/selective.md; 0: all, exact as in the paper)."})
    rose_elementwise: bool = field(default=False, metadata={
        "help": "ROSE: one mask value per weight element (percentiles per tensor) instead of one per tensor."})


def build_rose(context: SelectiveContext, *, variant: str) -> TrainingParts:
    """ROSE's `variant` (first, second or ensemble; registered as rose_<variant>). ROSE-First/Ensemble replace the
    training objective (two dropout passes), so they refuse an adversarial or debiasing objective."""
    args = context.options[RoseArguments]
    rose = RoseMasks(variant, lower=args.rose_lower, upper=args.rose_upper, gamma=args.rose_gamma,
                     elementwise=args.rose_elementwise)
    if rose.uses_first_order and context.objective_args is not None:
        for option in ("adversary", "debias"):
            if getattr(context.objective_args, option, "none") != "none":
                raise SubnetsError(f"--selective {context.name} trains with its own two-dropout-pass objective; "
                                   f"expected --{option} none (use rose_second to combine ROSE with --{option}).")

    def rose_optimizer(groups: list[dict[str, Any]], training: TrainingArguments) -> torch.optim.Optimizer:
        return RoseAdamW(groups, rose=rose, **adamw_options(training))

    objective = RoseFirstObjective(rose, args.rose_score_examples) if rose.uses_first_order else None
    return TrainingParts(rose_optimizer, [RoseCallback(rose, context.recorder)], objective)
