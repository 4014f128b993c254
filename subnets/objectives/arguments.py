"""Command-line options of the robust objectives (shared by every stage) and the objective factory."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SubnetsError
from ..tasks import TaskSpec
from .debias import ConfRegLoss, PoELoss, PredictionCache, ReweightLoss
from .losses import LossFn, LossObjective, cross_entropy, smoothed_cross_entropy
from .perturbers import PGD, FreeLB, PerturbationConfig, RoASTPerturbation

ADVERSARIES = ("none", "freelb", "pgd", "roast")
DEBIAS = ("none", "poe", "reweight", "conf_reg")


@dataclass
class ObjectiveArguments:
    adversary: str = field(default="none", metadata={
        "help": "Adversarial training in embedding space: none | freelb (Robust Tickets) | pgd | roast (RoAST's "
                "single step on the embedding output)."})
    adv_steps: int = field(default=2, metadata={"help": "Ascent steps K (FreeLB, PGD)."})
    adv_lr: float = field(default=0.1, metadata={
        "help": "Ascent step size eta (FreeLB, PGD); for roast the perturbation size eps."})
    adv_init_mag: float = field(default=0.05, metadata={
        "help": "Magnitude of the random initial perturbation (0: start from zero)."})
    adv_max_norm: float = field(default=0.0, metadata={
        "help": "Bound on the perturbation's norm per example (0: unbounded, as in Robust Tickets; PGD needs > 0)."})
    adv_norm: str = field(default="l2", metadata={"help": "Norm of ascent steps and bound: l2 | linf."})
    adv_weight: float | None = field(default=None, metadata={
        "help": "Weight of the adversarial loss: pgd: L(clean) + w L(adv), default 1; roast: (1-w) L(clean) + "
                "w L(adv), default 0.5. FreeLB has no clean loss and ignores it."})
    adv_kl_weight: float = field(default=0.01, metadata={
        "help": "roast: weight of the symmetric KL between clean and adversarial predictions."})
    debias: str = field(default="none", metadata={
        "help": "Debiasing loss (SRNets): none | poe (product of experts) | reweight | conf_reg (confidence "
                "regularisation; needs --teacher_predictions)."})
    bias_predictions: str | None = field(default=None, metadata={
        "help": "Bias-only predictions for the training split (bias_predictions.safetensors from "
                "pipelines/train_bias_model.py)."})
    teacher_predictions: str | None = field(default=None, metadata={
        "help": "conf_reg: a fine-tuned teacher's predictions for the training split "
                "(pipelines/train_bias_model.py --teacher_model RUN_DIR)."})


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SubnetsError(f"--{name} must be one of {', '.join(choices)}, got '{value}'.")


def _load_checked(path: str | None, option: str, kind: str, task: TaskSpec, train_dataset) -> PredictionCache:
    if not path:
        raise SubnetsError(f"This --debias choice needs --{option} (a predictions file for the training split).")
    cache = PredictionCache.load(path)
    if cache.kind != kind:
        raise SubnetsError(f"--{option} {path} holds {cache.kind} predictions; expected {kind} predictions.")
    cache.check_alignment(train_dataset, task.name, len(task.label_names), source=f"Predictions in {path}")
    return cache


def build_loss(args: ObjectiveArguments, task: TaskSpec, train_dataset, label_smoothing: float = 0.0) -> LossFn:
    """The per-batch loss: cross-entropy (label-smoothed if asked), or a debiasing loss joined to cached
    predictions by example id."""
    _check_choice("debias", args.debias, DEBIAS)
    if args.debias == "none":
        return smoothed_cross_entropy(label_smoothing) if label_smoothing else cross_entropy
    if label_smoothing:
        raise SubnetsError("--label_smoothing_factor applies to plain cross-entropy; expected 0 with --debias.")
    bias = _load_checked(args.bias_predictions, "bias_predictions", "bias", task, train_dataset)
    if args.debias == "poe":
        return PoELoss(bias)
    if args.debias == "reweight":
        return ReweightLoss(bias)
    teacher = _load_checked(args.teacher_predictions, "teacher_predictions", "teacher", task, train_dataset)
    return ConfRegLoss(bias, teacher)


def build_objective(args: ObjectiveArguments, task: TaskSpec, train_dataset, label_smoothing: float = 0.0):
    """The training objective (`objective(model, batch, loss_scale) -> detached loss`) for these options.

    `train_dataset` (tokenised or not) must carry `idx` and labels when a debiasing loss is chosen; the
    cached predictions are checked against it here, once.
    """
    _check_choice("adversary", args.adversary, ADVERSARIES)
    loss_fn = build_loss(args, task, train_dataset, label_smoothing)
    if args.adversary == "none":
        return LossObjective(loss_fn)
    if args.adversary == "roast":
        weight = 0.5 if args.adv_weight is None else args.adv_weight
        return RoASTPerturbation(args.adv_lr, weight, args.adv_kl_weight, loss_fn)
    cfg = PerturbationConfig(args.adv_steps, args.adv_lr, args.adv_init_mag, args.adv_max_norm, args.adv_norm)
    if args.adversary == "freelb":
        return FreeLB(cfg, loss_fn)
    return PGD(cfg, 1.0 if args.adv_weight is None else args.adv_weight, loss_fn)
