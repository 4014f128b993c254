"""Nothing silent (issue 26): an off-target search warns and says so in metrics.json, stage 2's checkpoint-best says
what it holds, --label_names on a built-in task must match, stage 1's --test_file is predicted, and store records
hold absolute model paths."""

from __future__ import annotations

import json
import logging

import pytest

from subnets.masks import MaskStore
from subnets.errors import SubnetsError
from subnets.masking.search import SearchArguments, off_target

QUICK = ["--per_device_train_batch_size", "8", "--max_seq_length", "16", "--disable_tqdm", "true",
         "--report_to", "none"]


def test_an_off_target_search_warns_labels_its_checkpoint_and_records_absolute_paths(
        tmp_path, tiny_model_dir, tiny_data_dir, monkeypatch, caplog):
    from subnets.pipelines import stage2_search

    tiny_model_dir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    with caplog.at_level(logging.WARNING, logger="subnets"):
        metrics = stage2_search.main(["--model_name_or_path", "tiny-bert", "--task_name", "sst2", "--data_dir",
                                      str(tiny_data_dir), "--output_dir", "hc", "--method", "hard_concrete",
                                      "--target_sparsity", "0.3", "--max_steps", "1", *QUICK])
    assert metrics["sparsity"] < 0.25  # one step cannot reach the target
    saved = json.loads((tmp_path / "hc" / "metrics.json").read_text())
    assert saved["target_sparsity"] == 0.3 and "far from its target" in saved["sparsity_warning"]
    assert any("far from its target" in r.getMessage() for r in caplog.records)
    note = (tmp_path / "hc" / "checkpoint-best" / "README.md").read_text()
    assert "deterministic gate" in note and "not the ticket" in note
    record = MaskStore(tmp_path / "store").get(metrics["mask_ids"]["ticket"])
    assert record.meta["model"] == str(tmp_path / "tiny-bert") == record.meta["parent"]


def test_a_search_near_its_target_gives_no_warning():
    assert off_target(0.31, SearchArguments(target_sparsity=0.3)) == {}
    assert "sparsity_warning" in off_target(0.0, SearchArguments(target_sparsity=0.3))


def test_label_names_on_a_built_in_task_must_match(tmp_path, tiny_model_dir, tiny_data_dir):
    from subnets.pipelines import evaluate, stage1_finetune

    model = tiny_model_dir()
    common = ["--model_name_or_path", str(model), "--task_name", "sst2", "--data_dir", str(tiny_data_dir),
              "--max_steps", "1", *QUICK]
    with pytest.raises(SubnetsError, match="--label_names 'bad,good' does not match task 'sst2'"):
        stage1_finetune.main(common + ["--output_dir", str(tmp_path / "ft"), "--label_names", "bad,good"])
    assert not (tmp_path / "ft").exists()
    with pytest.raises(SubnetsError, match="does not match task 'sst2'"):
        evaluate.main(["--checkpoint", str(model), "--tasks", "sst2", "--data_dir", str(tiny_data_dir),
                       "--output_dir", str(tmp_path / "eval"), "--label_names", "positive,negative"])
    assert not (tmp_path / "eval").exists()
    metrics = stage1_finetune.main(common + ["--output_dir", str(tmp_path / "ok"), "--label_names",
                                             "Negative,Positive"])
    assert "eval_accuracy" in metrics


def test_stage1_predicts_its_test_file_as_hf_do_predict(tmp_path, tiny_model_dir):
    from subnets.pipelines import stage1_finetune

    for name, n in (("train.csv", 8), ("dev.csv", 4), ("test.csv", 6)):
        rows = ["text,label"] + [f"{'great film' if i % 2 else 'dull plot'},{'pos' if i % 2 else 'neg'}"
                                 for i in range(n)]
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    out = tmp_path / "ft"
    metrics = stage1_finetune.main(["--model_name_or_path", str(tiny_model_dir()), "--train_file",
                                    str(tmp_path / "train.csv"), "--validation_file", str(tmp_path / "dev.csv"),
                                    "--test_file", str(tmp_path / "test.csv"), "--text_columns", "text", "--output_dir", str(out),
                                    "--max_steps", "1", *QUICK])
    lines = (out / "predict_results.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 7
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(6)]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"neg", "pos"}
    assert metrics["test_samples"] == 6 and 0 <= metrics["test_accuracy"] <= 1
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
