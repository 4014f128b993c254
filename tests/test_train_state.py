"""The Trainer's run state is one `TrainState`; checkpoint-last keeps the format runs were written in before it."""

import json

import pytest
import torch

from subnets.checkpointing import DirectoryCheckpointer
from subnets.config import TrainingArguments
from subnets.models import tiny_model
from subnets.state_io import encode
from subnets.training import Callback, TrainState, Trainer
from test_training import SST2, Counter, Crash, datasets_for

TIMINGS = ("runtime", "per_second")


class TodaysFormat(DirectoryCheckpointer):
    """Writes checkpoint-last's state as `Trainer.save_last` built it before `TrainState` (subnets at commit
    eb117d5), key by key, after checking that the state the Trainer hands over is that same dict."""

    def __init__(self, root):
        super().__init__(root)
        self.trainer: Trainer | None = None

    def save_last(self, state, model_state, add_files):
        t, s = self.trainer, self.trainer.state
        written = {"global_step": s.global_step, "epoch": s.epoch, "step_in_epoch": s.step_in_epoch,
                   "max_steps": s.max_steps, "best": {"value": s.best_metric, "step": s.best_step,
                                                      "metrics": s.best_metrics},
                   "last_eval": s.last_eval, "last_eval_step": s.last_eval_step, "runtime": s.runtime,
                   "samples_seen": s.samples_seen, "log_history": s.log_history, "train_loss_sum": s.train_loss_sum,
                   "train_loss_count": s.train_loss_count,
                   "pending_loss": {"sum": s.pending_loss_sum, "count": s.pending_loss_count},
                   "rng": state["rng"], "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                   "callbacks": state["callbacks"]}
        (tree, tensors), (expected_tree, expected_tensors) = encode(dict(state)), encode(written)
        assert json.dumps(tree) == json.dumps(expected_tree)  # same keys, order, nesting and values
        assert tensors.keys() == expected_tensors.keys()
        assert all(torch.equal(tensors[k], expected_tensors[k]) for k in tensors)
        super().save_last(written, model_state, add_files)


def run(tmp_path, data_dir, name, callbacks=(), checkpointer=None):
    model, tokenizer = tiny_model("bert", label_names=SST2.label_names)
    args = TrainingArguments(output_dir=str(tmp_path / name), max_steps=9, learning_rate=3e-3, logging_steps=3,
                             save_steps=4, eval_strategy="steps", eval_steps=3, per_device_train_batch_size=16,
                             disable_tqdm=True, seed=5, report_to="none")
    trainer = Trainer(model, args, SST2, *datasets_for(tokenizer, data_dir), tokenizer, callbacks=callbacks,
                      checkpointer=checkpointer)
    if checkpointer is not None:
        checkpointer.trainer = trainer
    return trainer


def untimed(values):
    if isinstance(values, dict):
        return {k: untimed(v) for k, v in values.items() if not any(t in k for t in TIMINGS)}
    return [untimed(v) for v in values] if isinstance(values, list) else values


def test_a_checkpoint_in_todays_format_resumes_to_the_uninterrupted_run(tmp_path, tiny_data_dir):
    full_counter = Counter()
    full = run(tmp_path, tiny_data_dir, "full", [full_counter])
    full_metrics = full.train()
    # checkpoint-last at step 4 (after the evaluation at step 3: a best is set; one loss pending since the log)
    todays = TodaysFormat(tmp_path / "crash")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_data_dir, "crash", [Counter(), Crash(at=5)], checkpointer=todays).train()
    saved = json.loads((tmp_path / "crash" / "checkpoint-last" / "trainer_state.json").read_text())
    assert (saved["global_step"], saved["best"]["step"], saved["pending_loss"]["count"]) == (4, 3, 1)

    counter = Counter()
    resumed = run(tmp_path, tiny_data_dir, "crash", [counter])
    resumed_metrics = resumed.train()
    assert counter.count == full_counter.count == 9
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert untimed(resumed_metrics) == untimed(full_metrics)
    assert untimed(resumed.state.log_history) == untimed(full.state.log_history)
    hf_states = [json.loads((tmp_path / name / "trainer_state.json").read_text()) for name in ("full", "crash")]
    for state in hf_states:
        state.pop("best_model_checkpoint")  # the folder's path
    assert untimed(hf_states[0]) == untimed(hf_states[1])


def test_train_state_round_trips_and_reads_a_checkpoint_without_the_pending_loss():
    state = TrainState(max_steps=9, global_step=4, epoch=1, step_in_epoch=2, best_metric=0.75, best_step=3,
                       best_metrics={"eval_accuracy": 0.75}, last_eval={"eval_accuracy": 0.5}, last_eval_step=3,
                       runtime=1.5, samples_seen=64, log_history=[{"loss": 0.7, "step": 3}], train_loss_sum=2.1,
                       train_loss_count=3, pending_loss_sum=torch.tensor(0.6), pending_loss_count=1)
    saved = state.to_dict()
    again = TrainState.from_dict(saved, torch.device("cpu"))
    assert json.dumps(encode(again.to_dict())[0]) == json.dumps(encode(saved)[0])
    assert torch.equal(again.pending_loss_sum, state.pending_loss_sum) and again.pending_loss_count == 1

    del saved["pending_loss"]  # checkpoints written before the pending loss was kept
    older = TrainState.from_dict(saved, torch.device("cpu"))
    assert older.pending_loss_count == 0 and float(older.pending_loss_sum) == 0.0
    assert (older.global_step, older.best_step, older.log_history) == (4, 3, [{"loss": 0.7, "step": 3}])


class ReadsState(Callback):
    """Reads the run state as callbacks do (`trainer.global_step`, `max_steps`, `epoch`)."""

    def __init__(self):
        self.seen: list[tuple[int, int, int]] = []

    def on_step_end(self, trainer):
        self.seen.append((trainer.global_step, trainer.max_steps, trainer.epoch))


def test_callbacks_read_the_run_state_through_the_trainer(tmp_path, tiny_data_dir):
    reader = ReadsState()
    trainer = run(tmp_path, tiny_data_dir, "run", [reader])
    trainer.train()
    # 96 examples in batches of 16: 6 steps an epoch
    assert reader.seen == [(step, 9, 0 if step <= 6 else 1) for step in range(1, 10)]
    assert trainer.state.global_step == 9 and trainer.state.epoch == 1 and trainer.state.step_in_epoch == 3
