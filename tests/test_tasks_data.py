import io
import json
import zipfile

import numpy as np
import pytest

from subnets.data import Collator, load_split, subsample, tokenize
from subnets.errors import SubnetsError
from subnets.tasks import DERIVED_EVAL_FRACTION, TASKS, get_task

TRAINING = {"sst2", "rte", "mrpc", "qnli", "qqp", "mnli", "vitaminc"}
EVAL_ONLY = {"hans", "paws-qqp", "mnli-hard-matched", "mnli-hard-mismatched", "fever-symmetric-v1", "sst2-test",
             "fever-symmetric-v2"} | {f"advglue-{t}" for t in ("sst2", "qqp", "mnli", "mnli-mm", "qnli", "rte")}


def test_registry_has_every_task_with_a_classifier_task():
    assert {n for n, t in TASKS.items() if t.trainable} == TRAINING
    assert {n for n, t in TASKS.items() if not t.trainable} == EVAL_ONLY
    for task in TASKS.values():
        assert task.local, task.name
        assert get_task(task.classifier_task).trainable
        assert task.metric in ("accuracy", "f1")
    assert get_task("SST-2").name == "sst2" and get_task("paws_qqp").name == "paws-qqp"


def test_unknown_and_eval_only_tasks_are_clear_errors():
    with pytest.raises(SubnetsError, match="Unknown task 'sts9'.*expected one of"):
        get_task("sts9")
    with pytest.raises(SubnetsError, match="evaluation-only"):
        get_task("hans", trainable=True)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_local_formats(tmp_path):
    write(tmp_path / "glue/RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA b.\tA.\tentailment\n"
                                          "1\tC d.\tE.\tnot_entailment\n")
    rte = load_split(get_task("rte"), "validation", tmp_path)
    assert rte["label"] == [0, 1] and rte["sentence2"] == ["A.", "E."] and rte["idx"] == [0, 1]

    write(tmp_path / "hans/heuristics_evaluation_set.tsv",
          "gold_label\tsentence1\tsentence2\theuristic\tsource_split\nnon-entailment\tP .\tH .\tsubsequence\tv\n")
    hans = load_split(get_task("hans"), "validation", tmp_path)
    assert hans[0] == {"idx": 0, "premise": "P .", "hypothesis": "H .", "heuristic": "subsequence", "label": 1}

    write(tmp_path / "advglue/dev.json", json.dumps({"qnli": [{"idx": 0, "question": "Q?", "sentence": "S.",
                                                              "label": 1}]}))
    assert load_split(get_task("advglue-qnli"), "validation", tmp_path)["label"] == [1]

    for f, text in (("s1", "p1\np2\n"), ("s2", "h1\nh2\n"), ("labels", "neutral\ncontradiction\n")):
        write(tmp_path / f"glue/MNLI/hard_matched/{f}.test", text)
    hard = load_split(get_task("mnli-hard-matched"), "test", tmp_path)
    assert hard["hypothesis"] == ["h1", "h2"] and hard["label"] == [1, 2]

    write(tmp_path / "fever/symmetric_v0.1/fever_symmetric_full.jsonl",
          json.dumps({"id": "1", "label": "REFUTES", "claim": "C", "evidence_sentence": "E"}) + "\n")
    fever = load_split(get_task("fever-symmetric-v1"), "test", tmp_path)
    assert fever[0]["claim"] == "C" and fever[0]["evidence"] == "E" and fever[0]["label"] == 1


def test_derived_split_is_seeded_disjoint_and_covers_the_file(tmp_path):
    lines = [json.dumps({"claim": f"c{i}", "evidence": f"e{i}", "label": "SUPPORTS"}) for i in range(50)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("vitaminc_real/test.jsonl", "\n".join(lines))
    (tmp_path / "fever/vitaminc").mkdir(parents=True)
    (tmp_path / "fever/vitaminc/vitaminc_real.zip").write_bytes(buffer.getvalue())
    task = get_task("vitaminc")
    train, dev = load_split(task, "train", tmp_path), load_split(task, "validation", tmp_path)
    assert len(dev) == round(DERIVED_EVAL_FRACTION * 50) and len(train) + len(dev) == 50
    assert not set(train["idx"]) & set(dev["idx"])
    assert load_split(task, "validation", tmp_path)["claim"] == dev["claim"]


def test_incomplete_rows_are_skipped_only_where_declared(tmp_path):
    write(tmp_path / "glue/QQP/cutoff_new_dev.tsv",
          "1\t2\t3\tq1 a? 0\tbroken\n" + "".join(f"{i}\t1\t2\tq{i}?\tp{i}?\t{i % 2}\n" for i in range(20)))
    qqp = get_task("qqp")
    assert len(load_split(qqp, "train", tmp_path)) + len(load_split(qqp, "validation", tmp_path)) == 20


def test_bad_labels_and_missing_files_are_clear_errors(tmp_path):
    write(tmp_path / "glue/SST-2/dev.tsv", "sentence\tlabel\nfine\t1\nodd\t7\n")
    with pytest.raises(SubnetsError, match=r"Label '7' in .*dev.tsv is not a label of task 'sst2'"):
        load_split(get_task("sst2"), "validation", tmp_path)
    with pytest.raises(SubnetsError, match="train.tsv not found"):
        load_split(get_task("sst2"), "train", tmp_path)
    with pytest.raises(SubnetsError, match="does not exist"):
        load_split(get_task("sst2"), "train", tmp_path / "nowhere")


def test_tokenize_pairs_keep_token_types_and_collator_pads_dynamically(tmp_path, tiny_bert):
    _, tokenizer = tiny_bert
    write(tmp_path / "glue/RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta b c d e f\tg\tentailment\n"
                                          "1\th\ti\tnot_entailment\n")
    ds = tokenize(load_split(get_task("rte"), "validation", tmp_path), tokenizer, get_task("rte"), 16)
    assert set(ds.column_names) == {"idx", "labels", "input_ids", "token_type_ids", "attention_mask"}
    batch = Collator(tokenizer)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, len(ds[0]["input_ids"]))  # longest in batch, not max_seq_length
    assert batch["token_type_ids"][0].max() == 1 and batch["labels"].tolist() == [0, 1]
    assert batch["attention_mask"][1].sum() == len(ds[1]["input_ids"])


def test_subsample_is_fixed_across_calls(tmp_path):
    write(tmp_path / "glue/SST-2/train.tsv", "sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(40)))
    ds = load_split(get_task("sst2"), "train", tmp_path)
    a, b = subsample(ds, 10, shuffle=True), subsample(ds, 10, shuffle=True)
    assert a["sentence"] == b["sentence"] and a["sentence"] != ds["sentence"][:10]
    assert subsample(ds, 5, shuffle=False)["idx"] == [0, 1, 2, 3, 4]


def test_real_offline_data_loads_with_expected_sizes(shared_data_dir):
    sizes = {("sst2", "train"): 67349, ("sst2", "validation"): 872, ("rte", "validation"): 277,
             ("hans", "validation"): 30000, ("paws-qqp", "test"): 677, ("advglue-sst2", "validation"): 148,
             ("mnli-hard-matched", "test"): 4573, ("fever-symmetric-v2", "test"): 1420}
    for (name, split), n in sizes.items():
        ds = load_split(get_task(name), split, shared_data_dir)
        assert len(ds) == n, name
        assert np.isin(ds["label"], range(len(get_task(name).label_names))).all()
    mnli = [len(load_split(get_task("mnli"), s, shared_data_dir)) for s in ("train", "validation")]
    assert sum(mnli) == 9815
