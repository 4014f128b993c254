"""Your own data: files as GLUE/PAWS/HANS/FEVER distribute them (BOM, CRLF, literal quotes), user CSV/TSV/JSONL
tasks with their errors, and a user CSV task through every stage on a tiny model."""

import json

import pytest

from subnets.toydata import FILLER, NEGATIVE, POSITIVE
from subnets.data import load_split
from subnets.errors import SubnetsError
from subnets.tasks import get_task
from subnets.user_data import DataFileArguments, task_from_record, task_record, user_task

BOM = "\ufeff"


def write(path, lines, *, bom=False, crlf=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    path.write_bytes(((BOM if bom else "") + end.join(lines) + end).encode("utf-8"))


@pytest.fixture
def glue_dir(tmp_path):
    """Every registry GLUE task's folder exactly as GLUE's download script writes it (headers, MRPC's byte-order
    mark, quotes that are literal text), some with CRLF line ends."""
    root = tmp_path / "glue_data"
    g = root / "glue"
    write(g / "SST-2" / "train.tsv", ["sentence\tlabel", 'it \'s a "charming" journey \t1', "bleak\t0"])
    write(g / "SST-2" / "dev.tsv", ["sentence\tlabel", '" unflinchingly bleak\t0'], crlf=True)
    write(g / "RTE" / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                    '0\tHe said "no.\tHe refused.\tentailment'], crlf=True)
    write(g / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tnot_entailment"])
    mrpc_header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    write(g / "MRPC" / "train.tsv", [mrpc_header, '1\t702876\t702977\tAmrozi "called him\tReferring to him'],
          bom=True)
    write(g / "MRPC" / "dev.tsv", [mrpc_header, "0\t1\t2\tOne.\tTwo."], bom=True)
    write(g / "QNLI" / "train.tsv", ["index\tquestion\tsentence\tlabel", '0\tWhat "is" it?\tIt is.\tentailment'])
    write(g / "QNLI" / "dev.tsv", ["index\tquestion\tsentence\tlabel", "0\tWho?\tNobody.\tnot_entailment"])
    qqp_header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write(g / "QQP" / "train.tsv", [qqp_header, '0\t1\t2\tHow do I "learn"?\tHow to learn?\t1', "1\t3\t4\tbroken"],
          crlf=True)
    write(g / "QQP" / "dev.tsv", [qqp_header, "5\t6\t7\tWhy?\tWhy not?\t0"])
    mnli_header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
    write(g / "MNLI" / "train.tsv", [mnli_header + "\tlabel1\tgold_label",
                                     '0\t1\t1e\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tShe said "hi.\tShe spoke.'
                                     '\tentailment\tentailment'])
    write(g / "MNLI" / "dev_matched.tsv", [mnli_header + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
                                           "0\t1\t1n\tslate\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tA.\tB.\tneutral\t"
                                           "neutral\tneutral\tneutral\tneutral\tneutral"], crlf=True)
    return root


@pytest.mark.parametrize("task_name, train_text, train_label, n_dev", [
    ("sst2", ('it \'s a "charming" journey',), "positive", 1),
    ("rte", ('He said "no.', "He refused."), "entailment", 1),
    ("mrpc", ('Amrozi "called him', "Referring to him"), "equivalent", 1),
    ("qnli", ('What "is" it?', "It is."), "entailment", 1),
    ("qqp", ('How do I "learn"?', "How to learn?"), "duplicate", 1),
    ("mnli", ('She said "hi.', "She spoke."), "entailment", 1),
])
def test_every_glue_task_reads_the_download_script_layout(glue_dir, task_name, train_text, train_label, n_dev):
    task = get_task(task_name)
    train = load_split(task, "train", glue_dir)
    first = train[0]
    assert tuple(first[f] for f in task.text_fields) == train_text  # quotes are literal, no CR left over
    assert task.label_names[first["label"]] == train_label
    assert len(load_split(task, "validation", glue_dir)) == n_dev  # not a seeded part of another file


def test_offline_layout_still_derives_a_split_when_glue_train_is_absent(glue_dir):
    (glue_dir / "glue" / "QNLI" / "train.tsv").unlink()
    rows = ["index\tquestion\tsentence\tlabel"] + [f"{i}\tq{i}?\ts{i}.\tentailment" for i in range(10)]
    write(glue_dir / "glue" / "QNLI" / "dev.tsv", rows)
    task = get_task("qnli")
    train, dev = load_split(task, "train", glue_dir), load_split(task, "validation", glue_dir)
    assert len(train) == 8 and len(dev) == 2 and not set(train["question"]) & set(dev["question"])


def test_paws_hans_and_fever_files_with_bom_and_crlf(tmp_path):
    root = tmp_path / "data"
    write(root / "paws" / "qqp" / "dev_and_test.tsv", ["id\tsentence1\tsentence2\tlabel",
                                                      "1\tb'What \"is\" x ?'\tb'What is x ?'\t1"], bom=True, crlf=True)
    write(root / "hans" / "heuristics_evaluation_set.tsv", ["gold_label\tsentence1\tsentence2\theuristic",
                                                           "non-entailment\tThe \"doctor\" ran.\tThe doctor.\tlexical_overlap"],
          bom=True, crlf=True)
    fever = [json.dumps({"claim": "A \u2028 claim", "evidence": "Some evidence", "gold_label": "SUPPORTS",
                         "label": "SUPPORTS"}), json.dumps({"claim": "B", "evidence": "E", "label": "REFUTES"})]
    write(root / "fever" / "symmetric_v0.2" / "fever_symmetric_dev.jsonl", fever, bom=True, crlf=True)
    write(root / "fever" / "symmetric_v0.2" / "fever_symmetric_test.jsonl", fever[1:], crlf=True)
    paws = load_split(get_task("paws-qqp"), "test", root)
    assert paws[0]["question1"] == "b'What \"is\" x ?'" and paws[0]["label"] == 1
    hans = load_split(get_task("hans"), "validation", root)
    assert hans[0]["premise"] == 'The "doctor" ran.' and hans[0]["heuristic"] == "lexical_overlap"
    sym = load_split(get_task("fever-symmetric-v2"), "test", root)
    assert sym["claim"] == ["A \u2028 claim", "B", "B"] and sym["label"] == [0, 1, 1]


def test_user_files_csv_tsv_jsonl_pairs_and_inferred_labels(tmp_path):
    write(tmp_path / "train.csv", ["premise,hypothesis,gold", '"A man, tall",He is tall,yes', 'NA,"say ""hi""",no'],
          bom=True, crlf=True)
    write(tmp_path / "dev.tsv", ["premise\thypothesis\tgold", 'He "ran\tHe moved\tyes'], bom=True, crlf=True)
    write(tmp_path / "test.jsonl", [json.dumps({"premise": "P", "hypothesis": "H", "gold": "no"})], bom=True, crlf=True)
    args = DataFileArguments(train_file=str(tmp_path / "train.csv"), validation_file=str(tmp_path / "dev.tsv"),
                             test_file=str(tmp_path / "test.jsonl"), text_columns="premise,hypothesis",
                             label_column="gold")
    task = user_task(args, "entail")
    assert task.label_names == ("no", "yes") and task.is_pair and task.user and task.bias_field == "hypothesis"
    train = load_split(task, "train")
    assert train["premise"] == ["A man, tall", "NA"] and train["hypothesis"][1] == 'say "hi"'
    assert train["label"] == [1, 0]
    assert load_split(task, "validation")["premise"] == ['He "ran']  # TSV: quotes are literal
    assert load_split(task, "test")["label"] == [0]
    assert task_from_record(json.loads(json.dumps(task_record(task)))) == task
    write(tmp_path / "n.csv", ["t,label", "a,10", "b,2", "c,2"])
    numeric = user_task(DataFileArguments(train_file=str(tmp_path / "n.csv"), text_columns="t"))
    assert numeric.label_names == ("2", "10") and numeric.name == "custom"


def test_user_file_errors_are_one_clear_sentence(tmp_path):
    write(tmp_path / "train.csv", ["text,label", "good,pos", "bad,neg"])
    write(tmp_path / "odd.csv", ["text,label", "meh,neutral"])
    (tmp_path / "empty.csv").write_bytes(b"")
    write(tmp_path / "header_only.csv", ["text,label"])

    def task(**kw):
        return user_task(DataFileArguments(**{"train_file": str(tmp_path / "train.csv"), "text_columns": "text",
                                              **kw}))

    with pytest.raises(SubnetsError, match=r"Label 'neutral' in .*odd.csv is not a label of task 'custom'; "
                                           r"expected one of \['neg', 'pos'\]"):
        load_split(task(validation_file=str(tmp_path / "odd.csv")), "validation")
    with pytest.raises(SubnetsError, match="Label 'pos' .* expected one of \\['bad', 'good'\\]"):
        load_split(task(label_names="bad,good"), "train")
    with pytest.raises(SubnetsError, match="Column 'sentence' .* is missing in .*train.csv; found columns"):
        load_split(task(text_columns="sentence"), "train")
    with pytest.raises(SubnetsError, match="Label column 'gold' is missing"):
        task(label_column="gold")
    with pytest.raises(SubnetsError, match="empty.csv is empty"):
        load_split(task(validation_file=str(tmp_path / "empty.csv"), label_names="neg,pos"), "validation")
    with pytest.raises(SubnetsError, match="header_only.csv has no examples"):
        load_split(task(validation_file=str(tmp_path / "header_only.csv")), "validation")
    with pytest.raises(SubnetsError, match="--train_file .*missing.csv does not exist"):
        task(train_file=str(tmp_path / "missing.csv"))
    with pytest.raises(SubnetsError, match="--text_columns 'a,b,c' is not valid"):
        task(text_columns="a,b,c")
    with pytest.raises(SubnetsError, match="'sst2' is a built-in task"):
        user_task(DataFileArguments(train_file=str(tmp_path / "train.csv"), text_columns="text"), "sst2")


def write_sentiment_csv(path, n, seed):
    import random

    rng = random.Random(seed)
    lines = ["review,verdict"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        lines.append(f"\"{', '.join(words)}\",{'thumbs up' if label else 'thumbs down'}")
    write(path, lines, bom=True, crlf=True)


def test_user_csv_task_trains_searches_retrains_and_evaluates(tmp_path, tiny_model_dir, monkeypatch):
    from subnets.masks import MaskStore
    from subnets.pipelines import evaluate, stage1_finetune, stage2_search, stage3_retrain

    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    for name, n, seed in (("train.csv", 48, 1), ("dev.csv", 16, 2), ("test.csv", 16, 3)):
        write_sentiment_csv(tmp_path / name, n, seed)
    quick = ["--per_device_train_batch_size", "16", "--max_steps", "3", "--disable_tqdm", "true",
             "--max_seq_length", "32", "--learning_rate", "1e-3"]
    files = ["--train_file", str(tmp_path / "train.csv"), "--validation_file", str(tmp_path / "dev.csv"),
             "--text_columns", "review", "--label_column", "verdict"]
    ft = stage1_finetune.main(["--model_name_or_path", str(tiny_model_dir()), "--task_name", "reviews",
                               "--output_dir", str(tmp_path / "ft"), *files, *quick])
    config = json.loads((tmp_path / "ft" / "run_config.json").read_text())
    assert config["DataArguments"]["task_name"] == "reviews"
    assert config["task"]["label_names"] == ["thumbs down", "thumbs up"] and config["task"]["text_columns"] == ["review"]
    assert ft["train_steps"] == 3 and 0.0 <= ft["eval_accuracy"] <= 1.0
    # stage 2 and 3 read the task from the run directories they start from (no data options)
    search = stage2_search.main(["--model_name_or_path", str(tmp_path / "ft"), "--output_dir", str(tmp_path / "hc"),
                                 "--method", "hard_concrete", "--target_sparsity", "0.3", *quick])
    assert json.loads((tmp_path / "hc" / "run_config.json").read_text())["task"] == config["task"]
    ticket = stage3_retrain.main(["--mask", str(tmp_path / "hc"), "--sparsity", "0.3", "--task_name", "reviews",
                                  "--output_dir", str(tmp_path / "ticket"), *quick])
    assert ticket["sparsity"] == pytest.approx(0.3, abs=0.01)
    records = MaskStore(tmp_path / "store").list(task="reviews")
    assert {r.kind for r in records} == {"ticket", "state"} and search["mask_ids"]["ticket"] in {r.id for r in records}
    results = evaluate.main(["--checkpoint", str(tmp_path / "ft"), "--checkpoint", str(tmp_path / "ticket"),
                             "--validation_file", str(tmp_path / "dev.csv"), "--test_file", str(tmp_path / "test.csv"),
                             "--text_columns", "review", "--label_column", "verdict",
                             "--output_dir", str(tmp_path / "eval")])
    assert set(results["ft"]) == {"reviews", "reviews-test"}
    assert results["ft"]["reviews"]["eval_accuracy"] == pytest.approx(ft["last_eval_accuracy"])
    assert results["ticket"]["reviews-test"]["eval_samples"] == 16
    assert "reviews-test accuracy" in (tmp_path / "eval" / "results.md").read_text()


def test_bias_model_on_a_user_pair_task(tmp_path):
    from subnets.pipelines import train_bias_model
    from subnets.objectives import PredictionCache

    rows = ["premise,hypothesis,label"] + [f"p{i},{'not ' if i % 2 else ''}h{i % 3},{'no' if i % 2 else 'yes'}"
                                           for i in range(20)]
    write(tmp_path / "train.csv", rows, bom=True)
    write(tmp_path / "dev.csv", rows[:7])
    metrics = train_bias_model.main(["--bias_type", "hypothesis_only", "--output_dir", str(tmp_path / "bias"),
                                     "--task_name", "nli", "--folds", "2", "--train_file", str(tmp_path / "train.csv"),
                                     "--validation_file", str(tmp_path / "dev.csv"),
                                     "--text_columns", "premise,hypothesis"])
    assert metrics["eval_accuracy"] == 1.0  # "not" in the hypothesis gives the label away
    cache = PredictionCache.load(tmp_path / "bias" / "bias_predictions.safetensors")
    assert cache.task == "nli" and len(cache.ids) == 20
    assert json.loads((tmp_path / "bias" / "run_config.json").read_text())["task"]["label_names"] == ["no", "yes"]


def test_user_task_without_train_file_or_with_bad_metric_leaves_no_run_directory(tmp_path, tiny_model_dir):
    from subnets.pipelines import stage1_finetune

    write_sentiment_csv(tmp_path / "dev.csv", 8, 2)
    base = ["--model_name_or_path", str(tiny_model_dir()), "--text_columns", "review", "--label_column", "verdict",
            "--validation_file", str(tmp_path / "dev.csv")]
    with pytest.raises(SubnetsError, match="No --train_file given"):
        stage1_finetune.main([*base, "--output_dir", str(tmp_path / "a")])
    with pytest.raises(SubnetsError, match="Unknown --metric_for_best_model 'f1' for task 'custom'"):
        stage1_finetune.main([*base, "--train_file", str(tmp_path / "dev.csv"), "--metric_for_best_model", "f1",
                              "--output_dir", str(tmp_path / "b")])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_empty_and_nan_labels_are_an_error_naming_the_rows(tmp_path):
    write(tmp_path / "train.csv", ["text,label", "good,pos", "meh,", "bad,neg", "odd,NaN"])
    write(tmp_path / "dev.jsonl", ['{"text": "fine", "label": "pos"}', '{"text": "what", "label": null}'])
    args = DataFileArguments(train_file=str(tmp_path / "train.csv"), text_columns="text")
    with pytest.raises(SubnetsError, match=r"Label column 'label' of .*train.csv is empty or NaN in example row\(s\) "
                                           r"2, 4 \(the first example is row 1\)"):
        user_task(args)  # not the classes '', 'NaN', 'neg', 'pos'
    task = user_task(DataFileArguments(train_file=str(tmp_path / "train.csv"), validation_file=str(
        tmp_path / "dev.jsonl"), text_columns="text", label_names="neg,pos"))
    with pytest.raises(SubnetsError, match=r"dev.jsonl is empty or NaN in example row\(s\) 2 "):
        load_split(task, "validation")


@pytest.mark.parametrize("case", ["malformed csv", "malformed tsv", "latin-1"])
def test_unreadable_user_files_are_one_clear_error(tmp_path, case):
    if case == "malformed csv":
        path = tmp_path / "train.csv"
        path.write_text('text,label\n"good,pos\nbad,neg,extra,cells\n')
        message = r"Could not read .*train.csv as CSV"
    elif case == "malformed tsv":
        path = tmp_path / "train.tsv"
        path.write_text("text\tlabel\ngood\tpos\nbad\tneg\tsurplus\tcells\n")
        message = r"Could not read .*train.tsv as TSV"
    else:
        path = tmp_path / "train.csv"
        path.write_bytes("text,label\ncaf\u00e9 cr\u00e8me,pos\nbad,neg\n".encode("latin-1"))
        message = r"train.csv is not UTF-8 text \(invalid continuation byte\); expected a UTF-8 CSV file"
    with pytest.raises(SubnetsError, match=message):
        user_task(DataFileArguments(train_file=str(path), text_columns="text"))
