"""HF-style argument dataclasses, parsed by `transformers.HfArgumentParser` with an optional recipe file.

A recipe (YAML or JSON, keys = option names) supplies defaults; command-line options override it.
`--recipe NAME` looks for `NAME.yaml` (or `.json`) in the caller's recipe folder first (the stages pass
`subnets.pipelines.RECIPE_DIR`), then treats NAME as a path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from .errors import SubnetsError

LR_SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
REPORT_TO = ("tensorboard", "none")
EVAL_STRATEGIES = ("epoch", "steps", "no")
DDP_BACKENDS = ("nccl", "gloo")
# Options that do not change what a run computes (a run directory may be resumed with other values, or moved).
RUN_NEUTRAL_OPTIONS = {"output_dir", "overwrite_output_dir", "disable_tqdm", "logging_steps", "dataloader_num_workers",
                       "per_device_eval_batch_size", "save_steps", "num_threads", "use_cpu", "torch_compile",
                       "torch_compile_backend", "ddp_backend", "allow_changed_data"}


@dataclass
class ModelArguments:
    _argument_group_name = "model"  # its --help section
    model_name_or_path: str = field(
        default="minilm",
        metadata={"help": "Model name, path, or stage run directory; 'minilm' is the packaged all-MiniLM-L6-v2."})


@dataclass
class DataArguments:
    _argument_group_name = "data (built-in tasks)"  # its --help section
    task_name: str | None = field(
        default=None,
        metadata={"help": "Task to train on (see subnets.tasks.TASKS), or the name of a task read from --train_file; "
                          "default: the task of the run directory a stage starts from, else sst2."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Local data folder (layout of the offline data folder); default: $SUBNETS_DATA_DIR, "
                          "else the Hugging Face hub."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a fixed seeded sample."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples."})
    validation_split_percentage: int = field(default=0, metadata={
        "help": "Hold out this percentage of the training data (seeded; grouped so that SST-2 phrases of one "
                "sentence and pairs sharing a premise never straddle it) as the split every evaluation during "
                "training and checkpoint-best use; 0: the task's evaluation split."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every input to max_seq_length."})
    allow_changed_data: bool = field(
        default=False, metadata={"help": "Resume a run although a data file changed since it started (the change is "
                                         "recorded in run_config.json)."})

    def __post_init__(self) -> None:
        check_at_least_one(self, ("max_seq_length",))  # 0 would not mean "no truncation"
        check_value(self, "validation_split_percentage", 0 <= self.validation_split_percentage < 100,
                    "a percentage of the training data from 0 (the task's evaluation split) to 99")


def check_value(options: object, name: str, valid: bool, expected: str) -> None:
    """The one error of an option value out of its range (`valid` is False for NaN: write ranges as comparisons)."""
    if not valid:
        raise SubnetsError(f"--{name} {getattr(options, name)} is out of range; expected {expected}.")


def check_finite(options: object) -> None:
    """Refuse NaN and infinite values of an option dataclass's float fields; infinity only in the fields its class
    names in `allow_inf` (where it has a meaning, e.g. RoAST's beta = inf for Child-Tuning-D)."""
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, float) and not math.isfinite(value) and not (
                math.isinf(value) and f.name in getattr(options, "allow_inf", ())):
            raise SubnetsError(f"--{f.name} {value} is not a finite number; expected a finite value.")


def check_at_least_one(options: object, names: Sequence[str]) -> None:
    """The one error of an option dataclass's counts (batch sizes, steps) that must be at least 1."""
    for name in names:
        if getattr(options, name) < 1:
            raise SubnetsError(f"--{name} must be at least 1; got {getattr(options, name)}.")


