import json
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForSequenceClassification

from subnets.config import TrainingArguments
from subnets.data import load_split, tokenize
from subnets.errors import SubnetsError
from subnets.models import tiny_model
from subnets.tasks import get_task
from subnets.checkpointing import DirectoryCheckpointer
from subnets.distributed import Distributed
from subnets.training import Callback, CrossEntropyObjective, Trainer, callback_names, log_key

SST2 = get_task("sst2")


def datasets_for(tokenizer, data_dir):
    return [tokenize(load_split(SST2, s, data_dir), tokenizer, SST2, 32) for s in ("train", "validation")]


def make_trainer(tmp_path, data_dir, name="run", kind="bert", callbacks=(), objective=None, dropout=True, seams=None,
                 **overrides):
    model, tokenizer = tiny_model(kind, label_names=SST2.label_names)
    if not dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    train, dev = datasets_for(tokenizer, data_dir)
    options = dict(output_dir=str(tmp_path / name), num_train_epochs=3, learning_rate=3e-3,
                   per_device_train_batch_size=16, logging_steps=2, disable_tqdm=True, seed=3)
    options.update(overrides)
    return Trainer(model, TrainingArguments(**options), SST2, train, dev, tokenizer, callbacks=callbacks,
                   objective=objective, **(seams or {}))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_trainer_learns_and_writes_checkpoints_and_curves(tmp_path, tiny_data_dir, kind):
    trainer = make_trainer(tmp_path, tiny_data_dir, kind=kind, num_train_epochs=8, learning_rate=1e-2)
    before = trainer.evaluate()["eval_accuracy"]
    metrics = trainer.train()
    assert metrics["train_steps"] == 8 * 6 and metrics["eval_accuracy"] >= 0.9 > before + 0.2
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "checkpoint-best")
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "eval/accuracy", "eval/ece"} <= set(acc.Tags()["scalars"])


class Crash(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, trainer):
        if trainer.global_step == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_a_crash_ends_with_identical_weights_and_metrics(tmp_path, tiny_data_dir):
    full = make_trainer(tmp_path, tiny_data_dir, name="full", save_steps=4)
    full_metrics = full.train()
    crashed = make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4, callbacks=[Crash(at=10)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert (tmp_path / "crash" / "checkpoint-last" / "trainer_state.json").exists()
    resumed = make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4)
    resumed_metrics = resumed.train()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    drop = ("train_runtime", "train_samples_per_second", "train_samples", "train_steps_per_second",
            "eval_runtime", "eval_samples_per_second", "last_eval_runtime", "last_eval_samples_per_second")
    assert {k: v for k, v in resumed_metrics.items() if k not in drop} == \
        {k: v for k, v in full_metrics.items() if k not in drop}


def test_a_resume_between_logging_steps_logs_what_an_uninterrupted_run_logs(tmp_path, tiny_data_dir):
    """Issue 28, defect 10: after a resume from a checkpoint between logging steps the logged `loss` and
    `train_loss` differed from an uninterrupted run's, and a mask search's first log lacked `mask/flip_rate`."""
    from subnets.masking.methods.hard_concrete import FixedLambda, attach_hard_concrete
    from subnets.targets import find_targets

    def search(name, callbacks=()):
        model, tokenizer = tiny_model("bert", label_names=SST2.label_names)
        gates = attach_hard_concrete(model, find_targets(model))
        args = TrainingArguments(output_dir=str(tmp_path / name), max_steps=8, learning_rate=3e-3, logging_steps=3,
                                 save_steps=2, eval_strategy="no", per_device_train_batch_size=16, disable_tqdm=True,
                                 seed=3, report_to="none")
        return Trainer(model, args, SST2, *datasets_for(tokenizer, tiny_data_dir), tokenizer,
                       callbacks=[FixedLambda(gates, lam=1.0), *callbacks])

    full = search("full")
    full_metrics = full.train()
    with pytest.raises(KeyboardInterrupt):
        search("crash", [Crash(at=5)]).train()  # checkpoint-last at step 4, the last log at step 3
    resumed = search("crash")
    resumed_metrics = resumed.train()

    def logged(history):
        return [{k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k} for entry in history]

    assert resumed_metrics["train_loss"] == full_metrics["train_loss"]
    assert logged(resumed.state.log_history) == logged(full.state.log_history)
    assert all("mask/flip_rate" in entry for entry in full.state.log_history[1:] if "loss" in entry)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, tiny_data_dir):
    big = make_trainer(tmp_path, tiny_data_dir, name="big", dropout=False, max_steps=3, eval_strategy="no",
                       per_device_train_batch_size=16, max_grad_norm=0.0)
    small = make_trainer(tmp_path, tiny_data_dir, name="small", dropout=False, max_steps=3, eval_strategy="no",
                         per_device_train_batch_size=8, gradient_accumulation_steps=2, max_grad_norm=0.0)
    big.train()
    small.train()
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_only_trainable_parameters_move_and_callbacks_add_groups(tmp_path, tiny_data_dir):
    class ExtraGroup(Callback):
        def __init__(self):
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.calls = []

        def param_groups(self, trainer):
            return [{"params": [self.scale], "lr": 0.5, "weight_decay": 0.0}]

        def extra_loss(self, trainer):
            return (self.scale - 3.0) ** 2

        def log_scalars(self, trainer):
            return {"custom/scale": self.scale.item()}

    extra = ExtraGroup()
    trainer = make_trainer(tmp_path, tiny_data_dir, callbacks=[extra], max_steps=4, eval_strategy="no")
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "classifier" not in n}
    for n, p in trainer.model.named_parameters():
        p.requires_grad_("classifier" in n)
    trainer.train()
    for n, p in trainer.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert extra.scale.item() > 1.5  # moved towards 3 by its own group
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert "custom/scale" in acc.Tags()["scalars"]


