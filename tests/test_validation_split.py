"""--validation_split_percentage: model selection on held-out training rows, grouped so that related rows never
straddle the split, disjoint from every reported set; the run's record names the split (issue 27)."""

import json

import pytest

from subnets.pipelines import stage1_finetune
from subnets.data import load_split, validation_split
from subnets.errors import SubnetsError
from subnets.tasks import get_task


def spans(text):
    words = text.split()
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}


@pytest.mark.slow
def test_sst2_validation_sentences_keep_all_their_phrases_out_of_training(shared_data_dir):
    task = get_task("sst2")
    rows = load_split(task, "train", shared_data_dir)
    train, held, how = validation_split(rows, task, 10)
    training, validation = set(train["sentence"]), held["sentence"]
    assert len(train) + len(held) < len(rows) and len(held) > 500 and "sentences" in how
    assert not training & set(validation)  # disjoint from the training rows
    for sentence in validation:  # no phrase of a held-out sentence is left in training ...
        assert not spans(sentence) & training
    longest = sorted(training, key=len)[-2000:]  # ... and no held-out sentence is a phrase of a training row
    assert not [s for s in validation[:200] for t in longest if s != t and f" {s} " in f" {t} "]
    for split in ("validation", "test"):  # disjoint from every reported set (SST-2 dev and its labelled test set)
        assert not set(validation) & set(load_split(task, split, shared_data_dir)["sentence"])
    again = validation_split(rows, task, 10)[1]["sentence"]
    assert again == validation  # seeded


@pytest.mark.slow
def test_mnli_pairs_of_one_premise_never_straddle_the_split(shared_data_dir):
    task = get_task("mnli")
    rows = load_split(task, "train", shared_data_dir)
    train, held, how = validation_split(rows, task, 10)
    assert len(train) + len(held) == len(rows) and len(held) >= len(rows) // 10 and "premise" in how
    assert not set(train["premise"]) & set(held["premise"])
    reported = load_split(task, task.eval_split, shared_data_dir)
    pairs = set(zip(reported["premise"], reported["hypothesis"]))
    assert not pairs & set(zip(held["premise"], held["hypothesis"]))


def test_a_stage_selects_on_the_held_out_split_and_records_it(tmp_path, tiny_data_dir, tiny_model_dir):
    out = tmp_path / "ft"
    metrics = stage1_finetune.main(["--model_name_or_path", str(tiny_model_dir()), "--task_name", "sst2",
                                    "--data_dir", str(tiny_data_dir), "--output_dir", str(out), "--max_steps", "2",
                                    "--validation_split_percentage", "25"])
    task = get_task("sst2")
    held = validation_split(load_split(task, "train", tiny_data_dir), task, 25)[1]
    dev = load_split(task, "validation", tiny_data_dir)
    assert metrics["eval_samples"] == len(held) != len(dev)  # checkpoint-best was chosen on the held-out rows
    config = json.loads((out / "run_config.json").read_text())
    assert config["selection_split"] == "validation_split(25%, seed 2022) of the training split"
    default = tmp_path / "default"
    stage1_finetune.main(["--model_name_or_path", str(tiny_model_dir()), "--task_name", "sst2", "--data_dir",
                          str(tiny_data_dir), "--output_dir", str(default), "--max_steps", "1"])
    assert json.loads((default / "run_config.json").read_text())["selection_split"] == "the task's validation split"
    with pytest.raises(SubnetsError, match="--validation_split_percentage 100 is out of range"):
        stage1_finetune.main(["--model_name_or_path", str(tiny_model_dir()), "--task_name", "sst2", "--data_dir",
                              str(tiny_data_dir), "--output_dir", str(tmp_path / "bad"),
                              "--validation_split_percentage", "100"])
