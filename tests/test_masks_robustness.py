"""The mask store and its CLI under hostile use: exports that would replace other files, readers racing writers,
damaged records, and update-mask logs of killed and resumed runs."""

from __future__ import annotations

import json

import pytest
import torch

from subnets.masks import MaskStore
from subnets.masks import update_log as update_log_module
from test_masks_cli import run, store_with_records  # noqa: F401 (fixture)


def test_export_never_replaces_what_is_not_an_earlier_export_of_the_record(capsys, store_with_records):  # noqa: F811
    root, store, ids = store_with_records
    base = ["--format", "dense", "--model", str(root / "base")]
    precious = root / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, root, "export", ids["a"], *base, "--out", str(precious))
    assert code == 2 and "is not an earlier export of record" in err and "--force" in err
    assert (precious / "notes.txt").read_text() == "keep me"
    # an earlier export of the same record may be replaced; one of another record may not
    out = root / "dense"
    assert run(capsys, root, "export", ids["a"], *base, "--out", str(out))[0] == 0
    assert json.loads((out / "export.json").read_text()) == {"record": ids["a"], "format": "dense"}
    assert run(capsys, root, "export", ids["a"], "--format", "sparse", "--model", str(root / "base"),
               "--out", str(out))[0] == 0
    code, _, err = run(capsys, root, "export", ids["b"], *base, "--out", str(out))
    assert code == 2 and "not an earlier export" in err
    assert run(capsys, root, "export", ids["b"], *base, "--out", str(precious), "--force")[0] == 0
    assert not (precious / "notes.txt").exists()
    # a pt file: replaced only by the same bytes, or with --force; a target under a file is refused
    other = root / "other.pt"
    other.write_bytes(b"someone's file")
    code, _, err = run(capsys, root, "export", ids["a"], "--format", "pt", "--out", str(other))
    assert code == 2 and "already exists" in err and other.read_bytes() == b"someone's file"
    mine = root / "m.pt"
    assert run(capsys, root, "export", ids["a"], "--format", "pt", "--out", str(mine))[0] == 0
    assert run(capsys, root, "export", ids["a"], "--format", "pt", "--out", str(mine))[0] == 0
    code, _, err = run(capsys, root, "export", ids["a"], *base, "--out", str(other / "sub"))
    assert code == 2 and "lies under" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["truncated", "no weights"])
def test_export_with_broken_model_weights_is_one_clear_error(capsys, store_with_records, damage):  # noqa: F811
    root, _, ids = store_with_records
    capsys.readouterr()  # the fixture's progress output
    weights = root / "base" / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
    code, _, err = run(capsys, root, "export", ids["a"], "--format", "dense", "--model", str(root / "base"),
                       "--out", str(root / "d"))
    assert code == 2 and err.startswith("error: Could not load the weights") and err.count("\n") == 1, err
    assert not (root / "d").exists()


def test_list_skips_a_damaged_update_record_with_a_warning(capsys, store_with_records):  # noqa: F811
    root, store, ids = store_with_records
    log = store.open_update_log({"method": "rose_second"}, flush_every=1)  # a run's open log, two chunks
    for step in (1, 2):
        log.append(step, {"w": torch.tensor(True)})
    index = log.directory / "index.jsonl"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(["{broken", *lines[1:]]) + "\n")
    capsys.readouterr()
    code, out, err = run(capsys, root, "--json", "list")
    assert code == 0 and {r["id"] for r in json.loads(out)} == {ids["a"], ids["b"], ids["c"], ids["u"]}
    assert f"skipped unreadable record {log.id[:12]}" in err and "line 1 is damaged" in err
    code, out, _ = run(capsys, root, "verify")
    assert code == 1 and f"BAD  {log.id}" in out and "4 of 5 records ok" in out


def test_readers_tolerate_an_update_log_closed_while_they_read(capsys, tmp_path, monkeypatch):
    store = MaskStore(tmp_path / "store")
    ticket = store.put({"w": torch.tensor([True, False])}, {"task": "sst2"})
    log = store.open_update_log({"method": "rose_second"}, flush_every=2)
    for step in (1, 2, 3):
        log.append(step, {"w": torch.tensor([True, step % 2 == 0])})
    log.flush()
    real_recovered, real_verify = update_log_module.recovered_meta, update_log_module.verify_update_record

    def close_then(real):
        def read(directory, *args):
            if log.closed_id is None:
                log.close()  # another process closes the log: its folder is renamed to the content id
            return real(directory, *args)
        return read

    monkeypatch.setattr(update_log_module, "recovered_meta", close_then(real_recovered))
    code, out, err = run(capsys, tmp_path, "--json", "list")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [ticket] and err == ""

    log = store.open_update_log({"method": "rose_second", "seed": 1}, flush_every=2)
    log.append(1, {"w": torch.tensor([True, True])})
    log.flush()
    monkeypatch.setattr(update_log_module, "recovered_meta", real_recovered)
    monkeypatch.setattr(update_log_module, "verify_update_record", close_then(real_verify))
    code, out, _ = run(capsys, tmp_path, "verify")
    assert code == 0 and "BAD" not in out


def rose_run(tiny_data_dir, model_dir, out, store, *extra):
    from subnets.pipelines import stage1_finetune

    return stage1_finetune.main([
        "--model_name_or_path", str(model_dir), "--task_name", "sst2", "--data_dir", str(tiny_data_dir),
        "--output_dir", str(out), "--per_device_train_batch_size", "16", "--num_train_epochs", "2",
        "--disable_tqdm", "true", "--logging_steps", "3", "--max_seq_length", "16", "--learning_rate", "1e-3",
        "--selective", "rose_second", "--rose_upper", "50", "--update_mask_every", "1", "--save_steps", "5",
        "--mask_store", str(store), *extra])


def test_a_killed_rose_run_resumes_into_the_record_an_uninterrupted_run_writes(tiny_data_dir, tiny_model_dir,
                                                                               tmp_path, monkeypatch):
    from subnets.training import Trainer

    model_dir, store = tiny_model_dir("bert"), tmp_path / "store"
    full = rose_run(tiny_data_dir, model_dir, tmp_path / "full", store)
    full_id = json.loads((tmp_path / "full" / "update_masks.json").read_text())["update_log_id"]
    assert [s for s, _ in MaskStore(store).get(full_id).steps()] == list(range(1, 13))  # 96 / 16 * 2 epochs

    step = Trainer._optimizer_step

    def killed_after_step_7(self, *args):
        step(self, *args)
        if self.global_step == 7:  # checkpoints at 5 and 6; 7 appends logged, none flushed by the count of 8
            raise KeyboardInterrupt("kill -9")

    monkeypatch.setattr(Trainer, "_optimizer_step", killed_after_step_7)
    with pytest.raises(KeyboardInterrupt):
        rose_run(tiny_data_dir, model_dir, tmp_path / "killed", store)
    monkeypatch.setattr(Trainer, "_optimizer_step", step)
    resumed = rose_run(tiny_data_dir, model_dir, tmp_path / "killed", store)
    resumed_id = json.loads((tmp_path / "killed" / "update_masks.json").read_text())["update_log_id"]
    assert resumed_id == full_id
    assert resumed["eval_accuracy"] == full["eval_accuracy"]
    assert [r.id for r in MaskStore(store).list(kind="update")] == [full_id]  # no partial record left behind
