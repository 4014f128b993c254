"""Every command under bad input: one `error:` line and exit status 2 with nothing written, no input accepted
silently, no command writing into another command's run, and run identities that survive path spellings."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys

import pytest

from subnets.pipelines import evaluate, stage1_finetune, stage2_search, stage3_retrain, train_bias_model
from subnets.pipelines.common import run_cli
from subnets.errors import SubnetsError
from subnets.models import tiny_model

COMMANDS = {"stage1": stage1_finetune.main, "stage2": stage2_search.main, "stage3": stage3_retrain.main,
            "evaluate": evaluate.main, "train_bias_model": train_bias_model.main}


def cli(capsys, monkeypatch, command, argv):
    """Run a command as its console script would: (exit status, stderr)."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", [command, *map(str, argv)])
    code = run_cli(COMMANDS[command])
    return code, capsys.readouterr().err


def assert_one_error(code, err, message):
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def stage1_argv(model, data, out, *extra):
    return [str(a) for a in ["--model_name_or_path", model, "--task_name", "sst2", "--data_dir", data,
                             "--output_dir", out, "--max_steps", "2", "--per_device_train_batch_size", "16",
                             "--disable_tqdm", "true", "--max_seq_length", "16", *extra]]


@pytest.fixture
def mnli_data_dir(tmp_path):
    """A tiny MNLI-format folder (the local MNLI is one file, split into train and eval by the task spec)."""
    rng = random.Random(0)
    rows = ["premise\thypothesis\tgold_label"]
    for _ in range(40):
        words = rng.sample("the cat sat on a mat near red doors".split(), 5)
        rows.append(f"{' '.join(words)}\t{' '.join(words[:3])}\t{rng.choice(['entailment', 'neutral', 'contradiction'])}")
    path = tmp_path / "mnli-data" / "glue" / "MNLI" / "dev_matched_mccoy.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(rows) + "\n")
    return path.parent.parent.parent


@pytest.fixture
def run_dir(tmp_path, tiny_model_dir, tiny_data_dir):
    """A finished stage-1 run."""
    out = tmp_path / "run"
    stage1_finetune.main(stage1_argv(str(tiny_model_dir("bert")), str(tiny_data_dir), str(out)))
    return out


@pytest.mark.parametrize("damage", ["truncated weights", "no weights"])
@pytest.mark.parametrize("command", ["stage1", "stage2", "stage3", "evaluate", "train_bias_model"])
def test_broken_model_weights_are_one_clear_error_in_every_command(
        capsys, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir, mnli_data_dir, command, damage):
    model = tiny_model_dir("bert", label_names=("entailment", "neutral", "contradiction")
                           if command == "train_bias_model" else ("negative", "positive"))
    weights = model / "model.safetensors"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    out = tmp_path / "out"
    if command == "evaluate":
        argv = ["--checkpoint", model, "--tasks", "sst2", "--data_dir", tiny_data_dir, "--output_dir", out]
    elif command == "train_bias_model":
        argv = ["--task_name", "mnli", "--data_dir", mnli_data_dir, "--teacher_model", model, "--output_dir", out,
                "--folds", "2"]
    else:
        argv = stage1_argv(model, tiny_data_dir, out)
        if command == "stage2":
            argv += ["--method", "magnitude", "--mask_store", tmp_path / "store"]
        if command == "stage3":
            mask = tmp_path / "mask.safetensors"
            from safetensors.torch import save_file
            save_file({"bert.encoder.layer.0.output.dense.weight": tiny_model()[0].state_dict()[
                "bert.encoder.layer.0.output.dense.weight"] > 0}, mask)
            argv += ["--mask", mask, "--init", "finetuned", "--mask_store", tmp_path / "store"]
    code, err = cli(capsys, monkeypatch, command, argv)
    assert_one_error(code, err, f"Could not load the weights of model '{model}")
    assert not out.exists()


def test_an_empty_data_file_is_one_clear_error(capsys, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir):
    (tiny_data_dir / "glue" / "SST-2" / "train.tsv").write_bytes(b"")
    code, err = cli(capsys, monkeypatch, "stage1", stage1_argv(tiny_model_dir("bert"), tiny_data_dir, tmp_path / "o"))
    assert_one_error(code, err, "train.tsv is empty (0 bytes)")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
