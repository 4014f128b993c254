import contextlib

import numpy as np
import pytest
import torch

from subnets import evaluation
from subnets.config import TrainingArguments
from subnets.data import load_split, tokenize
from subnets.evaluation import OTHER, auroc, compute_metrics, ece, project_probabilities, weighted_f1
from subnets.models import tiny_model
from subnets.precision import autocast
from subnets.tasks import get_task
from subnets.training import Trainer


def test_weighted_f1_by_hand():
    gold = np.array([0, 0, 0, 1])
    pred = np.array([0, 0, 1, 1])
    # class 0: p=1, r=2/3 -> f1 0.8 (support 3); class 1: p=1/2, r=1 -> f1 2/3 (support 1)
    assert weighted_f1(pred, gold) == pytest.approx((0.8 * 3 + 2 / 3) / 4)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    gold = np.array([0, 1, 1, 1])
    # bins (width 0.1): 0.9 -> bin 8 (acc 1), 0.8 -> bin 7 (acc 0), 0.7 -> bin 6 (acc 1), 0.6 -> bin 5 (acc 1)
    expected = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert ece(probs, gold) == pytest.approx(expected)
    assert ece(np.array([[1.0, 0.0]] * 3), np.zeros(3, int)) == pytest.approx(0.0)


def test_auroc_known_values():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([2.0])) == 0.0
    assert auroc(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(0.5)
    assert auroc(np.array([2.0]), np.array([2.0])) == pytest.approx(0.5)


def test_hans_projection_and_breakdown():
    hans = get_task("hans")
    mnli_labels = ["entailment", "neutral", "contradiction"]
    logits = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]]))
    gold = np.array([0, 1, 0, 1])
    probs, labels = project_probabilities(np.exp(logits), mnli_labels, hans)
    assert labels == ["entailment", "non-entailment"]
    np.testing.assert_allclose(probs[2], [0.4, 0.6])
    m = compute_metrics(hans, logits, gold, mnli_labels, breakdown=["lexical_overlap"] * 2 + ["subsequence"] * 2)
    assert m["eval_accuracy"] == 0.75  # row 2 predicts non-entailment by the summed mass (0.6): wrong
    assert m["eval_accuracy_entailment"] == 0.5 and m["eval_accuracy_non-entailment"] == 1.0
    assert m["eval_accuracy_lexical_overlap_entailment"] == 1.0
    assert m["eval_accuracy_subsequence_entailment"] == 0.0
    assert m["eval_accuracy_subsequence_non-entailment"] == 1.0
    assert "eval_loss" not in m  # label spaces differ


def test_unmapped_model_labels_count_as_wrong():
    fever = get_task("fever-symmetric-v1")
    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.7, 0.2, 0.1]]))
    probs, labels = project_probabilities(np.exp(logits), ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"], fever)
    assert labels[-1] == OTHER
    m = compute_metrics(fever, logits, np.array([0, 0]), ["SUPPORTS", "REFUTES", "NOT ENOUGH INFO"])
    assert m["eval_accuracy"] == 0.5


def test_f1_tasks_report_weighted_f1():
    m = compute_metrics(get_task("qqp"), np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 0]),
                        ["not_duplicate", "duplicate"])
    assert m["eval_f1"] == pytest.approx(2 / 3) and m["eval_accuracy"] == 0.5


def test_results_table_shows_hans_per_label_accuracy():
    from subnets.pipelines.evaluate import markdown_table

    hans = {"eval_accuracy": 0.6, "eval_accuracy_entailment": 0.95, "eval_accuracy_non-entailment": 0.25,
            "eval_ece": 0.1}
    table = markdown_table({"ft": {"mnli": {"eval_accuracy": 0.7, "eval_ece": 0.05}, "hans": hans}})
    header, _, row = table.splitlines()
    assert header == ("| checkpoint | mnli accuracy | mnli ece | hans accuracy | hans accuracy_entailment | "
                      "hans accuracy_non-entailment | hans ece |")
    assert row == "| ft | 70.00 | 5.00 | 60.00 | 95.00 | 25.00 | 10.00 |"


