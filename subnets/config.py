"""HF-style argument dataclasses, parsed by `transformers.HfArgumentParser` with an optional recipe file.

A recipe (YAML or JSON, keys = option names) supplies defaults; command-line options override it.
`--recipe NAME` looks for `pipelines/recipes/NAME.yaml` first, then treats NAME as a path.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser

from .errors import SubnetsError

RECIPE_DIR = Path(__file__).resolve().parent.parent / "pipelines" / "recipes"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="minilm",
        metadata={"help": "Model name, path, or stage run directory; 'minilm' is the packaged all-MiniLM-L6-v2."})


@dataclass
class DataArguments:
    task_name: str = field(default="sst2", metadata={"help": "Task to train on (see subnets.tasks.TASKS)."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Local data folder (layout of the offline data folder); default: $SUBNETS_DATA_DIR, "
                          "else the Hugging Face hub."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a fixed seeded sample."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N examples."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every input to max_seq_length."})


@dataclass
class TrainingArguments:
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
    metric_for_best_model: str | None = field(default=None, metadata={"help": "Default: the task's metric."})
    best_after_fraction: float = field(
        default=0.0, metadata={"help": "Only select the best checkpoint after this fraction of training."})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (CPU always runs fp32)."})
    dataloader_num_workers: int = 0
    num_threads: int | None = field(default=None, metadata={
        "help": "Intra-op CPU threads (default: $OMP_NUM_THREADS if set, else the cores this process may use); a "
                "runner sharing the cores between workers passes each its share."})
    disable_tqdm: bool = False
    ddp_find_unused_parameters: bool = False


class StageArgs:
    """The parsed dataclasses of one stage; `args[TrainingArguments]` or `args.learning_rate`."""

    def __init__(self, instances: Sequence[Any]):
        self.instances = list(instances)

    def __getitem__(self, cls: type) -> Any:
        for inst in self.instances:
            if isinstance(inst, cls):
                return inst
        raise KeyError(cls.__name__)

    def __getattr__(self, name: str) -> Any:
        for inst in self.__dict__.get("instances", []):
            if name in {f.name for f in dataclasses.fields(inst)}:
                return getattr(inst, name)
        raise AttributeError(name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {type(i).__name__: dataclasses.asdict(i) for i in self.instances}


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe file's options (YAML or JSON), by name from pipelines/recipes or by path."""
    candidates = [RECIPE_DIR / f"{name_or_path}.yaml", RECIPE_DIR / f"{name_or_path}.json", Path(name_or_path)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise SubnetsError(f"Recipe '{name_or_path}' not found; expected a file path or a name in {RECIPE_DIR}.")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SubnetsError(f"Recipe {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}.") from e
    if not isinstance(data, dict):
        raise SubnetsError(f"Recipe {path} must be a mapping of option names to values.")
    return data


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


def parse_args(types: Sequence[type], argv: Sequence[str] | None = None) -> StageArgs:
    """Parse `argv` into instances of the dataclasses `types`; `--recipe` supplies defaults.

    List options may be repeated (`--checkpoint a --checkpoint b`) or given several values at once.
    """
    parser = HfArgumentParser(list(types))
    argv = _merge_repeated_lists(parser, list(sys.argv[1:] if argv is None else argv))
    parser.add_argument("--recipe", default=None, help="Recipe file (YAML/JSON) or name in pipelines/recipes.")
    pre, _ = parser.parse_known_args(argv)
    if pre.recipe:
        recipe = load_recipe(pre.recipe)
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise SubnetsError(f"Recipe '{pre.recipe}' sets unknown option(s) {', '.join(unknown)}; "
                               f"expected options of this stage (see --help).")
        parser.set_defaults(**recipe)
    *parsed, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if rest:
        raise SubnetsError(f"Unknown option(s) {' '.join(rest)}; see --help for this stage's options.")
    return StageArgs([p for p in parsed if dataclasses.is_dataclass(p)])