@pytest.mark.parametrize("command", ["stage1", "evaluate", "train_bias_model"])
def test_an_output_dir_that_cannot_be_a_folder_is_refused_before_any_work(
        capsys, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir, mnli_data_dir, command, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = {"a file": blocker, "under a file": blocker / "run", "read-only": tmp_path / "ro" / "run"}[where]
    if where == "read-only":
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o555)
        if os.geteuid() == 0:  # root writes anywhere: stand in for the permission check the kernel skips
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path / "ro")
                                else real_access(p, mode))
    model = tiny_model_dir("bert")
    argv = {"stage1": stage1_argv(model, tiny_data_dir, out),
            "evaluate": ["--checkpoint", model, "--tasks", "sst2", "--data_dir", tiny_data_dir, "--output_dir", out],
            "train_bias_model": ["--task_name", "mnli", "--data_dir", mnli_data_dir, "--output_dir", out]}[command]
    code, err = cli(capsys, monkeypatch, command, argv)
    expected = {"a file": "is a file", "under a file": "lies under", "read-only": "is read-only"}[where]
    assert_one_error(code, err, expected)
    assert blocker.read_text() == "x" and not (tmp_path / "ro" / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1"),
    (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size must be at least 1"),
    (["--max_steps", "-1", "--num_train_epochs", "0"], "--num_train_epochs 0.0 trains nothing"),
    (["--max_steps", "-1", "--num_train_epochs", "-2"], "--num_train_epochs -2.0 trains nothing"),
    (["--eval_strategy", "sometimes"], "Unknown --eval_strategy 'sometimes'"),
    (["--recipe", "RECIPE"], "sets save_model_at_steps to 5; expected a list, each item an integer"),
])
def test_bad_training_options_are_refused_while_parsing(capsys, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir,
                                                         extra, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1e-3\nsave_model_at_steps: 5\n")
    extra = [str(recipe) if e == "RECIPE" else e for e in extra]
    code, err = cli(capsys, monkeypatch, "stage1", stage1_argv(tiny_model_dir("bert"), tiny_data_dir,
                                                               tmp_path / "o", *extra))
    assert_one_error(code, err, message)
    assert not (tmp_path / "o").exists()


def test_a_mask_store_that_is_a_file_is_refused_before_the_search(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                                  tiny_data_dir):
    store = tmp_path / "store"
    store.write_text("not a folder")
    argv = stage1_argv(tiny_model_dir("bert"), tiny_data_dir, tmp_path / "o", "--method", "hard_concrete",
                       "--mask_store", store)
    code, err = cli(capsys, monkeypatch, "stage2", argv)
    assert_one_error(code, err, f"Mask store {store} is a file")
    assert not (tmp_path / "o").exists()
    code, err = cli(capsys, monkeypatch, "stage3", stage1_argv(tiny_model_dir("bert"), tiny_data_dir, tmp_path / "o",
                                                               "--mask", "abcd", "--mask_store", store))
    assert_one_error(code, err, f"Mask store {store} is a file")


@pytest.fixture
def search(tmp_path, tiny_model_dir, tiny_data_dir):
    """A stage-2 run (magnitude mask, no training) of a tiny BERT."""
    out = tmp_path / "search"
    stage2_search.main(stage1_argv(tiny_model_dir("bert"), tiny_data_dir, out, "--method", "magnitude",
                                   "--target_sparsity", "0.3", "--mask_store", tmp_path / "store"))
    return out


def test_stage3_refuses_sparsity_one(capsys, monkeypatch, tmp_path, search, tiny_data_dir):
    argv = stage1_argv(tiny_data_dir, tiny_data_dir, tmp_path / "o", "--mask", search, "--sparsity", "1.0",
                       "--init", "finetuned", "--mask_store", tmp_path / "store")
    argv = argv[2:]  # the model: the one the search started from
    code, err = cli(capsys, monkeypatch, "stage3", argv)
    assert_one_error(code, err, "--sparsity 1.0 is out of range")
    assert not (tmp_path / "o").exists()


def test_stage3_uses_an_explicit_model_and_says_so(capsys, monkeypatch, tmp_path, search, tiny_model_dir,
                                                   tiny_data_dir):
    other = tmp_path / "other-bert"
    shutil.copytree(tiny_model_dir("bert"), other)
    out = tmp_path / "ticket"
    argv = stage1_argv(other, tiny_data_dir, out, "--mask", search, "--init", "finetuned",
                       "--mask_store", tmp_path / "store")
    code, err = cli(capsys, monkeypatch, "stage3", argv)
    assert code == 0 and f"warning: --model_name_or_path {other} is used" in err
    assert json.loads((out / "run_config.json").read_text())["ModelArguments"]["model_name_or_path"] == str(other)


def test_evaluate_and_the_bias_model_never_write_into_another_commands_run(capsys, monkeypatch, run_dir,
                                                                          tiny_data_dir, mnli_data_dir):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, err = cli(capsys, monkeypatch, "evaluate", ["--checkpoint", run_dir, "--tasks", "sst2",
                                                      "--data_dir", tiny_data_dir, "--output_dir", run_dir])
    assert_one_error(code, err, "holds a stage1_finetune run")
    code, err = cli(capsys, monkeypatch, "train_bias_model", ["--task_name", "mnli", "--data_dir", mnli_data_dir,
                                                              "--output_dir", run_dir, "--folds", "2"])
    assert_one_error(code, err, "holds a stage1_finetune run")
    code, err = cli(capsys, monkeypatch, "evaluate", ["--checkpoint", run_dir, "--tasks", "sst2", "--data_dir",
                                                      tiny_data_dir, "--output_dir", run_dir / "checkpoint-best"])
    assert_one_error(code, err, "holds a model")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    # their own folders may be written again
    for _ in range(2):
        evaluate.main(["--checkpoint", str(run_dir), "--tasks", "sst2", "--data_dir", str(tiny_data_dir),
                       "--output_dir", str(run_dir.parent / "eval")])


def test_bias_model_options_that_make_no_sense_are_refused(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                           mnli_data_dir):
    out = tmp_path / "bias"
    code, err = cli(capsys, monkeypatch, "train_bias_model", ["--task_name", "mnli", "--data_dir", mnli_data_dir,
                                                              "--output_dir", out, "--l2", "-1"])
    assert_one_error(code, err, "--l2 must be a non-negative penalty; got -1.0")
    sentiment = tiny_model_dir("bert")  # labels negative/positive: no MNLI teacher
    code, err = cli(capsys, monkeypatch, "train_bias_model", ["--task_name", "mnli", "--data_dir", mnli_data_dir,
                                                              "--output_dir", out, "--folds", "2",
                                                              "--teacher_model", sentiment])
    assert_one_error(code, err, "predicts labels ['negative', 'positive']")
    assert not out.exists()


def test_stage1_checks_every_input_before_run_config_is_written(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                                 tiny_data_dir):
    model, out = tiny_model_dir("bert"), tmp_path / "run"
    code, err = cli(capsys, monkeypatch, "stage1", stage1_argv(model, tiny_data_dir, out, "--debias", "poe"))
    assert_one_error(code, err, "needs --bias_predictions")
    assert not out.exists()
    assert stage1_finetune.main(stage1_argv(model, tiny_data_dir, out))["train_steps"] == 2  # the corrected command


def test_stage3_checks_every_input_before_run_config_is_written(capsys, monkeypatch, tmp_path, run_dir,
                                                                tiny_data_dir):
    import torch
    from safetensors.torch import save_file

    mask = tmp_path / "mask.safetensors"  # does not fit the model
    save_file({"bert.encoder.layer.0.output.dense.weight": torch.ones(3, 3, dtype=torch.bool)}, mask)
    ticket = tmp_path / "ticket"
    argv = stage1_argv(run_dir, tiny_data_dir, ticket, "--mask", mask, "--init", "finetuned",
                       "--mask_store", tmp_path / "store")
    code, err = cli(capsys, monkeypatch, "stage3", argv)
    assert_one_error(code, err, "bert.encoder.layer.0.output.dense.weight")
    assert not ticket.exists()


def test_a_run_resumes_from_another_spelling_of_its_paths_and_after_a_move(tmp_path, tiny_model_dir, tiny_data_dir,
                                                                           monkeypatch):
    model = tiny_model_dir("bert")
    first = stage1_finetune.main(stage1_argv(str(model), str(tiny_data_dir), str(tmp_path / "run")))
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    monkeypatch.chdir(tmp_path)
    again = stage1_finetune.main(stage1_argv(f"./{model.name}/", "data/", "moved/"))
    assert again["train_steps"] == first["train_steps"] and again["eval_accuracy"] == first["eval_accuracy"]
    config = json.loads((moved / "run_config.json").read_text())
    assert config["ModelArguments"]["model_name_or_path"] == str(model.resolve())
    assert config["DataArguments"]["data_dir"] == str(tiny_data_dir.resolve())
    with pytest.raises(SubnetsError, match="already holds a different run"):
        stage1_finetune.main(stage1_argv(f"./{model.name}/", "data/", "moved/", "--learning_rate", "0.5"))


def custom_code_model(tiny_model_dir, marker):
    """A model folder whose config names code shipped with it (auto_map); importing that code creates `marker`."""
    model = tiny_model_dir("bert")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="shipped-code", auto_map={"AutoConfig": "custom.CustomConfig",
                                                       "AutoModelForSequenceClassification": "custom.CustomModel"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                     "from transformers import BertConfig, BertForSequenceClassification\n"
                                     "class CustomConfig(BertConfig):\n    model_type = 'shipped-code'\n"
                                     "class CustomModel(BertForSequenceClassification):\n"
                                     "    config_class = CustomConfig\n")
    return model


@pytest.mark.parametrize("command", ["stage1", "evaluate", "masks export"])
def test_code_shipped_in_a_model_folder_never_runs_even_when_stdin_says_yes(capsys, monkeypatch, tmp_path, search,
                                                                            tiny_model_dir, tiny_data_dir, command):
    import io

    from subnets.masks.cli import main as masks_main

    marker = tmp_path / "code-ran"
    model, out = custom_code_model(tiny_model_dir, marker), tmp_path / "out"
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 100))  # `yes y | ...`: transformers' prompt would say yes
    if command == "masks export":
        ticket = json.loads((search / "masks.json").read_text())["ticket"]
        code = masks_main(["--root", str(tmp_path / "store"), "export", ticket, "--format", "dense", "--model",
                           str(model), "--out", str(out)])
        err = capsys.readouterr().err
    else:
        argv = stage1_argv(model, tiny_data_dir, out) if command == "stage1" else \
            ["--checkpoint", model, "--tasks", "sst2", "--data_dir", tiny_data_dir, "--output_dir", out]
        code, err = cli(capsys, monkeypatch, command, argv)
    assert_one_error(code, err, "ships its own code ('auto_map' in config.json); subnets never runs code")
    assert not marker.exists() and not out.exists()


