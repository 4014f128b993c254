"""The stages a sweep can chain: their scripts, the options they accept, and which earlier output feeds which option."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import subnets.pipelines
from subnets.errors import SubnetsError
from subnets.runs import BIAS_FILE, BIAS_MODEL, EVALUATE, FINETUNE, RETRAIN, SEARCH, StageName


@dataclass(frozen=True)
class Input:
    """Option `option` of a stage takes the run directory (plus `file`) of the nearest earlier stage in `sources`."""

    option: str
    sources: tuple[str, ...]
    file: str = ""


@dataclass(frozen=True)
class Stage:
    run: StageName  # its names (subnets.runs): `name` is its key in sweeps
    arguments: Callable[[], list[type]]  # the argument dataclasses the script parses (imported lazily)
    inputs: tuple[Input, ...] = ()

    @property
    def name(self) -> str:
        return self.run.key

    @property
    def module(self) -> str:
        """The stage script: importable, with `main(argv)`; `python -m <module>` runs it too."""
        return f"{subnets.pipelines.__name__}.{self.run.id}"

    @cached_property
    def options(self) -> frozenset[str]:
        return frozenset({"recipe"} | {f.name for t in self.arguments() for f in dataclasses.fields(t)})

    def main(self, argv: list[str]) -> object:
        return importlib.import_module(self.module).main(argv)


def stage1_arguments() -> list[type]:
    from subnets.pipelines.common import STAGE_ARGUMENTS

    return list(STAGE_ARGUMENTS)


def stage2_arguments() -> list[type]:
    from subnets.masking.search import search_arguments

    return [*stage1_arguments(), *search_arguments()]


def stage3_arguments() -> list[type]:
    from subnets.masking.retrain import RetrainArguments

    return [*stage1_arguments(), RetrainArguments]


def evaluate_arguments() -> list[type]:
    from subnets.pipelines.evaluate import AttackOptions, EvaluateArguments

    return [EvaluateArguments, AttackOptions]


def bias_arguments() -> list[type]:
    from subnets.pipelines.train_bias_model import BiasModelArguments

    return [BiasModelArguments]


_BIAS_INPUT = Input("bias_predictions", ("bias",), BIAS_FILE)

STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage(BIAS_MODEL, bias_arguments),
    Stage(FINETUNE, stage1_arguments, (_BIAS_INPUT,)),
    Stage(SEARCH, stage2_arguments, (Input("model_name_or_path", ("stage1",)), _BIAS_INPUT)),
    Stage(RETRAIN, stage3_arguments, (Input("mask", ("stage2",)), _BIAS_INPUT)),
    Stage(EVALUATE, evaluate_arguments, (Input("checkpoint", ("stage3", "stage2", "stage1")),)),
]}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise SubnetsError(f"Unknown stage '{name}'; expected one of {', '.join(STAGES)}.")
    return STAGES[name]