@dataclass
class TrainingArguments:
    _argument_group_name = "training"  # its --help section
    output_dir: str | None = field(default=None, metadata={"help": "Run directory (required)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a run directory that holds a different run."})
    num_train_epochs: float = 3.0
    max_steps: int = field(default=-1, metadata={"help": "If > 0, overrides num_train_epochs."})
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 128
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0 disables)."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    seed: int = 42
    eval_strategy: str = field(default="epoch", metadata={"help": "epoch | steps | no"})
    eval_steps: int = 500
    save_steps: int = field(
        default=0, metadata={"help": "Also write the resumable checkpoint-last every N steps (0: at evaluations)."})
    save_model_at_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "Keep plain model snapshots checkpoint-step-<k> at these steps (rewinding, stage 3 init)."})
    logging_steps: int = 50
    metric_for_best_model: str | None = field(
        default=None, metadata={"help": "Metric that picks checkpoint-best: accuracy, f1 (F1 tasks), loss or ece, with "
                                        "or without the eval_ prefix. Default: the task's metric."})
    greater_is_better: bool | None = field(
        default=None, metadata={"help": "Whether a larger metric is better (default: False for loss and ece, "
                                        "else True)."})
    best_after_fraction: float = field(
        default=0.0, metadata={"help": "Only select the best checkpoint after this fraction of training."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": " | ".join(LR_SCHEDULERS)})
    save_total_limit: int | None = field(
        default=None, metadata={"help": "Keep only the newest N checkpoint-step-<k> snapshots (checkpoint-best and "
                                        "checkpoint-last are always kept)."})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard (<output_dir>/tb) | none"})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory, slower steps)."})
    label_smoothing_factor: float = field(
        default=0.0, metadata={"help": "Cross-entropy against (1 - f) one-hot + f / num_labels targets."})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (CPU always runs fp32)."})
    use_cpu: bool = field(default=False, metadata={
        "help": "Train and evaluate on the CPU even where CUDA is available (also $SUBNETS_USE_CPU=1)."})
    torch_compile: bool = field(default=False, metadata={
        "help": "torch.compile the model for training and evaluation (off until shown faster: docs/performance.md)."})
    torch_compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend."})
    ddp_backend: str | None = field(default=None, metadata={
        "help": "torch.distributed backend under torchrun: nccl | gloo (default: nccl on CUDA, gloo on the CPU)."})
    dataloader_num_workers: int = 0
    num_threads: int | None = field(default=None, metadata={
        "help": "Intra-op CPU threads (default: $OMP_NUM_THREADS if set, else the cores this process may use); a "
                "runner sharing the cores between workers passes each its share."})
    disable_tqdm: bool = False
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        """Reject values that would train nothing or fail mid-run, while parsing (before anything is written)."""
        choices = {"lr_scheduler_type": LR_SCHEDULERS, "report_to": REPORT_TO, "eval_strategy": EVAL_STRATEGIES,
                   "ddp_backend": (None, *DDP_BACKENDS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                allowed = [a for a in allowed if a is not None]
                raise SubnetsError(f"Unknown --{name} '{getattr(self, name)}'; expected one of {', '.join(allowed)}.")
        check_finite(self)
        check_at_least_one(self, ("per_device_train_batch_size", "per_device_eval_batch_size",
                                  "gradient_accumulation_steps", "eval_steps", "logging_steps"))
        check_value(self, "learning_rate", self.learning_rate >= 0, "a non-negative number (0 keeps the weights)")
        check_value(self, "weight_decay", self.weight_decay >= 0, "a number >= 0")
        check_value(self, "warmup_ratio", 0 <= self.warmup_ratio <= 1, "a fraction of the steps in [0, 1]")
        check_value(self, "warmup_steps", self.warmup_steps >= 0, "a number of steps >= 0")
        check_value(self, "max_grad_norm", self.max_grad_norm >= 0, "a norm >= 0 (0 disables clipping)")
        check_value(self, "adam_beta1", 0 <= self.adam_beta1 < 1, "a value in [0, 1)")
        check_value(self, "adam_beta2", 0 <= self.adam_beta2 < 1, "a value in [0, 1)")
        check_value(self, "adam_epsilon", self.adam_epsilon > 0, "a positive number")
        check_value(self, "seed", 0 <= self.seed < 2**32, "an integer in [0, 2**32 - 1]")
        check_value(self, "best_after_fraction", 0 <= self.best_after_fraction <= 1, "a fraction in [0, 1]")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise SubnetsError(f"--num_train_epochs {self.num_train_epochs} trains nothing; expected a positive "
                               f"number of epochs (or --max_steps N > 0).")
        if self.save_steps < 0:
            raise SubnetsError(f"--save_steps must be 0 (at evaluations only) or positive; got {self.save_steps}.")
        if not 0.0 <= self.label_smoothing_factor < 1.0:
            raise SubnetsError(f"--label_smoothing_factor {self.label_smoothing_factor} is out of range; expected a "
                               f"value in [0, 1).")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise SubnetsError(f"--save_total_limit {self.save_total_limit} is not valid; expected at least 1.")


class StageArgs:
    """The parsed dataclasses of one stage, read per group: `args[TrainingArguments].learning_rate`; the options
    every stage reads also as properties (`args.output_dir`, `args.seed`, `args.task_name`, `args.data_dir`).

    `explicit`: the options the command line or the recipe set (the others kept their defaults).
    """

    def __init__(self, instances: Sequence[Any], explicit: frozenset[str] = frozenset()):
        self.instances = list(instances)
        self.explicit = explicit

    def __getitem__(self, cls: type) -> Any:
        for inst in self.instances:
            if isinstance(inst, cls):
                return inst
        raise KeyError(cls.__name__)

    @property
    def output_dir(self) -> str | None:
        return self[TrainingArguments].output_dir

    @property
    def seed(self) -> int:
        return self[TrainingArguments].seed

    @property
    def task_name(self) -> str | None:
        return self[DataArguments].task_name

    @property
    def data_dir(self) -> str | None:
        return self[DataArguments].data_dir

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Option values by group; a method's option group with a `config_group` class attribute is recorded
        under that group (its family's), so run_config.json keeps one section per family."""
        groups: dict[str, dict[str, Any]] = {}
        for inst in self.instances:
            groups.setdefault(getattr(inst, "config_group", type(inst).__name__), {}).update(dataclasses.asdict(inst))
        return groups


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A mapping that refuses a key given twice (JSON and YAML loaders would silently keep the last value)."""
    keys = [k for k, _ in pairs]
    repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if repeated:
        raise _RepeatedKey(", ".join(repeated))
    return dict(pairs)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, with `_unique_keys` mappings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # the keys written in this mapping (a merge `<<: *base` may be overridden, as YAML defines)
        _unique_keys([(self.construct_object(k, deep=deep), None) for k, _ in node.value
                      if k.tag != "tag:yaml.org,2002:merge"])
        return super().construct_mapping(node, deep=deep)


def load_recipe(name_or_path: str, recipe_dir: Path | None = None) -> dict[str, Any]:
    """A recipe file's options (YAML or JSON), by name from `recipe_dir` or by path."""
    named = [recipe_dir / f"{name_or_path}.yaml", recipe_dir / f"{name_or_path}.json"] if recipe_dir else []
    path = next((p for p in [*named, Path(name_or_path)] if p.is_file()), None)
    if path is None:
        raise SubnetsError(f"Recipe '{name_or_path}' not found; expected a file path"
                           + (f" or a name in {recipe_dir}." if recipe_dir else "."))
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else \
            yaml.load(text, Loader=_UniqueKeyLoader)
    except _RepeatedKey as e:
        raise SubnetsError(f"Recipe {path} sets {e} more than once; expected each option once.") from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SubnetsError(f"Recipe {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}.") from e
    if not isinstance(data, dict):
        raise SubnetsError(f"Recipe {path} must be a mapping of option names to values.")
    return data


_EXPECTED = {int: "an integer", float: "a number", str: "a string", string_to_bool: "true or false"}


def _convert_scalar(convert: Callable[[Any], Any], value: Any) -> Any:
    if isinstance(value, (list, dict)):
        raise ValueError(value)
    if convert is string_to_bool:
        if not isinstance(value, (bool, str)):
            raise ValueError(value)
        return string_to_bool(value)
    if isinstance(value, bool):
        raise ValueError(value)
    if convert is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return convert(value) if convert is not str else str(value)


def _recipe_value(action: argparse.Action, value: Any) -> Any:
    """A recipe value converted to the option's type as the command line would be; ValueError naming what was
    expected if it does not fit (argparse leaves non-string defaults as they are, so they would fail mid-run)."""
    convert = action.type
    if value is None or convert not in _EXPECTED:
        return value
    is_list = action.nargs in ("+", "*")
    try:
        if is_list and not isinstance(value, list):
            raise ValueError(value)
        converted = [_convert_scalar(convert, v) for v in value] if is_list else _convert_scalar(convert, value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ValueError(("a list, each item " if is_list else "") + _EXPECTED[convert]) from None
    if action.choices and converted not in action.choices:
        raise ValueError(f"one of {', '.join(map(str, action.choices))}")
    return converted


def _typed_recipe(parser: HfArgumentParser, recipe: dict[str, Any], name: str) -> dict[str, Any]:
    actions = {}
    for action in parser._actions:
        actions.setdefault(action.dest, action)
    unknown = sorted(set(recipe) - set(actions))
    if unknown:
        raise SubnetsError(f"Recipe '{name}' sets unknown option(s) {', '.join(unknown)}; "
                           f"expected options of this stage (see --help).")
    typed = {}
    for key, value in recipe.items():
        try:
            typed[key] = _recipe_value(actions[key], value)
        except ValueError as e:
            raise SubnetsError(f"Recipe '{name}' sets {key} to {value!r}; expected {e}.") from None
    return typed


def _explicit_options(parser: HfArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options present in `argv` (`--opt value` or `--opt=value`)."""
    given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    return {a.dest for a in parser._actions if given & set(a.option_strings)}


def _merge_repeated_lists(parser: HfArgumentParser, argv: list[str]) -> list[str]:
    """`--opt a --opt b` -> `--opt a b` for list options (argparse would keep only the last occurrence)."""
    list_options = {s for a in parser._actions if a.nargs in ("+", "*") for s in a.option_strings}
    merged: dict[str, list[str]] = {}
    rest: list[str] = []
    current: list[str] | None = None
    for token in argv:
        if token in list_options:
            current = merged.setdefault(token, [])
        elif token.startswith("--"):
            current = None
            rest.append(token)
        elif current is not None:
            current.append(token)
        else:
            rest.append(token)
    return rest + [t for opt, values in merged.items() for t in (opt, *values)]


def _raise_parse_error(message: str) -> None:
    raise SubnetsError(f"{message[0].upper()}{message[1:]}; see --help for this stage's options.")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help: every option with its default, also those without a help text (each dataclass's options under its
    `_argument_group_name`, HfArgumentParser's section title)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in (action.help or "").lower():
            return action.help  # a help text that names its default in words keeps them
        return f"{action.help or ''} (default: %(default)s)".lstrip()


def parse_args(types: Sequence[type], argv: Sequence[str] | None = None, *, recipe_dir: Path | None = None) -> StageArgs:
    """Parse `argv` into instances of the dataclasses `types`; `--recipe` (a file, or a name in `recipe_dir`)
    supplies defaults.

    List options may be repeated (`--checkpoint a --checkpoint b`) or given several values at once.
    """
    parser = HfArgumentParser(list(types), formatter_class=HelpFormatter,
                              usage="%(prog)s [options]   (--help lists them by group, with their defaults)")
    parser.error = _raise_parse_error  # one `error:` line (run_cli), not argparse's usage text and exit
    for action in parser._actions:
        if action.option_strings and action.help is None:  # argparse leaves an option without help bare
            action.help = "(default: %(default)s)"
    argv = _merge_repeated_lists(parser, list(sys.argv[1:] if argv is None else argv))
    parser.add_argument("--recipe", default=None,
                        help="Recipe file (YAML/JSON)" + (f" or name in {recipe_dir}." if recipe_dir else "."))
    pre, _ = parser.parse_known_args(argv)
    explicit = _explicit_options(parser, argv)
    if pre.recipe:
        recipe = _typed_recipe(parser, load_recipe(pre.recipe, recipe_dir), pre.recipe)
        explicit |= set(recipe)
        parser.set_defaults(**recipe)
    *parsed, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if rest:
        raise SubnetsError(f"Unknown option(s) {' '.join(rest)}; see --help for this stage's options.")
    instances = [p for p in parsed if dataclasses.is_dataclass(p)]
    for instance in instances:
        check_finite(instance)
    return StageArgs(instances, frozenset(explicit - {"recipe"}))