def rewrite_weights(model, change):
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    change(weights)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("case", ["another architecture", "a mis-shaped weight", "no tokenizer files"])
def test_what_loads_is_what_was_asked_for(capsys, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir, case):
    model = tiny_model_dir("bert", label_names=("a", "b", "c"))  # another task: the head is new, nothing else
    if case == "another architecture":
        config = json.loads((model / "config.json").read_text())
        config.update(model_type="roberta", architectures=["RobertaForSequenceClassification"])
        (model / "config.json").write_text(json.dumps(config))
        expected = "no weights of the right shape for"
    elif case == "a mis-shaped weight":
        name = "bert.encoder.layer.0.output.dense.weight"
        rewrite_weights(model, lambda w: w.update({name: w[name][:, :-4].clone()}))
        expected = f"(e.g. {name}), which would start random"
    else:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (model / name).unlink()
        expected = "has no tokenizer vocabulary"
    out = tmp_path / "out"
    code, err = cli(capsys, monkeypatch, "stage1", stage1_argv(model, tiny_data_dir, out))
    assert_one_error(code, err, expected)
    assert "only the classifier head of a new task may be new" in err or case == "no tokenizer files"
    assert not out.exists()


def test_a_data_file_changed_before_a_resume_is_refused_or_accepted_on_request(capsys, monkeypatch, tmp_path,
                                                                              tiny_model_dir, tiny_data_dir):
    model, out = tiny_model_dir("bert"), tmp_path / "run"
    stage1_finetune.main(stage1_argv(model, tiny_data_dir, out))
    train = tiny_data_dir / "glue" / "SST-2" / "train.tsv"
    train.write_text(train.read_text().replace("\t0\n", "\t1\n"))  # relabelled between a kill and the resume
    before = (out / "run_config.json").read_text()
    code, err = cli(capsys, monkeypatch, "stage1", stage1_argv(model, tiny_data_dir, out))
    assert_one_error(code, err, f"Data file {train.resolve()} changed since the run in {out} started")
    assert (out / "run_config.json").read_text() == before
    recorded = json.loads(before)["data_files"]
    stage1_finetune.main(stage1_argv(model, tiny_data_dir, out, "--allow_changed_data", "true"))
    config = json.loads((out / "run_config.json").read_text())
    assert config["accepted_data_changes"] == [{"file": str(train.resolve()), "before": recorded[str(train.resolve())],
                                               "after": config["data_files"][str(train.resolve())]}]
    assert config["DataArguments"]["allow_changed_data"] is True
    code, err = cli(capsys, monkeypatch, "stage1",
                    stage1_argv(model, tiny_data_dir, out, "--allow_changed_data", "true"))
    assert code == 0 and "warning: --allow_changed_data has no effect" in err  # nothing changed since


