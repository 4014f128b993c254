"""checkpoint-last without pickle, no checkpoint from a diverged state, crash recovery and the run lock."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from subnets.errors import SubnetsError
from subnets.io import atomic_dir, atomic_write_json
from subnets.state_io import decode, dumps, encode
from subnets.training import Callback

from test_training import Crash, make_trainer


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_state_encoding_round_trips_without_pickle():
    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)}},
                           "param_groups": [{"betas": (0.9, 0.999), "params": [0]}]},
             "rng": {"python": (3, (1, 2, 3), None), "numpy": ("MT19937", np.arange(4, dtype=np.uint32), 2, 0, 0.0),
                     "torch": torch.get_rng_state()},
             "best": {"value": float("nan"), "step": None}, "callbacks": [{"sums": [torch.zeros(2), torch.ones(1)]}]}
    tree, tensors = encode(state)
    back = decode(json.loads(dumps(tree)), tensors)
    assert back["optimizer"]["state"][0]["exp_avg"].equal(torch.ones(2, 3))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["rng"]["python"] == (3, (1, 2, 3), None)
    assert back["rng"]["numpy"][1].dtype == np.uint32 and back["rng"]["torch"].equal(torch.get_rng_state())
    assert np.isnan(back["best"]["value"]) and back["callbacks"][0]["sums"][1].equal(torch.ones(1))
    with pytest.raises(TypeError, match="cannot store a set"):
        encode({"x": {1, 2}})


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_last_holds_no_pickle_and_an_old_pickle_is_never_loaded(tmp_path, tiny_data_dir):
    crashed = make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4, callbacks=[Crash(at=6)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    last = tmp_path / "crash" / "checkpoint-last"
    assert sorted(p.name for p in last.iterdir()) == ["model_state.safetensors", "trainer_state.json",
                                                      "trainer_state.safetensors"]
    state = strict_json(last / "trainer_state.json")
    assert state["global_step"] == 4 and state["epoch"] == 0 and state["step_in_epoch"] == 4
    assert state["rng"][0]["torch"]["__tensor__"] in load_file(last / "trainer_state.safetensors")
    # a crafted trainer_state.pt (what earlier versions wrote) is refused, its payload never runs
    marker = tmp_path / "payload-ran"
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (last / name).unlink()
    (last / "trainer_state.pt").write_bytes(pickle.dumps({"global_step": Payload(marker)}))
    with pytest.raises(SubnetsError, match="written by an older version.*not loaded"):
        make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4).train()
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated model state", "invalid json", "missing tensors"])
def test_a_damaged_checkpoint_last_is_one_clear_error(tmp_path, tiny_data_dir, damage):
    crashed = make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4, callbacks=[Crash(at=5)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    last = tmp_path / "crash" / "checkpoint-last"
    if damage == "truncated model state":
        data = (last / "model_state.safetensors").read_bytes()
        (last / "model_state.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "invalid json":
        (last / "trainer_state.json").write_text('{"global_step": 4,')
    else:
        (last / "trainer_state.safetensors").unlink()
    before = sorted(p.name for p in (tmp_path / "crash").rglob("*"))
    with pytest.raises(SubnetsError, match="checkpoint-last is damaged.*delete"):
        make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4).train()
    assert sorted(p.name for p in (tmp_path / "crash").rglob("*")) == before


class PoisonWeights(Callback):
    """Makes one weight NaN at a given step, as a diverging learning rate does."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, trainer):
        if trainer.global_step == self.at:
            with torch.no_grad():
                trainer.model.classifier.weight[0, 0] = float("nan")


