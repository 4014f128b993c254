"""HF Trainer conventions: best-checkpoint direction, trainer_state.json / log_history / all_results.json, and the
scheduler, snapshot-limit, reporting, gradient-checkpointing and label-smoothing options."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForSequenceClassification, TrainerState

from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.objectives import ObjectiveArguments, build_objective
from subnets.tasks import get_task
from subnets.training import Callback, best_metric, log_key
from test_training import make_trainer

SST2 = get_task("sst2")


def eval_entries(trainer, key):
    return [(e["step"], e[key]) for e in trainer.state.log_history if key in e]


@pytest.mark.parametrize("metric", ["loss", "eval_loss"])
def test_lower_is_better_metric_keeps_the_lowest_loss_checkpoint(tmp_path, tiny_data_dir, metric):
    # A high learning rate makes the eval loss rise after its first dip: the best is not the last evaluation.
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=12, eval_strategy="steps", eval_steps=2,
                           learning_rate=0.3, metric_for_best_model=metric)
    metrics = trainer.train()
    losses = eval_entries(trainer, "eval_loss")
    best_step, best_loss = min(losses, key=lambda s: s[1])
    assert best_loss < max(loss for _, loss in losses)
    assert metrics["best_step"] == best_step and metrics["eval_loss"] == best_loss
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["best_metric"] == best_loss and state["best_global_step"] == best_step
    trainer.model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "checkpoint-best")
    assert trainer.evaluate()["eval_loss"] == pytest.approx(best_loss, abs=1e-5)


def test_greater_is_better_overrides_the_metric_default(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=8, eval_strategy="steps", eval_steps=2,
                           learning_rate=0.3, metric_for_best_model="eval_loss", greater_is_better=True)
    trainer.train()
    assert trainer.state.best_metric == max(loss for _, loss in eval_entries(trainer, "eval_loss"))


def test_best_metric_names_and_directions():
    mrpc = get_task("mrpc")
    assert best_metric(TrainingArguments(), SST2) == ("eval_accuracy", True)
    assert best_metric(TrainingArguments(metric_for_best_model="accuracy"), SST2) == \
        best_metric(TrainingArguments(metric_for_best_model="eval_accuracy"), SST2)
    assert best_metric(TrainingArguments(metric_for_best_model="ece"), SST2) == ("eval_ece", False)
    assert best_metric(TrainingArguments(), mrpc) == ("eval_f1", True)
    with pytest.raises(SubnetsError, match="Unknown --metric_for_best_model 'f1' for task 'sst2'; expected one of"):
        best_metric(TrainingArguments(metric_for_best_model="f1"), SST2)
    with pytest.raises(SubnetsError, match="Unknown --metric_for_best_model 'eval_acc'"):
        best_metric(TrainingArguments(metric_for_best_model="eval_acc"), SST2)


def test_trainer_state_log_history_matches_tensorboard_and_loads_in_transformers(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=9, eval_strategy="steps", eval_steps=4,
                           logging_steps=2)
    metrics = trainer.train()
    run = tmp_path / "run"
    state = TrainerState.load_from_json(str(run / "trainer_state.json"))
    assert state.global_step == 9 and state.max_steps == 9
    assert state.best_model_checkpoint == str(run / "checkpoint-best") and state.best_metric == metrics["eval_accuracy"]
    history = state.log_history
    assert [e["step"] for e in history if "loss" in e] == [2, 4, 6, 8, 9]
    assert [e["step"] for e in history if "eval_accuracy" in e] == [4, 8, 9]
    assert history[-1]["train_loss"] == pytest.approx(metrics["train_loss"]) and history[-1]["step"] == 9
    # every TensorBoard scalar is in log_history at its step under HF's key, and every logged scalar is in TensorBoard
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    from_tb = {(log_key(tag), e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    from_history = {(k, e["step"]): v for e in history if "train_runtime" not in e
                    for k, v in e.items() if k not in ("step", "epoch")}
    assert set(from_tb) == set(from_history)
    for key, value in from_tb.items():
        assert value == pytest.approx(from_history[key], rel=1e-6), key
    results = json.loads((run / "all_results.json").read_text())
    assert results == pytest.approx(json.loads(json.dumps(metrics)), nan_ok=True)
    for key in ("train_loss", "train_steps_per_second", "eval_runtime", "eval_samples_per_second"):
        assert results[key] > 0, key
    losses = [e["loss"] for e in history if "loss" in e]
    steps = [2, 2, 2, 2, 1]  # the training loss is the step-weighted mean of the logged windows
    assert metrics["train_loss"] == pytest.approx(sum(l * n for l, n in zip(losses, steps)) / 9)


def test_log_history_survives_resume(tmp_path, tiny_data_dir):
    class Crash(Callback):
        def on_step_end(self, trainer):
            if trainer.global_step == 6:
                raise KeyboardInterrupt

    full = make_trainer(tmp_path, tiny_data_dir, name="full", max_steps=8, eval_strategy="steps", eval_steps=4,
                        dropout=False)
    full.train()
    crashed = make_trainer(tmp_path, tiny_data_dir, name="crash", max_steps=8, eval_strategy="steps", eval_steps=4,
                           dropout=False, callbacks=[Crash()])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed = make_trainer(tmp_path, tiny_data_dir, name="crash", max_steps=8, eval_strategy="steps", eval_steps=4,
                           dropout=False)
    resumed.train()

    def comparable(history):
        return [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k} for e in history]

    assert comparable(resumed.state.log_history) == comparable(full.state.log_history)


@pytest.mark.parametrize("kind, last_lr", [("linear", 0.0), ("cosine", 0.0), ("constant_with_warmup", 3e-3)])
def test_lr_scheduler_type(tmp_path, tiny_data_dir, kind, last_lr):
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=8, eval_strategy="no", logging_steps=1,
                           warmup_steps=2, lr_scheduler_type=kind)
    trainer.train()
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert lrs[1] == pytest.approx(3e-3) and lrs[-1] == pytest.approx(last_lr)
    if kind == "cosine":  # half-way through the decay: lr * (1 + cos(pi / 2)) / 2
        assert lrs[4] == pytest.approx(3e-3 * (1 + math.cos(math.pi * 3 / 6)) / 2)


def test_save_total_limit_report_to_none_and_gradient_checkpointing(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=6, eval_strategy="no", save_model_at_steps=[0, 2, 4, 6],
                           save_total_limit=2, report_to="none", gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules())
    trainer.train()
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-step-*")) == ["checkpoint-step-4", "checkpoint-step-6"]
    assert not (run / "tb").exists() and (run / "trainer_state.json").exists()


def test_label_smoothing_factor(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=1, label_smoothing_factor=0.2)
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([0, 1])
    log_p = F.log_softmax(logits, -1)
    expected = (0.8 * -log_p[torch.arange(2), labels] + 0.2 * -log_p.mean(-1)).mean()

    class Fixed(torch.nn.Module):
        def forward(self, **_):
            return type("Out", (), {"logits": logits.clone().requires_grad_()})()

    batch = {"input_ids": torch.zeros(2, 1, dtype=torch.long), "labels": labels}
    assert trainer.objective(Fixed(), batch, 1.0) == pytest.approx(expected.item())
    objective = build_objective(ObjectiveArguments(), SST2, None, label_smoothing=0.2)
    assert objective.loss_fn(logits, batch) == pytest.approx(expected.item())


@pytest.mark.parametrize("option, value, message", [
    ("lr_scheduler_type", "exponential", "Unknown --lr_scheduler_type 'exponential'"),
    ("report_to", "wandb", "Unknown --report_to 'wandb'"),
    ("label_smoothing_factor", 1.0, "--label_smoothing_factor 1.0 is out of range"),
    ("save_total_limit", 0, "--save_total_limit 0 is not valid"),
])
def test_bad_training_options_are_rejected_while_parsing(option, value, message):
    with pytest.raises(SubnetsError, match=message):
        TrainingArguments(**{option: value})
