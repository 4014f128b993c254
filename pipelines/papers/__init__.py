"""What `pipelines/reproduce.py` reproduces: per paper, its tables (rows = methods as chains of stages, columns =
metrics read from the chains' last runs) and the paper's own numbers (one data module per paper)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from subnets.pipelines.sweeping.plan import Chain

BUDGETS = ("smoke", "cpu", "paper")
# SST-2's labelled test set (1,821 sentences): reported beside SST-2 tables as a held-out confirmation, never
# selected on
SST2_TEST = "sst2-test"


@dataclass(frozen=True)
class Column:
    """A metric key of the row's runs (flat, as `subnets.pipelines.sweeping.aggregate.flat_metrics` names it), read
    from the runs whose grid point matches `where` (keys the point lacks do not filter); shown times `scale`."""

    name: str
    key: str
    where: Mapping[str, Any] = field(default_factory=dict)
    scale: float = 100.0


@dataclass
class Row:
    """A method: its chain, or one chain per task where the table's columns span tasks (a column reads the runs
    whose metrics hold its key); None where the toolkit has no implementation of it (the row reads n/a)."""

    name: str
    chain: Chain | Sequence[Chain] | None
    where: Mapping[str, Any] = field(default_factory=dict)  # the grid points of the chain this row reads

    def chains(self) -> list[Chain]:
        if self.chain is None:
            return []
        return [self.chain] if isinstance(self.chain, Chain) else list(self.chain)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[Row]
    plot: str | None = None  # x-axis name (x in %): draw the rows "<series>@<x>" as lines of each column against x
    baseline: str | None = None  # the row every other row is paired with, on the same examples (None: no pairing)
    comparisons: tuple[tuple[str, str], ...] = ()  # further (row, other row) pairs, each paired the same way

    def __post_init__(self) -> None:
        names = {row.name for row in self.rows}
        unknown = [n for n in (self.baseline, *(n for pair in self.comparisons for n in pair)) if n and n not in names]
        if unknown:
            raise ValueError(f"Table {self.name!r} pairs rows it does not have: {', '.join(map(repr, unknown))}.")


@dataclass(frozen=True)
class Setting:
    """What a budget fixes: the model, the data and the options every run of a table shares."""

    budget: str
    model: str
    data_dir: str
    seeds: tuple[int, ...]
    train: Mapping[str, Any]  # options for every training stage (steps, samples, lengths)
    evaluate: Mapping[str, Any]  # options for evaluate (sample sizes)
    tasks: tuple[str, ...]  # the tasks whose tables are built (the budget's, or those the user picked)


@dataclass(frozen=True)
class Tuning:
    """A cpu-budget setting chosen by `reproduce.py --tuning` on held-out training rows, never on a reported set:
    `chains` (training stages only; their grids hold `grid`'s keys beside the seeds) train every candidate of
    `grid`, each scored by `metric` of its chains' last runs on the held-out split (the stage's own eval_*); the
    candidate with the highest mean over seeds and chains is chosen where it beats `current` by more than one
    standard error (`pipelines/tuning.py`'s `choose`). `current` is what the budget uses today (the
    constant `constant` names), one of the candidates."""

    name: str
    constant: str
    current: Mapping[str, Any]  # grid key -> the budget's value today
    grid: Mapping[str, Sequence[Any]]  # grid key ("stage.option") -> candidates
    chains: Sequence[Chain]
    metric: str = "eval_accuracy"


@dataclass(frozen=True)
class Paper:
    name: str
    citation: str
    numbers: Mapping[str, Mapping[str, Mapping[str, float]]]  # {table: {row: {column: value}}}
    tasks: tuple[str, ...]  # tasks and evaluation sets its smoke data must hold
    models: Mapping[str, str]  # budget -> model name
    budget_tasks: Mapping[str, Sequence[str]]  # budget -> the training tasks of its tables
    tables: Callable[[Setting], list[Table]]
    # an extra report section from the finished runs: (output folder, results.json's {table: {row: {column: cell}}})
    notes: Callable[[Path, Mapping[str, Any]], str] | None = None
    # the settings its cpu budget chose by hand, as trials on held-out training rows (`reproduce.py --tuning`)
    tuning: Callable[[Setting], list[Tuning]] | None = None


def chain(setting: Setting, stages: str, options: Mapping[str, Mapping[str, Any]] | None = None,
          grid: Mapping[str, list[Any]] | None = None) -> Chain:
    """A chain of `stages` ("stage1,stage2,...") on the budget's model, data and shared options, over its seeds;
    `options[stage]` adds or overrides per-stage options, `grid` adds grid keys."""
    names = stages.split(",")
    merged: dict[str, dict[str, Any]] = {"*": {"model_name_or_path": setting.model, "data_dir": setting.data_dir}}
    training = [s for s in names if s.startswith("stage")]
    for stage in training:
        merged[stage] = dict(setting.train)
    if "evaluate" in names:
        merged["evaluate"] = dict(setting.evaluate)
    for stage, values in (options or {}).items():
        merged.setdefault(stage, {}).update(values)
    seeds = {"seed": list(setting.seeds)} if training or "bias" in names else {}
    return Chain(names, merged, {**seeds, **(grid or {})})


def finetune(setting: Setting, task: str, stage1: Mapping[str, Any], evaluate: Mapping[str, Any],
             grid: Mapping[str, list[Any]] | None = None) -> Chain:
    """stage1 (fine-tune on `task` with `stage1` options) -> evaluate (with `evaluate` options, e.g. its sets)."""
    return chain(setting, "stage1,evaluate", {"*": {"task_name": task}, "stage1": stage1, "evaluate": evaluate}, grid)


def held_out(row: Chain, test_set: str = SST2_TEST) -> Chain:
    """The row's models (the same stage runs) evaluated on `test_set` without an attack: evaluate runs of their
    own, so that the row's other runs keep their names."""
    evaluate = {k: v for k, v in row.options.get("evaluate", {}).items() if not k.startswith("attack")}
    return Chain(row.stages, {**row.options, "evaluate": {**evaluate, "tasks": test_set}},
                 {k: v for k, v in row.grid.items() if k != "evaluate.attack"})



