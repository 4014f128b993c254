"""Every console command in pyproject's [project.scripts] answers --help (called through its entry-point function,
which is what the installed command runs), and stage commands report user errors as one line with status 2."""

import importlib
import os
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
        assert SCRIPTS[command] == f"subnets.pipelines.{stage}:cli"
    assert SCRIPTS["subnets-masks"] == "subnets.masks.cli:main"


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


def test_a_non_editable_install_runs_its_commands_from_another_folder(tmp_path):
    """Build and install a copy of the project (no editable link, no dependencies, offline) and run its console
    commands from an unrelated folder with only the installed copy on the path."""
    import shutil
    import subprocess

    source = tmp_path / "source"
    for name in ("subnets", "masks", "pipelines"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}

    def run(*argv):
        return subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True)

    where = run(sys.executable, "-c", "import subnets.pipelines as p; print(p.__file__, p.RECIPE_DIR)")
    assert where.stdout.split() == [str(target / "subnets" / "pipelines" / "__init__.py"),
                                    str(target / "subnets" / "pipelines" / "recipes")], where.stderr
    # one namespace: nothing generic at the top level (a user's own pipelines/ or masks.py shadows nothing)
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "subnets"]
    for generic in ("masks", "pipelines"):
        assert run(sys.executable, "-c", f"import {generic}").returncode == 1
    search = run(str(target / "bin" / "subnets-search"), "--recipe", "robust_tickets_sst2", "--help")
    assert search.returncode == 0 and "method: hard_concrete:" in search.stdout, search.stderr
    (tmp_path / "store").mkdir()
    listed = run(str(target / "bin" / "subnets-masks"), "--root", str(tmp_path / "store"), "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr


def test_every_package_of_the_three_folders_is_installed_under_subnets():
    """pyproject lists the packages by hand (masks/ and pipelines/ map to subnets.masks and subnets.pipelines): a new
    package folder missing from the list would be left out of a wheel."""
    import tomllib

    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder: package for package, folder in settings["package-dir"].items()} | {"subnets": "subnets"}
    found = {".".join([folders[init.relative_to(REPO).parts[0]], *init.relative_to(REPO).parts[1:-1]])
             for folder in folders for init in (REPO / folder).rglob("__init__.py")}
    assert found == set(settings["packages"])
