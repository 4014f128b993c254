"""`--selective` through the stage scripts: update masks in the mask store, update ratios in TensorBoard."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from subnets.masks import MaskStore
from subnets.errors import SubnetsError


def run_stage1(tiny_data_dir, model_dir, out, store, *extra, epochs=1):
    from subnets.pipelines import stage1_finetune

    return stage1_finetune.main([
        "--model_name_or_path", str(model_dir), "--task_name", "sst2", "--data_dir", str(tiny_data_dir),
        "--output_dir", str(out), "--per_device_train_batch_size", "16", "--num_train_epochs", str(epochs),
        "--disable_tqdm", "true", "--logging_steps", "3", "--max_seq_length", "16", "--learning_rate", "1e-3",
        "--mask_store", str(store), *extra])


def scalar_tags(run_dir):
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return set(events.Tags()["scalars"])


def test_rose_second_records_update_masks(tiny_data_dir, tiny_model_dir, tmp_path):
    out, store = tmp_path / "run", tmp_path / "store"
    metrics = run_stage1(tiny_data_dir, tiny_model_dir("roberta"), out, store, "--selective", "rose_second",
                         "--rose_upper", "50", "--update_mask_every", "1", "--adam_beta2", "0.98")
    assert "eval_accuracy" in metrics
    record = MaskStore(store).get(json.loads((out / "update_masks.json").read_text())["update_log_id"])
    assert record.meta["method"] == "rose_second" and record.meta["complete"]
    steps = [step for step, _ in record.steps()]
    assert steps == [1, 2, 3, 4, 5, 6]  # 96 examples / 16 = 6 steps
    counts = record.meta["update_counts"]
    assert len(counts) == 2 * 8 and all(0 <= c <= len(steps) for c in counts.values())
    assert min(counts.values()) < len(steps)  # the band [0, 50] froze something at a logged step
    _, first = next(record.steps())
    assert all(m.dim() == 0 and float(m) == 1.0 for m in first.values())  # step 1 keeps everything
    assert {"update/ratio/layer_0", "update/ratio/layer_1"} <= scalar_tags(out)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("update/ratio/layer_0" in entry for entry in history)  # the logger's scalars are log_history's too


def test_roast_with_its_adversary(tiny_data_dir, tiny_model_dir, tmp_path):
    out, store = tmp_path / "run", tmp_path / "store"
    metrics = run_stage1(tiny_data_dir, tiny_model_dir("bert"), out, store, "--selective", "roast",
                         "--adversary", "roast", "--roast_alpha", "0.6", "--roast_beta", "1",
                         "--roast_fisher_batches", "2", "--max_train_samples", "48", epochs=2)
    assert "eval_accuracy" in metrics
    record = MaskStore(store).get(json.loads((out / "update_masks.json").read_text())["update_log_id"])
    (step_a, epoch_1), (step_b, epoch_2) = list(record.steps())
    assert (step_a, step_b) == (0, 3)  # drawn at the start of each epoch (48 examples / 16 per step)
    name = next(iter(epoch_1))
    assert epoch_1[name].dtype == torch.bool and epoch_1[name].dim() >= 1
    kept = sum(int(m.sum()) for m in epoch_1.values()) / sum(m.numel() for m in epoch_1.values())
    assert 0.2 < kept < 0.7  # alpha 0.6, beta 1: mean keep probability ~ 0.45
    assert any(not torch.equal(epoch_1[n], epoch_2[n]) for n in epoch_1)  # redrawn per epoch
    assert "update/ratio/layer_0" in scalar_tags(out)


def test_rose_ensemble_with_subset_scores(tiny_data_dir, tiny_model_dir, tmp_path):
    out, store = tmp_path / "run", tmp_path / "store"
    metrics = run_stage1(tiny_data_dir, tiny_model_dir("bert"), out, store, "--selective", "rose_ensemble",
                         "--rose_upper", "50", "--rose_gamma", "0.3", "--rose_score_examples", "4",
                         "--update_mask_every", "2")
    assert "eval_accuracy" in metrics
    assert json.loads((out / "run_config.json").read_text())["SelectiveArguments"]["rose_score_examples"] == 4
    record = MaskStore(store).get(json.loads((out / "update_masks.json").read_text())["update_log_id"])
    values = {round(float(m), 4) for _, masks in record.steps() for m in masks.values()}
    assert values <= {0.0, 0.3, 0.7, 1.0} and len(values) >= 2


def test_rose_first_refuses_a_second_objective(tiny_data_dir, tiny_model_dir, tmp_path):
    with pytest.raises(SubnetsError, match="adversary"):
        run_stage1(tiny_data_dir, tiny_model_dir("bert"), tmp_path / "run", tmp_path / "store",
                   "--selective", "rose_first", "--adversary", "freelb")


def test_stage3_and_recipes_take_the_selective_options():
    from subnets.pipelines import RECIPE_DIR
    from subnets.pipelines.common import parse_stage_args
    from subnets.config import load_recipe
    from subnets.masking.retrain import RetrainArguments
    from subnets.selective import RoseArguments, SelectiveArguments

    args = parse_stage_args([RetrainArguments], ["--output_dir", "x", "--selective", "rose_ensemble",
                                                 "--rose_upper", "80", "--rose_gamma", "0.3"])
    assert args[SelectiveArguments].selective == "rose_ensemble" and args[RoseArguments].rose_gamma == 0.3
    for name in ("rose_second_sst2", "roast_sst2", "roast_qnli"):
        recipe = load_recipe(name, RECIPE_DIR)
        parsed = parse_stage_args([], ["--recipe", name, "--output_dir", "x"])
        assert parsed[SelectiveArguments].selective == recipe["selective"]


def test_builder_choices():
    from subnets.selective import RoseArguments, SelectiveArguments, build_selective

    empty = build_selective(SelectiveArguments())
    assert empty.optimizer_factory is None and empty.callbacks == [] and empty.objective is None
    assert build_selective(SelectiveArguments(selective="rose_second")).objective is None
    assert build_selective(SelectiveArguments(selective="rose_first")).objective.score_examples is None  # B/4
    ensemble = build_selective(SelectiveArguments(selective="rose_ensemble"),
                               options=[RoseArguments(rose_score_examples=4)])
    assert ensemble.objective.score_examples == 4
    with pytest.raises(SubnetsError, match="--selective"):
        build_selective(SelectiveArguments(selective="rose"))
    with pytest.raises(SubnetsError, match="update_mask_every"):
        build_selective(SelectiveArguments(selective="roast", update_mask_every=0))


@pytest.mark.parametrize("selective", ["rose_first", "roast"])
def test_rerunning_a_finished_or_killed_after_training_run_finishes_cleanly(tiny_data_dir, tiny_model_dir, tmp_path,
                                                                              selective):
    """Issue 28, defect 11: rerunning a finished ROSE or RoAST command, or one killed after training ended, failed
    with "update-mask record ... is not in STORE"."""
    out, store = tmp_path / "run", tmp_path / "store"
    argv = ["--selective", selective, "--update_mask_every", "2", "--max_train_samples", "32"]
    first = run_stage1(tiny_data_dir, tiny_model_dir("bert"), out, store, *argv)
    record_id = json.loads((out / "update_masks.json").read_text())["update_log_id"]
    again = run_stage1(tiny_data_dir, tiny_model_dir("bert"), out, store, *argv)
    assert again["eval_accuracy"] == first["eval_accuracy"] and again["train_steps"] == first["train_steps"]
    (out / "metrics.json").unlink()  # killed after training ended, before the stage wrote its metrics
    run_stage1(tiny_data_dir, tiny_model_dir("bert"), out, store, *argv)
    assert json.loads((out / "update_masks.json").read_text())["update_log_id"] == record_id
    assert [r.id for r in MaskStore(store).list(kind="update")] == [record_id]
    assert all(r["ok"] for r in MaskStore(store).verify())