def test_autocast_requests_bf16_on_cuda_only_when_asked(monkeypatch):
    requested = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype, enabled: requested.append(
        (device_type, dtype, enabled)) or contextlib.nullcontext())
    for device, bf16 in (("cuda:0", True), ("cuda:0", False), ("cpu", True)):
        autocast(torch.device(device), bf16)
    assert requested == [("cuda", torch.bfloat16, True), ("cuda", torch.bfloat16, False),
                         ("cpu", torch.bfloat16, False)]


@pytest.mark.parametrize("bf16", [True, False])
def test_the_trainers_evaluation_honours_bf16(monkeypatch, tmp_path, tiny_data_dir, bf16):
    """Evaluation asks for the precision of --bf16 (on CUDA, --bf16 false evaluated in bf16 before)."""
    requested = []

    def spy(device, bf16=True):
        requested.append(bf16)
        return contextlib.nullcontext()

    monkeypatch.setattr(evaluation, "autocast", spy)
    task = get_task("sst2")
    model, tokenizer = tiny_model("bert", label_names=task.label_names)
    dev = tokenize(load_split(task, "validation", tiny_data_dir), tokenizer, task, 32)
    trainer = Trainer(model, TrainingArguments(output_dir=str(tmp_path), bf16=bf16), task, None, dev, tokenizer)
    assert "eval_accuracy" in trainer.evaluate()
    assert requested and set(requested) == {bf16}


@pytest.mark.parametrize("flag", ["--bf16", "--no_bf16"])
def test_the_evaluate_command_and_its_attacks_honour_bf16(monkeypatch, tmp_path, tiny_data_dir, tiny_model_dir, flag):
    """evaluate.py's clean pass and the attacked model's forward passes both ask for the precision of --bf16."""
    from subnets.pipelines import evaluate
    from subnets.attacks import wrapper
    from subnets.toydata import write_toy_neighbours

    requested = {"clean": [], "attack": []}

    def spy(kind):
        def record(device, bf16=True):
            requested[kind].append(bf16)
            return contextlib.nullcontext()
        return record

    monkeypatch.setattr(evaluation, "autocast", spy("clean"))
    monkeypatch.setattr(wrapper, "autocast", spy("attack"))
    write_toy_neighbours(tiny_data_dir)
    evaluate.main(["--checkpoint", str(tiny_model_dir()), "--tasks", "sst2", "--data_dir", str(tiny_data_dir),
                   "--output_dir", str(tmp_path / "eval"), "--attack", "textbugger", "--attack_samples", "2",
                   "--attack_disable", "use", flag])
    for kind, asked in requested.items():
        assert asked and set(asked) == {flag == "--bf16"}, kind


def test_the_evaluate_command_keeps_per_example_predictions_of_every_set(tmp_path, tiny_data_dir, tiny_model_dir):
    """predictions/<checkpoint>/<set>.json holds one prediction and gold label per example, in the set's order;
    its accuracy is the set's eval_accuracy."""
    import json

    from subnets.pipelines import evaluate

    results = evaluate.main(["--checkpoint", str(tiny_model_dir()), "--tasks", "sst2", "--data_dir",
                             str(tiny_data_dir), "--output_dir", str(tmp_path / "eval")])
    (name, per_set), = results.items()
    for set_name, metrics in per_set.items():
        record = json.loads((tmp_path / "eval" / evaluate.PREDICTIONS_DIR / name / f"{set_name}.json").read_text())
        assert len(record["prediction"]) == len(record["label"]) == metrics["eval_samples"]
        assert np.mean(np.equal(record["prediction"], record["label"])) == pytest.approx(metrics["eval_accuracy"])
        assert record["label"] == load_split(get_task(set_name), get_task(set_name).eval_split, tiny_data_dir)["label"]