@pytest.mark.parametrize("command, extra, message", [
    ("stage1", ["--learning_rate", "nan"], "--learning_rate nan is not a finite number"),
    ("stage1", ["--learning_rate", "-1"], "--learning_rate -1.0 is out of range"),
    ("stage2", ["--method", "imp", "--imp_rate", "0"], "--imp_rate 0.0 is out of range"),
    ("stage2", ["--method", "imp", "--imp_rate", "1.5"], "--imp_rate 1.5 is out of range"),
    ("stage1", ["--max_seq_length", "200"], "max_seq_length 200 is out of range; expected 1 to 135"),
])
def test_option_values_are_checked_before_anything_is_written(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                              tiny_data_dir, command, extra, message):
    model, out = tiny_model_dir("roberta"), tmp_path / "run"  # RoBERTa: 136 positions hold 135 tokens
    argv = stage1_argv(model, tiny_data_dir, out, "--mask_store", tmp_path / "store", *extra)
    code, err = cli(capsys, monkeypatch, command, argv)
    assert_one_error(code, err, message)
    assert not out.exists()  # so the corrected command is a new run, not "a different run"


@pytest.mark.parametrize("command, extra, message", [
    ("stage1", ["--max_seq_length", "-5"], "--max_seq_length must be at least 1; got -5"),
    ("stage1", ["--seed", "-1"], "--seed -1 is out of range"),
    ("stage3", ["--init", "finetuned", "--mask_store", "STORE"], "masks.json is damaged (JSONDecodeError)"),
])
def test_bad_values_and_damaged_files_are_one_line_errors(capsys, monkeypatch, tmp_path, search, tiny_model_dir,
                                                          tiny_data_dir, command, extra, message):
    (search / "masks.json").write_text('{"ticket": "abc')  # a stage-2 run's listing, damaged
    out = tmp_path / "out"
    extra = [str(tmp_path / "store") if e == "STORE" else e for e in extra]
    argv = stage1_argv(tiny_model_dir("bert"), tiny_data_dir, out, *extra)
    code, err = cli(capsys, monkeypatch, command, argv + (["--mask", search] if command == "stage3" else []))
    assert_one_error(code, err, message)
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--max_seq_length", "0"], "--max_seq_length must be at least 1; got 0"),
    (["--warmup_ratio", "2"], "--warmup_ratio 2.0 is out of range; expected a fraction of the steps in [0, 1]"),
    (["--recipe", "RECIPE"], "sets learning_rate more than once"),
])
def test_values_are_never_silently_reinterpreted(capsys, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir, extra,
                                                 message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1e-3\nwarmup_ratio: 0.1\nlearning_rate: 5e-5\n")
    extra = [str(recipe) if e == "RECIPE" else e for e in extra]
    out = tmp_path / "o"
    code, err = cli(capsys, monkeypatch, "stage1", stage1_argv(tiny_model_dir("bert"), tiny_data_dir, out, *extra))
    assert_one_error(code, err, message)
    assert not out.exists()


def test_attacking_zero_examples_is_an_error_not_the_default_size():
    from subnets.attacks.pipeline import AttackOptions

    with pytest.raises(SubnetsError, match="must be at least 1; got 0"):
        AttackOptions(attack="textfooler", attack_samples=0)
    with pytest.raises(SubnetsError, match="must be at least 1; got 0"):
        AttackOptions.from_keywords(attack="textfooler", samples=0)