def test_nan_loss_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, tiny_data_dir):
    class NaNObjective(CrossEntropyObjective):
        def __call__(self, model, batch, loss_scale):
            loss = super().__call__(model, batch, loss_scale)
            return loss * float("nan") if trainer.global_step >= 3 else loss

    trainer = make_trainer(tmp_path, tiny_data_dir, objective=NaNObjective(), save_steps=2, logging_steps=4,
                           eval_strategy="no")
    with pytest.raises(SubnetsError, match="loss became nan by step 4.*checkpoint-last is kept"):
        trainer.train()
    state = json.loads((tmp_path / "run" / "checkpoint-last" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_model_snapshots_at_requested_steps(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, max_steps=3, eval_strategy="no", save_model_at_steps=[0, 2])
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    step0 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "checkpoint-step-0")
    for k, v in step0.state_dict().items():
        assert torch.equal(v, initial[k]), k
    assert (tmp_path / "run" / "checkpoint-step-2" / "model.safetensors").exists()
    assert not (tmp_path / "run" / "checkpoint-step-1").exists()


def test_model_with_other_labels_is_refused(tmp_path, tiny_data_dir):
    model, tokenizer = tiny_model("bert", 3)
    train, dev = datasets_for(tokenizer, tiny_data_dir)
    with pytest.raises(SubnetsError, match=r"predicts labels \['LABEL_0', 'LABEL_1', 'LABEL_2'\].*'sst2' model"):
        Trainer(model, TrainingArguments(output_dir=str(tmp_path / "x")), SST2, train, dev, tokenizer)


class RecordingLogger:
    """A metric logger that keeps what it is given."""

    def __init__(self):
        self.logged, self.flushes = [], 0

    def log_dict(self, scalars, step):
        self.logged.append((step, dict(scalars)))

    def flush(self):
        self.flushes += 1


def half_lr(optimizer, args, max_steps):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)