def test_no_checkpoint_is_written_from_non_finite_weights(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, callbacks=[PoisonWeights(at=4)], eval_strategy="steps",
                           eval_steps=2, logging_steps=100)
    with pytest.raises(SubnetsError, match=r"weights became non-finite \(first: classifier.weight\) by step 4.*"
                                           r"checkpoint-last is kept at step 2 .*checkpoint-best: step 2"):
        trainer.train()
    run = tmp_path / "run"
    state = strict_json(run / "checkpoint-last" / "trainer_state.json")
    assert state["global_step"] == 2
    for path in (run / "checkpoint-last" / "model_state.safetensors", run / "checkpoint-best" / "model.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(path).values()), path


def test_a_crash_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path, tiny_data_dir):
    full = make_trainer(tmp_path, tiny_data_dir, name="full", save_steps=4)
    full.train()
    crashed = make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4, callbacks=[Crash(at=10)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    run = tmp_path / "crash"
    # the state atomic_dir leaves when killed after `checkpoint-last -> .checkpoint-last.old`, before the new
    # folder is renamed into place; plus a stale half-written file of another writer
    os.replace(run / "checkpoint-last", run / ".checkpoint-last.old")
    (run / ".checkpoint-last.x1.tmp").mkdir()
    (run / ".metrics.json.x2.tmp").write_text("{")
    resumed = make_trainer(tmp_path, tiny_data_dir, name="crash", save_steps=4)
    resumed.train()
    assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_two_runs_cannot_share_an_output_folder(tmp_path, tiny_data_dir):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from subnets.io import directory_lock\n"
                               f"with directory_lock({str(run)!r}):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SubnetsError, match="in use by another run"):
            make_trainer(tmp_path, tiny_data_dir, max_steps=2).train()
        assert not (run / "checkpoint-last").exists()
    finally:
        holder.stdin.close()
        holder.wait()
    make_trainer(tmp_path, tiny_data_dir, max_steps=2).train()  # free again once the other run ended
    assert (run / "checkpoint-last").is_dir()


def test_files_and_folders_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


class DivergingController(Callback):
    """A controller whose saved state (not a model or optimizer tensor) turns NaN at a given step."""

    def __init__(self, at):
        self.at, self.value = at, torch.zeros(2)

    def on_step_end(self, trainer):
        if trainer.global_step == self.at:
            self.value[1] = float("nan")

    def state_dict(self):
        return {"nested": {"values": [self.value]}}

    def load_state_dict(self, state):
        self.value = state["nested"]["values"][0]


def test_no_checkpoint_is_written_from_a_callback_state_that_diverged(tmp_path, tiny_data_dir):
    trainer = make_trainer(tmp_path, tiny_data_dir, callbacks=[DivergingController(at=4)], eval_strategy="steps",
                           eval_steps=2, logging_steps=100)
    with pytest.raises(SubnetsError, match=r"non-finite \(first: callback DivergingController nested.values\[0\]\) "
                                           r"by step 4.*checkpoint-last is kept at step 2"):
        trainer.train()
    assert strict_json(tmp_path / "run" / "checkpoint-last" / "trainer_state.json")["global_step"] == 2


def test_a_full_disk_during_a_checkpoint_write_keeps_the_last_good_checkpoint(tmp_path, tiny_data_dir, monkeypatch):
    import subnets.checkpointing as checkpointing
    from safetensors import SafetensorError

    real_save, calls, kept = checkpointing.save_file, [], {}
    last = tmp_path / "run" / "checkpoint-last"

    def disk_fills_up(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # the second checkpoint-last: safetensors' own error for ENOSPC
            kept.update({p.name: p.read_bytes() for p in last.iterdir()})
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_file", disk_fills_up)
    with pytest.raises(SubnetsError, match=r"No space left to write .*checkpoint-last .*the last complete "
                                           r"checkpoint-last is kept: free some space and rerun"):
        make_trainer(tmp_path, tiny_data_dir, save_steps=4).train()
    assert {p.name: p.read_bytes() for p in last.iterdir()} == kept
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(checkpointing, "save_file", real_save)
    assert make_trainer(tmp_path, tiny_data_dir, save_steps=4).train()["train_steps"] == 18  # resumes to the end
