"""`pipelines/evaluate.py --attack ... --ood_task ...` end to end on a tiny checkpoint and a tiny data folder."""

import json

import pytest

from subnets.errors import SubnetsError
from subnets.models import tiny_model
from subnets.weights import save_plain_model

SST2_DEV = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
            "the movie was great", "a boring and dull plot", "great funny film", "the plot was boring"]


@pytest.fixture
def setup(tmp_path):
    model, tokenizer = tiny_model("bert")
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    save_plain_model(model, tokenizer, tmp_path / "ckpt")
    data = tmp_path / "data"
    (data / "glue" / "SST-2").mkdir(parents=True)
    (data / "glue" / "SST-2" / "dev.tsv").write_text(
        "sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SST2_DEV)))
    (data / "glue" / "RTE").mkdir()
    (data / "glue" / "RTE" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\tA man sleeps.\tSomeone rests.\tentailment\n"
        "1\tIt rains.\tThe sun shines.\tnot_entailment\n")
    (data / "attack").mkdir()
    (data / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(
        {"charming": ["lovely", "cute"], "journey": ["trip"], "movie": ["film"], "great": ["fine", "awful"],
         "boring": ["dull", "tedious"], "plot": ["storyline"], "bleak": ["grim", "dark"], "funny": ["amusing"]}))
    return tmp_path


def test_evaluate_with_attack_and_ood(setup):
    from subnets.pipelines.evaluate import main

    out = setup / "eval"
    results = main(["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
                    "--output_dir", str(out), "--attack", "textfooler", "--attack_samples", "4",
                    "--ood_task", "rte"])
    metrics = json.loads((out / "metrics.json").read_text())["ckpt"]["sst2"]
    config = metrics.pop("attack_config")
    assert config == results["ckpt"]["sst2"].pop("attack_config")
    assert metrics == pytest.approx(results["ckpt"]["sst2"])
    assert set(config["constraints"]) == {"repeat", "stopwords", "embedding", "pos", "use"}
    assert config["candidates"]["source"] == "shipped_lists" and config["constraints"]["use"]["window"] == 15
    for key in ("clean_accuracy", "accuracy_under_attack", "attack_success_rate", "avg_queries",
                "perturbed_word_ratio", "ood_auroc", "ood_fpr_at_95_tpr"):
        assert key in metrics
    assert metrics["accuracy_under_attack"] <= metrics["clean_accuracy"]
    records = [json.loads(line) for line in (out / "attacks" / "ckpt" / "sst2_textfooler.jsonl").read_text().splitlines()]
    assert len(records) == 4 and metrics["num_examples"] == 4
    assert sum(r["status"] != "skipped" for r in records) / 4 == pytest.approx(metrics["clean_accuracy"])
    table = (out / "results.md").read_text()
    assert "### sst2: textfooler" in table and "| ckpt |" in table


def test_evaluate_rejects_unknown_attack(setup):
    from subnets.pipelines.evaluate import main

    with pytest.raises(SubnetsError, match="Unknown --attack"):
        main(["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
              "--output_dir", str(setup / "eval"), "--attack", "hotflip"])
    base = ["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
            "--output_dir", str(setup / "eval")]
    with pytest.raises(SubnetsError, match="--attack_batch_size was given without --attack"):
        main(base + ["--attack_batch_size", "4"])
    with pytest.raises(SubnetsError, match="--attack_batch_size must be at least 1"):
        main(base + ["--attack", "textfooler", "--attack_batch_size", "0"])
    assert not (setup / "eval").exists()


def test_textattack_outputs_equal_metrics_and_attack_file_round_trip(setup):
    from subnets.pipelines.evaluate import main

    user = setup / "mine.tsv"
    user.write_text("text\tgold\n" + "".join(f"{s}\t{'positive' if i % 2 else 'negative'}\n"
                                             for i, s in enumerate(SST2_DEV)))
    out = setup / "eval-file"
    args = ["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
            "--output_dir", str(out), "--attack", "bae", "--attack_file", str(user),
            "--attack_text_columns", "text", "--attack_label_column", "gold", "--attack_disable", "use"]
    results = main(args)
    metrics = results["ckpt"]["file:mine"]
    assert metrics["num_examples"] == len(SST2_DEV) and "attack_config" in metrics
    assert "use" not in metrics["attack_config"]["constraints"] and "accuracy_under_attack" not in results["ckpt"]["sst2"]
    prefix = out / "attacks" / "ckpt" / "mine_bae"
    summary = json.loads((prefix.parent / "mine_bae_results_summary.json").read_text())["Attack Results"]
    assert summary["Number of successful attacks:"] == metrics["num_successful"]
    assert summary["Number of skipped attacks:"] == metrics["num_skipped"]
    assert summary["Original accuracy:"] == round(100 * metrics["clean_accuracy"], 2)
    assert summary["Accuracy under attack:"] == round(100 * metrics["accuracy_under_attack"], 2)
    assert summary["Attack success rate:"] == round(100 * metrics["attack_success_rate"], 2)
    assert summary["Avg num queries:"] == round(metrics["avg_queries"], 2)
    assert "Accuracy under attack:" in (prefix.parent / "mine_bae_summary.txt").read_text()
    import csv

    rows = list(csv.DictReader((prefix.parent / "mine_bae_results.csv").open()))
    assert list(rows[0]) == ["original_text", "perturbed_text", "original_score", "perturbed_score", "original_output",
                             "perturbed_output", "ground_truth_output", "num_queries", "result_type"]
    records = [json.loads(line) for line in (prefix.parent / "mine_bae.jsonl").read_text().splitlines()]
    assert [r["original"] for r in records] == [[s] for s in SST2_DEV]
    assert [int(r["ground_truth_output"]) for r in rows] == [r["label"] for r in records] == [i % 2 for i in range(6)]
    assert [r["result_type"] for r in rows] == [r["status"].capitalize() for r in records]
    # the same command again finds every example finished and attacks nothing
    assert main(args)["ckpt"]["file:mine"] == metrics


def test_attack_file_bad_columns(setup):
    from subnets.pipelines.evaluate import main

    user = setup / "mine.csv"
    user.write_text("text,gold\nfine film,positive\n")
    with pytest.raises(SubnetsError, match="lacks column"):
        main(["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
              "--output_dir", str(setup / "e"), "--attack", "pwws", "--attack_file", str(user),
              "--attack_text_columns", "sentence", "--attack_label_column", "gold"])


def test_ctrl_c_writes_finished_examples_then_same_command_resumes(setup, monkeypatch):
    from subnets.pipelines.evaluate import main
    from subnets.attacks.wrapper import HFClassifier

    def command(out):  # two examples in flight, so that the kill at the 7th model call falls mid-run
        return ["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
                "--output_dir", str(out), "--attack", "textfooler", "--attack_disable", "pos,use",
                "--attack_batch_size", "2"]

    args = command(setup / "eval")
    real = HFClassifier.predict_proba
    calls = {"n": 0}

    def interrupted(self, inputs):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return real(self, inputs)

    monkeypatch.setattr(HFClassifier, "predict_proba", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    folder = setup / "eval" / "attacks" / "ckpt"
    done = len((folder / "sst2_textfooler.jsonl").read_text().splitlines())
    summary = json.loads((folder / "sst2_textfooler_results_summary.json").read_text())["Attack Results"]
    counts = sum(summary[f"Number of {k} attacks:"] for k in ("successful", "failed", "skipped"))
    assert 0 < done == counts < len(SST2_DEV)
    monkeypatch.setattr(HFClassifier, "predict_proba", real)
    resumed = main(args)["ckpt"]["sst2"]
    fresh = main(command(setup / "fresh"))["ckpt"]["sst2"]
    assert resumed["num_examples"] == len(SST2_DEV)
    assert {k: v for k, v in resumed.items() if k != "attack_config"} == \
        {k: v for k, v in fresh.items() if k != "attack_config"}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_attack_file_reads_a_byte_order_mark_and_crlf(tmp_path, suffix):
    from subnets.attacks.pipeline import AttackOptions, file_examples

    path = tmp_path / f"texts{suffix}"
    if suffix == ".jsonl":
        lines = ['{"text": "a fine film", "label": "pos"}', '{"text": "a dull film", "label": "neg"}']
    else:
        sep = "," if suffix == ".csv" else "\t"
        lines = [f"text{sep}label", f"a fine film{sep}pos", f"a dull film{sep}neg"]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    examples = file_examples(path, ["text"], "label", ["neg", "pos"], AttackOptions(attack="pwws"))
    assert [(fields, label) for _, fields, label in examples] == [(("a fine film",), 1), (("a dull film",), 0)]


def test_resume_refuses_the_results_of_another_model_in_the_same_folder(setup):
    """Defect 28.5: the results of a resumed attack are keyed on the model's weights, not its folder's name."""
    import shutil

    from subnets.pipelines.evaluate import main

    args = ["--checkpoint", str(setup / "ckpt"), "--tasks", "sst2", "--data_dir", str(setup / "data"),
            "--output_dir", str(setup / "eval"), "--attack", "textfooler", "--attack_disable", "pos,use"]
    main(args)
    jsonl = setup / "eval" / "attacks" / "ckpt" / "sst2_textfooler.jsonl"
    first = jsonl.read_text()
    main(args)  # the same model resumes: nothing attacked again
    assert jsonl.read_text() == first
    other, tokenizer = tiny_model("bert", seed=1, label_names=("negative", "positive"))
    shutil.rmtree(setup / "ckpt")
    save_plain_model(other, tokenizer, setup / "ckpt")
    with pytest.raises(SubnetsError, match="attack on another model"):
        main(args)
    assert jsonl.read_text() == first
