"""The stage table of `subnets.runs` names what users run: its console commands and modules are the installed ones."""

import importlib
import tomllib
from pathlib import Path

from subnets.pipelines.sweeping.stages import STAGES as SWEEP_STAGES
from subnets.runs import STAGES


def test_each_stage_is_its_console_command_and_module():
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    for stage in STAGES:
        assert scripts[stage.command] == f"subnets.pipelines.{stage.id}:cli"
        module = importlib.import_module(f"subnets.pipelines.{stage.id}")
        assert module.STAGE == stage.id
        assert f"`{stage.command}`" in module.cli.__doc__


def test_sweeps_chain_the_same_stages_under_their_keys():
    assert [(s.name, s.module) for s in SWEEP_STAGES.values()] == [(s.key, f"subnets.pipelines.{s.id}") for s in STAGES]