def test_injected_scheduler_logger_and_checkpointer(tmp_path, tiny_data_dir):
    class Scalar(Callback):
        def log_scalars(self, trainer):
            return {"custom/step": float(trainer.global_step)}

    def run(name, callbacks):
        logger = RecordingLogger()
        seams = dict(scheduler_factory=half_lr, metric_logger=logger,
                     checkpointer=DirectoryCheckpointer(tmp_path / "elsewhere" / name))
        trainer = make_trainer(tmp_path, tiny_data_dir, name=name, callbacks=[Scalar(), *callbacks], max_steps=6,
                               eval_strategy="steps", eval_steps=2, logging_steps=2, seams=seams)
        return trainer, logger

    full, logger = run("full", [])
    full.train()
    assert [e["learning_rate"] for e in full.state.log_history if "learning_rate" in e] == [1.5e-3] * 3
    assert [(step, sorted(scalars)) for step, scalars in logger.logged if "train/loss" in scalars] == \
        [(step, ["custom/step", "train/grad_norm", "train/loss", "train/lr"]) for step in (2, 4, 6)]
    # the logger got exactly what log_history holds (under HF's keys), and nothing went to TensorBoard
    from_logger = [{log_key(tag): value for tag, value in scalars.items()} for _, scalars in logger.logged]
    assert from_logger == [{k: v for k, v in e.items() if k not in ("step", "epoch")} for e in full.state.log_history][:-1]
    assert logger.flushes > 0 and not (tmp_path / "full" / "tb").exists()
    assert not (tmp_path / "full" / "checkpoint-last").exists()
    state = json.loads((tmp_path / "full" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(tmp_path / "elsewhere" / "full" / "checkpoint-best")
    # an exact resume through the injected checkpointer
    crashed, _ = run("crash", [Crash(at=3)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    resumed, _ = run("crash", [])
    resumed.train()
    assert resumed.global_step == 6 and (tmp_path / "elsewhere" / "crash" / "checkpoint-last").is_dir()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


class Counter(Callback):
    def __init__(self, start=0):
        self.count = start

    def on_step_end(self, trainer):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class OtherCounter(Counter):
    pass


def test_callback_states_are_saved_by_name(tmp_path, tiny_data_dir):
    assert callback_names([Counter(), OtherCounter(), Counter(), Crash(1)]) == \
        ["Counter", "OtherCounter", "Counter#2", "Crash"]
    crashed = make_trainer(tmp_path, tiny_data_dir, name="crash", callbacks=[Counter(0), OtherCounter(100), Crash(3)],
                           max_steps=4, save_steps=2, eval_strategy="no")
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    last = tmp_path / "crash" / "checkpoint-last"
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["callbacks"] == {"Counter": {"count": 2}, "OtherCounter": {"count": 102}}  # Crash has no state
    for copy in ("legacy", "missing"):
        shutil.copytree(tmp_path / "crash", tmp_path / copy)

    reordered = [OtherCounter(), Counter()]
    make_trainer(tmp_path, tiny_data_dir, name="crash", callbacks=reordered, max_steps=4, save_steps=2,
                 eval_strategy="no").train()
    assert [cb.count for cb in reordered] == [104, 4]

    # a checkpoint of the earlier format (a list, by position) still resumes, by position
    legacy = tmp_path / "legacy" / "checkpoint-last" / "trainer_state.json"
    state["callbacks"] = [{"count": 2}, {"count": 102}]
    legacy.write_text(json.dumps(state))
    in_order = [Counter(), OtherCounter()]
    make_trainer(tmp_path, tiny_data_dir, name="legacy", callbacks=in_order, max_steps=4, save_steps=2,
                 eval_strategy="no").train()
    assert [cb.count for cb in in_order] == [4, 104]

    # a saved state whose callback this run lacks is refused
    with pytest.raises(SubnetsError, match="holds the state of callback 'OtherCounter', which this run does not"):
        make_trainer(tmp_path, tiny_data_dir, name="missing", callbacks=[Counter()], max_steps=4,
                     eval_strategy="no").train()


def test_process_group_is_prepared_outside_the_trainer(tmp_path, tiny_data_dir, monkeypatch):
    model, tokenizer = tiny_model("bert", label_names=SST2.label_names)
    train, dev = datasets_for(tokenizer, tiny_data_dir)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4)
    assert Distributed().wrap(model) is model
    # rank 1 of 2 reads every second example from the second one on
    trainer = Trainer(model, args, SST2, train, dev, tokenizer, distributed=Distributed(rank=1, world_size=2))
    assert not trainer.is_main_process
    batches = list(trainer.batches(train))
    assert [int(i) for b in batches for i in b["idx"]] == list(train["idx"][1::2])
    assert all(len(b["labels"]) == 4 for b in batches[:-1])
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun, but nobody initialised torch.distributed
    with pytest.raises(SubnetsError, match="WORLD_SIZE=2, but torch.distributed is not initialised"):
        Trainer(model, args, SST2, train, dev, tokenizer)


def test_torch_compile_trains_the_same_model(tmp_path, tiny_data_dir):
    # The "eager" backend traces the forward with TorchDynamo (parametrizations and hooks included) and runs the
    # captured graph without code generation: the same numbers as the uncompiled model, quickly.
    plain = make_trainer(tmp_path, tiny_data_dir, name="plain", max_steps=3, eval_strategy="no")
    compiled = make_trainer(tmp_path, tiny_data_dir, name="compiled", max_steps=3, eval_strategy="no",
                            torch_compile=True, torch_compile_backend="eager")
    assert compiled.model._compiled_call_impl is not None
    plain_metrics, compiled_metrics = plain.train(), compiled.train()
    assert compiled_metrics["train_loss"] == pytest.approx(plain_metrics["train_loss"], rel=1e-5)
    for a, b in zip(plain.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
