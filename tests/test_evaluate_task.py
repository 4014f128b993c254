"""`subnets-evaluate` picks its sets from the run (issue 26): a custom-task run's own files by default, an
attack-only evaluation with --attack_file alone, and one clear error for a model meeting a task with other labels."""

from __future__ import annotations

import json

import pytest

from subnets.errors import SubnetsError
from subnets.models import tiny_model
from subnets.weights import save_plain_model

TEXTS = ["a great and charming film", "a boring and dull plot", "great fun", "the plot was boring"]


def _reviews(path, n):
    rows = ["review,verdict"] + [f"{TEXTS[i % 4]},{'thumbs up' if i % 2 == 0 else 'thumbs down'}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")


def test_a_custom_task_run_is_evaluated_on_its_own_files_without_data_options(tmp_path, tiny_model_dir, monkeypatch):
    from subnets.pipelines import evaluate, stage1_finetune

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SUBNETS_DATA_DIR", str(tmp_path / "empty"))  # no SST-2 anywhere
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, n in (("train.csv", 8), ("dev.csv", 6), ("test.csv", 4)):
        _reviews(tmp_path / name, n)
    stage1_finetune.main(["--model_name_or_path", str(tiny_model_dir()), "--task_name", "reviews",
                          "--train_file", str(tmp_path / "train.csv"), "--validation_file", str(tmp_path / "dev.csv"),
                          "--test_file", str(tmp_path / "test.csv"), "--text_columns", "review",
                          "--label_column", "verdict", "--output_dir", str(tmp_path / "ft"), "--max_steps", "1",
                          "--per_device_train_batch_size", "4", "--max_seq_length", "16", "--disable_tqdm", "true",
                          "--report_to", "none"])
    results = evaluate.main(["--checkpoint", str(tmp_path / "ft"), "--output_dir", str(tmp_path / "eval"),
                             "--max_seq_length", "16"])
    assert set(results["ft"]) == {"reviews", "reviews-test"}
    assert results["ft"]["reviews"]["eval_samples"] == 6 and results["ft"]["reviews-test"]["eval_samples"] == 4
    assert "reviews-test accuracy" in (tmp_path / "eval" / "results.md").read_text()


@pytest.fixture
def checkpoint(tmp_path):
    model, tokenizer = tiny_model("bert", label_names=("negative", "positive"))
    save_plain_model(model, tokenizer, tmp_path / "ckpt")
    (tmp_path / "data" / "attack").mkdir(parents=True)
    (tmp_path / "data" / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(
        {"great": ["fine", "awful"], "boring": ["dull", "tedious"], "plot": ["storyline"], "film": ["movie"]}))
    return tmp_path / "ckpt"


def test_attack_file_alone_is_an_attack_only_evaluation(tmp_path, checkpoint, monkeypatch):
    from subnets.pipelines.evaluate import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    user = tmp_path / "mine.tsv"
    user.write_text("text\tgold\n" + "".join(f"{t}\t{'positive' if i % 2 == 0 else 'negative'}\n"
                                             for i, t in enumerate(TEXTS)))
    results = main(["--checkpoint", str(checkpoint), "--data_dir", str(tmp_path / "data"), "--output_dir",
                    str(tmp_path / "eval"), "--attack", "textfooler", "--attack_file", str(user),
                    "--attack_text_columns", "text", "--attack_label_column", "gold", "--attack_disable", "pos,use"])
    assert set(results["ckpt"]) == {"file:mine"}  # no SST-2 set: the data folder has none and none was asked
    assert results["ckpt"]["file:mine"]["num_examples"] == len(TEXTS)


def test_a_model_meeting_a_task_with_other_labels_is_one_error_before_writing(tmp_path, monkeypatch):
    from subnets.pipelines.evaluate import main

    model, tokenizer = tiny_model("bert", label_names=("red", "green", "blue"))
    save_plain_model(model, tokenizer, tmp_path / "colours")
    out = tmp_path / "eval"
    with pytest.raises(SubnetsError, match=r"predicts labels \['red', 'green', 'blue'\].*'sst2'"):
        main(["--checkpoint", str(tmp_path / "colours"), "--tasks", "sst2", "--output_dir", str(out)])
    assert not out.exists()
