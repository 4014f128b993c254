"""From stages, fixed options and a grid to the runs of a sweep: one directory per run, named by its options.

A chain is a list of stages run one after the other; each stage's run directory feeds the next stage's input
option (stage1 -> `--model_name_or_path` of stage2, stage2 -> `--mask` of stage3, the last training stage ->
`--checkpoint` of evaluate, a `bias` run -> `--bias_predictions` of later stages). A grid point fixes one value
per grid key; a key applies to every stage of the chain that accepts the option (`stage2.target_sparsity` names
one stage). Runs with the same stage, options and upstream run are one run, shared by every chain that needs it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from subnets.errors import SubnetsError

from .stages import Stage, get_stage

Options = dict[str, Any]  # option name -> value (a list for list options, True/False for flags)

# Options whose values name a run directory (with the grid keys) when they are set: the directory name reads
# like the run (`stage3/sparsity=0.3,seed=1-1f2e...`); the hash of every option keeps names unique.
NAME_KEYS = ("task_name", "method", "adversary", "debias", "selective", "init", "target_sparsity", "sparsity",
             "attack", "seed")
# Store options every run of a sweep shares by default: one mask store under the sweep's output directory.
SHARED_STORES = ("mask_store",)
STORE_DIR = "masks_store"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


@dataclass(frozen=True)
class Run:
    """One stage run: `argv` is what the stage script receives; `parent` is the upstream run's name."""

    name: str  # "<stage>/<label>-<hash>", the run directory relative to the sweep's output directory
    stage: str
    options: Options
    parent: str | None
    argv: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """What `sweep_run.json` holds once the run finished; a run is finished when this matches."""
        return {"stage": self.stage, "argv": list(self.argv)}


@dataclass
class Chain:
    """Stages run in order, with options per stage (`options[stage]`) and for every stage that accepts them
    (`options["*"]`), expanded over a grid (`grid[key]` = values; `key` or `stage.key`)."""

    stages: Sequence[str]
    options: Mapping[str, Options] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Leaf:
    """The last run of a chain at one grid point (where its results are read)."""

    run: Run
    point: Mapping[str, Any]


def option_value(value: Any) -> list[str]:
    """Command-line tokens of one option value."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, bool):
        return [str(value).lower()]
    return [str(value)]


def options_argv(options: Mapping[str, Any]) -> list[str]:
    """Command-line tokens of a stage's options: --key value..."""
    return [token for key, value in options.items() for token in (f"--{key}", *option_value(value))]