def trial(row: Chain, grid: Mapping[str, Sequence[Any]], options: Mapping[str, Mapping[str, Any]] | None = None) \
        -> Chain:
    """A row's chain as a tuning trial over `grid` (beside its own grid keys), `options[stage]` added: its training
    stages only, so that nothing of a trial reads a reported set (each is scored by its last stage's eval_* on
    held-out rows)."""
    merged = {k: {**v, **(options or {}).get(k, {})} for k, v in row.options.items() if k != "evaluate"}
    return Chain([s for s in row.stages if s != "evaluate"], merged,
                 {**{k: v for k, v in row.grid.items() if not k.startswith("evaluate.")}, **grid})


# The candidates of the cpu budgets' fine-tuning schedules (minilm, 4,000 examples): learning rates around the
# ones chosen by hand (2e-5 to 2e-4, so that no choice sits at the grid's edge) and 1 or 2 epochs (2 is the
# budgets' time cap: about 2 hours per paper on 2 cores); docs/reproduce.md, "Tuning"
CPU_SCHEDULE_GRID = {"stage1.learning_rate": [2e-5, 5e-5, 1e-4, 2e-4], "stage1.num_train_epochs": [1, 2]}


def schedule_tuning(constant: str, cpu: Mapping[str, Any], rows: Sequence[Chain],
                    grid: Mapping[str, Sequence[Any]] = CPU_SCHEDULE_GRID) -> Tuning:
    """The fine-tuning schedule (stage 1 of `rows`, one per task) tried on `grid`; `cpu`: the cpu budget's
    options today (the constant `constant`)."""
    current = {key: cpu[key.rpartition(".")[2]] for key in grid}
    return Tuning("fine-tuning schedule", constant, current, grid, [trial(row, grid) for row in rows])
