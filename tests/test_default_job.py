import json

from subnets.pipelines import default_job, evaluate
from subnets.toydata import write_toy_data


def test_default_job_compares_dense_ce_ticket_and_robust_ticket_in_one_table(tmp_path, tiny_model_dir, capsys):
    """The job's three models each live in a stage run folder that evaluate.py loads; the robust ticket's search
    ran under FreeLB and the cross-entropy ticket's did not; the printed table has a row per model with the
    AdvGLUE and TextFooler columns; a second run resumes (no weights rewritten) and prints the same table."""
    data = write_toy_data(tmp_path / "data", ["sst2", "sst2-test", "advglue-sst2"])
    out = tmp_path / "job"
    argv = ["--data_dir", str(data), "--output_dir", str(out), "--model_name_or_path", str(tiny_model_dir()),
            "--train_samples", "64", "--attack_samples", "3"]
    summary = default_job.main(argv)
    printed = capsys.readouterr().out
    for name in default_job.MODELS:
        assert (out / name / "metrics.json").is_file()
        assert f"| {name} |" in printed
        row = summary["models"][name]
        assert {"sst2", "sst2-test", "advglue-sst2"} <= set(row)
        assert 0.0 <= row["sst2"]["accuracy_under_attack"] <= row["sst2"]["clean_accuracy"] <= 1.0
    assert summary["models"]["dense"]["sparsity"] == 0.0
    for name in ("ticket", "robust_ticket"):
        assert abs(summary["models"][name]["sparsity"] - default_job.SPARSITY) < 1e-3
    searches = {name: json.loads((out / name / "run_config.json").read_text()) for name in
                ("ticket_search", "robust_search")}
    assert searches["robust_search"]["ObjectiveArguments"]["adversary"] == "freelb"
    assert searches["ticket_search"]["ObjectiveArguments"]["adversary"] == "none"
    assert "TextFooler Aua" in printed and "AdvGLUE-SST2" in printed and "SST-2 test acc" in printed

    def weights_stamps():
        return {name: (out / name / "checkpoint-last" / "model_state.safetensors").stat().st_mtime_ns
                for name in default_job.MODELS}

    stamps = weights_stamps()
    again = default_job.main(argv)
    assert weights_stamps() == stamps
    assert again["table"] == summary["table"]
    reloaded = evaluate.main(["--checkpoint", str(out / "robust_ticket"), "--tasks", "sst2", "--data_dir", str(data),
                              "--output_dir", str(tmp_path / "eval")])
    assert reloaded["robust_ticket"]["sst2"]["eval_accuracy"] == summary["models"]["robust_ticket"]["sst2"][
        "eval_accuracy"]