def parse_assignment(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SubnetsError(f"'{text}' is not an assignment; expected key=value (or stage.key=value).")
    return key, value


def fed_options(stages: Sequence[Stage]) -> dict[str, set[str]]:
    """Per stage, the options the chain feeds from an earlier stage's run directory."""
    fed: dict[str, set[str]] = {}
    for i, stage in enumerate(stages):
        before = {s.name for s in stages[:i]}
        fed[stage.name] = {spec.option for spec in stage.inputs if before & set(spec.sources)}
    return fed


def _split_key(key: str, stages: Sequence[Stage]) -> tuple[list[Stage], str]:
    """The stages a (possibly stage-qualified) option key applies to, and the bare option name. An unqualified
    key skips the stages whose option the chain feeds (`model_name_or_path` goes to stage1 only)."""
    stage_name, dot, option = key.rpartition(".")
    if dot:
        chosen = [s for s in stages if s.name == stage_name]
        if not chosen:
            raise SubnetsError(f"Option '{key}' names stage '{stage_name}', which is not in the chain "
                               f"({', '.join(s.name for s in stages)}).")
    else:
        fed = fed_options(stages)
        chosen = [s for s in stages if option in s.options and option not in fed[s.name]]
    for stage in chosen:
        if option not in stage.options:
            raise SubnetsError(f"Stage {stage.name} has no option '{option}'; expected one of its --help options.")
    if not chosen:
        raise SubnetsError(f"No stage of the chain ({', '.join(s.name for s in stages)}) takes option '{option}'.")
    return chosen, option


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of grid values, in the order the keys and values were given."""
    for key, values in grid.items():
        if not values:
            raise SubnetsError(f"Grid key '{key}' has no values; expected key=v1,v2,...")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def run_name(stage: str, label_items: Iterable[tuple[str, Any]], identity: Mapping[str, Any]) -> str:
    """Deterministic, filesystem-safe run directory name: readable options plus a hash of the full identity."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    label = ",".join(f"{k}={'+'.join(option_value(v))}" for k, v in label_items)
    label = _UNSAFE.sub("_", label)[:100] or "run"
    return f"{stage}/{label}-{digest}"


class Plan:
    """The runs of one or more chains, deduplicated, with the leaf run of every (chain, grid point)."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.runs: dict[str, Run] = {}
        self.leaves: list[Leaf] = []

    def add(self, chain: Chain) -> list[Leaf]:
        stages = [get_stage(s) for s in chain.stages]
        if not stages:
            raise SubnetsError("No stages given; expected a chain such as stage1,stage2,stage3,evaluate.")
        fixed: dict[str, Options] = {s.name: {} for s in stages}
        for scope, options in chain.options.items():
            for key, value in options.items():
                targets, option = _split_key(key if scope == "*" else f"{scope}.{key}", stages)
                for stage in targets:
                    fixed[stage.name][option] = value
        grid_targets = {key: _split_key(key, stages) for key in chain.grid}
        added = []
        for point in grid_points(chain.grid):
            options = {name: dict(values) for name, values in fixed.items()}
            for key, value in point.items():
                targets, option = grid_targets[key]
                for stage in targets:
                    options[stage.name][option] = value
            applied = {key: {s.name for s in grid_targets[key][0]} for key in point}
            leaf = Leaf(self._chain_runs(stages, options, point, applied), point)
            self.leaves.append(leaf)
            added.append(leaf)
        return added

    def _chain_runs(self, stages: list[Stage], options: dict[str, Options], point: Mapping[str, Any],
                    applied: Mapping[str, set[str]]) -> Run:
        """The runs of one chain at one grid point; `applied[key]` = the stages grid key `key` sets."""
        earlier: dict[str, Run] = {}
        run = None
        for stage in stages:
            own = dict(options[stage.name])
            inputs = {}
            for spec in stage.inputs:
                source = next((earlier[s] for s in spec.sources if s in earlier), None)
                if source is not None:
                    if spec.option in own:
                        raise SubnetsError(f"Option {stage.name}.{spec.option} is set, but the chain feeds it from "
                                           f"{source.stage}; expected one or the other.")
                    inputs[spec.option] = source
                    own[spec.option] = str(self.output_dir / source.name / spec.file) if spec.file else \
                        str(self.output_dir / source.name)
            stores = [k for k in SHARED_STORES if k in stage.options and k not in own]
            own.update({k: str(self.output_dir / STORE_DIR) for k in stores})
            parent = run.name if run is not None else None
            # identity: inputs by run name and the shared store by role (not by path), so that a moved sweep
            # keeps its names
            placeholders = {k: f"run:{r.name}" for k, r in inputs.items()} | {k: "sweep-store" for k in stores}
            identity = {"stage": stage.name, "parent": parent,
                        "options": {k: placeholders.get(k, v) for k, v in own.items()},
                        "inputs": {k: r.name for k, r in inputs.items()}}
            # the name shows this run's naming options, then the grid values set here or upstream
            shown = [(k, own[k]) for k in NAME_KEYS if k in own]
            upstream = {s.name for s in stages[:stages.index(stage) + 1]}
            shown += [(k.rpartition(".")[2], v) for k, v in point.items() if applied[k] & upstream
                      and not (stage.name in applied[k] and k.rpartition(".")[2] in NAME_KEYS)]
            name = run_name(stage.name, shown, identity)
            argv = options_argv(own) + ["--output_dir", str(self.output_dir / name)]
            run = Run(name, stage.name, own, parent, tuple(argv))
            previous = self.runs.setdefault(name, run)
            if previous.argv != run.argv:
                raise SubnetsError(f"Two runs share the directory {name} with different options; expected distinct "
                                   f"options per run.")
            earlier[stage.name] = run
        assert run is not None
        return run

    def ordered(self) -> list[Run]:
        """Runs in an order where every run comes after its upstream runs (insertion order already is)."""
        return list(self.runs.values())

    def directory(self, run: Run) -> Path:
        return self.output_dir / run.name
