"""Terminal feedback like HF's (issue 26): metrics boxes at the end of a stage, the resume line, clean-evaluation
progress and labelled attack summaries. (The sweep's k-of-N / ETA lines: tests/test_sweep.py.)"""

from __future__ import annotations

import json
import re

from subnets.pipelines.common import metrics_boxes
from subnets.pipelines.sweeping.execute import Progress


def test_metrics_boxes_follow_hf_log_metrics():
    text = metrics_boxes({"train_loss": 0.123456, "epoch": 2.0, "eval_accuracy": 0.75, "test_accuracy": 0.5,
                          "sparsity": 0.3, "mask_ids": {"ticket": "abc"}, "method": "imp"})
    assert text.splitlines() == [
        "***** train metrics *****", "  epoch      =         2.0", "  train_loss =      0.1235",
        "***** eval metrics *****", "  eval_accuracy =        0.75",
        "***** test metrics *****", "  test_accuracy =         0.5",
        "***** run metrics *****", "  method   =         imp", "  sparsity =         0.3"]


def test_progress_counts_runs_and_estimates_the_rest(monkeypatch):
    clock = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr("subnets.pipelines.sweeping.execute.time.monotonic", lambda: next(clock))
    progress = Progress(4)
    assert progress.started() == 1
    assert progress.step() == "(1 of 4 finished, elapsed 0:00:30, ETA 0:01:30)"
    assert progress.step() == "(2 of 4 finished, elapsed 0:01:00, ETA 0:01:00)"


def test_a_stage_prints_its_metrics_and_says_when_it_resumes(tmp_path, tiny_model_dir, tiny_data_dir, capsys):
    from subnets.pipelines import stage1_finetune

    argv = ["--model_name_or_path", str(tiny_model_dir()), "--task_name", "sst2", "--data_dir", str(tiny_data_dir),
            "--output_dir", str(tmp_path / "ft"), "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--max_seq_length", "16", "--disable_tqdm", "true", "--report_to", "none"]
    metrics = stage1_finetune.main(argv)
    out = capsys.readouterr().out
    assert "***** train metrics *****" in out and "***** eval metrics *****" in out
    assert re.search(rf"  eval_accuracy\s+=\s+{round(metrics['eval_accuracy'], 4)}\n", out)
    assert "resuming" not in out
    stage1_finetune.main(argv)  # the same command again: resumes the finished run from its last checkpoint
    assert f"resuming from {tmp_path / 'ft' / 'checkpoint-last'} at step 2 of 2" in capsys.readouterr().out


def test_clean_evaluation_shows_progress_and_attacks_are_labelled(tmp_path, tiny_model_dir, tiny_data_dir, capsys):
    from subnets.pipelines.evaluate import main

    (tiny_data_dir / "attack").mkdir()
    (tiny_data_dir / "attack" / "counterfitted_neighbors.json").write_text(json.dumps({"good": ["fine"]}))
    main(["--checkpoint", str(tiny_model_dir()), "--tasks", "sst2", "--data_dir", str(tiny_data_dir),
          "--output_dir", str(tmp_path / "eval"), "--max_eval_samples", "8", "--per_device_eval_batch_size", "4",
          "--attack", "textfooler", "--attack_samples", "2", "--attack_disable", "pos,use"])
    captured = capsys.readouterr()
    assert re.search(r"evaluate tiny-bert on sst2: 100%\S* *\S* 2/2", captured.err)
    assert "***** textfooler attack: model tiny-bert, set sst2 *****" in captured.out
