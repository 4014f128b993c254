"""Every console command in pyproject's [project.scripts] answers --help (called through its entry-point function,
which is what the installed command runs), and stage commands report user errors as one line with status 2."""

import importlib
import sys
import tomllib

import pytest

from conftest import REPO

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
STAGES = {"subnets-finetune": "stage1_finetune", "subnets-search": "stage2_search", "subnets-retrain": "stage3_retrain",
          "subnets-evaluate": "evaluate", "subnets-bias-model": "train_bias_model"}


def entry_point(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def test_every_stage_has_its_command():
    for command, stage in STAGES.items():
        assert SCRIPTS[command] == f"pipelines.{stage}:cli"
    assert SCRIPTS["subnets-masks"] == "masks.cli:main"


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_command_help(command, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [command, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        entry_point(SCRIPTS[command])()
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out
    if command in ("subnets-finetune", "subnets-search", "subnets-retrain", "subnets-evaluate"):
        assert "--train_file" in out or "--validation_file" in out


def test_stage_command_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["subnets-finetune", "--output_dir", str(tmp_path / "o"),
                                      "--metric_for_best_model", "bleu"])
    assert entry_point(SCRIPTS["subnets-finetune"])() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Unknown --metric_for_best_model 'bleu'") and "\n" not in err
