import json
from pathlib import Path

import pytest

from subnets.pipelines import reproduce
from subnets.intervals import paired_difference
from subnets.pipelines.papers import Row, Setting, Table, pruning_robustness


def smoke(paper: str, out):
    """Run `paper` at the smoke budget (one seed, inline); check the report and results.json hold every table,
    row and column of the paper's tables with the paper's numbers, and every implemented cell has a value read
    from its run's metrics.json. Returns (results, report)."""
    result = reproduce.main([paper, "--budget", "smoke", "--seeds", "1", "--output_dir", str(out),
                             "--executor", "inline"])
    assert not [o for o in result["outcomes"].values() if o["status"] in ("failed", "blocked")]
    module = reproduce.load_paper(paper)
    setting = Setting("smoke", "tiny", "data", (1,), reproduce.TRAIN["smoke"], reproduce.EVALUATE["smoke"],
                      tuple(module.budget_tasks["smoke"]))
    tables = module.tables(setting)
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == sorted(t.name for t in tables)
    for table in tables:
        assert f"### {table.title}" in report
        assert sorted(results[table.name]) == sorted(row.name for row in table.rows)  # JSON keys are sorted
        for row in table.rows:
            assert f"| {row.name} |" in report
            cells = results[table.name][row.name]
            assert sorted(cells) == sorted(c.name for c in table.columns)
            for column in table.columns:
                cell = cells[column.name]
                compared = {other for first, other in table.comparisons if first == row.name}
                assert set(cell) == {"mean", "sd", "n", "paper", "runs", "interval", "paired", "attack"} | \
                    ({"versus"} if compared else set())
                assert set(cell.get("versus", {})) == compared
                assert cell["paper"] == module.numbers.get(table.name, {}).get(row.name, {}).get(column.name)
                assert cell["n"] == 1 and cell["sd"] is None and len(cell["runs"]) == 1
                metrics = json.loads((out / cell["runs"][0] / "metrics.json").read_text())
                assert metrics  # the value was read from this run
                assert cell["mean"] >= 0.0 and (column.scale != 100.0 or cell["mean"] <= 100.0)
        for column in table.columns:
            assert f"{column.name} (paper)" in report and f"{column.name} (ours)" in report
        for first, other in table.comparisons:  # each declared pair has its line in the between-rows table
            assert f"| {first} - {other} |" in report
        if table.plot:
            assert (out / f"{table.name}.png").stat().st_size > 1000
    return results, report


def recorded_argv(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "sweep_run.json").read_text())["argv"]


def test_reproduce_robust_tickets_smoke_writes_every_row_with_the_paper_numbers(tmp_path):
    from subnets.pipelines.papers.robust_tickets import NUMBERS

    results, report = smoke("robust_tickets", tmp_path / "rt")
    assert sorted(results["sst2"]) == sorted(["fine-tune", "FreeLB", "IMP ticket", "random ticket", "robust ticket",
                                              "robust ticket w/o adversary"])
    robust = results["sst2"]["robust ticket"]["TextFooler Aua"]
    assert robust["paper"] == NUMBERS["sst2"]["robust ticket"]["TextFooler Aua"]
    assert "| fine-tune | 92.0 |" in report and "26.7" in report
    assert sorted(results["figure2"]) == ["IMP ticket@0.3", "IMP ticket@0.5", "robust ticket@0.3", "robust ticket@0.5"]
    # every Aua says how its attack's candidates differ from the published recipe (the toy data's shipped lists)
    lists = json.loads((tmp_path / "rt" / "smoke_data" / "attack" / "counterfitted_neighbors.json").read_text())
    longest = min(50, max(len(v) for v in lists.values()))
    assert robust["attack"] == f"shipped neighbour lists, at most {longest} per word (published: the 50 nearest " \
                               f"counter-fitted vectors)"
    assert results["sst2"]["fine-tune"]["TextBugger Aua"]["attack"].endswith("(published: the 5 nearest "
                                                                             "counter-fitted vectors)")
    assert results["sst2"]["fine-tune"]["Clean"]["attack"] is None
    assert report.count("| attack as run |") == 2  # the SST-2 table and Figure 2
    test = results["sst2"]["robust ticket"]["SST-2 test"]  # held-out confirmation on SST-2's labelled test set
    evaluate = recorded_argv(tmp_path / "rt" / test["runs"][0])
    assert evaluate[evaluate.index("--tasks") + 1] == "sst2-test" and "--attack" not in evaluate
    assert test["interval"]["examples"] == 32 and test["paired"]["examples"] == 32  # paired with fine-tune
    # the paper's claims beyond fine-tuning, paired on the same examples: the ablation and Figure 2 per sparsity
    assert set(results["sst2"]["robust ticket"]["TextFooler Aua"]["versus"]) == {
        "FreeLB", "IMP ticket", "robust ticket w/o adversary"}
    assert results["figure2"]["robust ticket@0.5"]["TextFooler Aua"]["versus"]["IMP ticket@0.5"]["examples"] > 0
    # each ticket against itself at the figure's lowest sparsity
    assert sorted(results["figure2"]["robust ticket@0.5"]["TextFooler Aua"]["versus"]) == \
        ["IMP ticket@0.5", "robust ticket@0.3"]
    assert list(results["figure2"]["IMP ticket@0.5"]["TextFooler Aua"]["versus"]) == ["IMP ticket@0.3"]


def test_reproduce_srnets_smoke_has_both_losses_methods_paradigms_and_the_hans_curve(tmp_path):
    results, report = smoke("srnets", tmp_path / "sr")
    mnli = results["mnli"]
    for loss in ("CE", "PoE"):
        own = {"fine-tuned in isolation": " [toolkit's own]" if loss == "CE" else ""}  # not in the paper
        assert f"{loss} full model" in mnli
        for paradigm in ("from fine-tuned", "fine-tuned in isolation", "without fine-tuning"):
            assert f"{loss} mask training ({paradigm}){own.get(paradigm, '')}" in mnli
        for paradigm in ("from fine-tuned", "fine-tuned in isolation"):
            assert f"{loss} IMP ({paradigm}){own.get(paradigm, '')}" in mnli
    assert "HANS lexical_overlap non-entailment" in mnli["CE full model"]
    assert mnli["PoE full model"]["HANS"]["paper"] == 76.15 and "| CE full model | 87.14 |" in report
    # the PoE rows fine-tune against the bias model's predictions; the CE rows do not
    for loss, debiased in (("CE", False), ("PoE", True)):
        evaluate = recorded_argv(tmp_path / "sr" / mnli[f"{loss} full model"]["MNLI"]["runs"][0])
        stage1 = recorded_argv(Path(evaluate[evaluate.index("--checkpoint") + 1]))
        assert ("--bias_predictions" in stage1) == debiased
    # "from fine-tuned": PoE mask training searches with PoE on the CE full model's own stage-1 run (Table 6)
    def option(argv, name):
        return argv[argv.index(name) + 1]

    ce_full = recorded_argv(tmp_path / "sr" / mnli["CE full model"]["MNLI"]["runs"][0])
    poe_eval = recorded_argv(tmp_path / "sr" / mnli["PoE mask training (from fine-tuned)"]["MNLI"]["runs"][0])
    search = recorded_argv(Path(option(poe_eval, "--checkpoint")))
    assert option(search, "--debias") == "poe" and "--bias_predictions" in search
    assert option(search, "--model_name_or_path") == option(ce_full, "--checkpoint")
    assert mnli["PoE mask training (from fine-tuned)"]["HANS"]["paper"] == 75.17
    assert sorted(results["hans_curve"]) == sorted(f"{s}@{x}" for s in ("CE mask training", "PoE mask training",
                                                                         "PoE IMP") for x in (0.3, 0.5))


def test_reproduce_rose_smoke_reports_dev_and_advglue_per_task(tmp_path):
    results, report = smoke("rose", tmp_path / "rose")
    assert sorted(results["advglue"]) == ["ROSE-Ensemble", "ROSE-First", "ROSE-Second", "vanilla"]
    assert sorted(results["advglue"]["vanilla"]) == ["RTE AdvGLUE", "RTE dev", "SST2 AdvGLUE", "SST2 dev", "SST2 test"]
    cells = results["advglue"]["ROSE-Second"]
    assert cells["SST2 dev"]["runs"] != cells["RTE dev"]["runs"]  # one chain per task
    # the held-out test set is read by evaluate runs of their own, of the same stage-1 model
    dev, test = (recorded_argv(tmp_path / "rose" / cells[c]["runs"][0]) for c in ("SST2 dev", "SST2 test"))
    assert dev[dev.index("--checkpoint") + 1] == test[test.index("--checkpoint") + 1]
    assert test[test.index("--tasks") + 1] == "sst2-test"
    assert set(results["advglue"]["ROSE-Ensemble"]["RTE AdvGLUE"]["versus"]) == {"ROSE-First", "ROSE-Second"}
    assert "| ROSE-Second - ROSE-First |" in report


def test_reproduce_roast_smoke_reports_every_perspective(tmp_path):
    results, report = smoke("roast", tmp_path / "roast")
    assert sorted(results["sst2"]) == ["Child-Tuning-D", "FreeLB", "RoAST", "vanilla"]
    assert results["sst2"]["RoAST"]["SST-2 test acc"]["n"] == 1 and "SST-2 test acc" not in results["qqp"]["RoAST"]
    assert sorted(results["qqp"]["RoAST"]) == ["AdvGLUE acc", "Anomaly AUROC", "ECE", "In-distribution acc",
                                               "Shift: PAWS-QQP acc"]
    child = json.loads((tmp_path / "roast" / results["sst2"]["Child-Tuning-D"]["ECE"]["runs"][0]
                        / "metrics.json").read_text())
    assert "ood_auroc" in next(iter(child.values()))["sst2"]
    assert "| RoAST - Child-Tuning-D |" in report and "| RoAST - FreeLB |" in report  # each part of RoAST alone


def test_reproduce_tasks_builds_only_the_chosen_tasks_and_refuses_a_task_the_paper_lacks(tmp_path, capsys):
    from subnets.pipelines.common import run_cli

    out = tmp_path / "rose"
    result = reproduce.main(["rose", "--budget", "smoke", "--seeds", "1", "--output_dir", str(out),
                             "--executor", "inline", "--tasks", "rte"])
    assert sorted(result["results"]["advglue"]["vanilla"]) == ["RTE AdvGLUE", "RTE dev"]
    assert not any("sst2" in name for name in result["outcomes"])
    assert "tasks rte" in (out / "report.md").read_text()

    refused = tmp_path / "refused"
    code = run_cli(lambda argv: reproduce.main(["rose", "--budget", "smoke", "--output_dir", str(refused),
                                                "--tasks", "mnli"]))
    assert code == 2 and not refused.exists()
    assert "--tasks mnli: not a task of rose" in capsys.readouterr().err


def test_report_only_runs_nothing_and_marks_unfinished_cells(tmp_path):
    """--report_only writes the report from what has finished: before any run every implemented cell reads -, and
    no stage directory is created; after the runs, the same command reads their values."""
    out = tmp_path / "rose"
    argv = ["rose", "--budget", "smoke", "--seeds", "1", "--output_dir", str(out), "--executor", "inline",
            "--tasks", "rte"]
    before = reproduce.main(argv + ["--report_only"])
    report = (out / "report.md").read_text()
    assert before["outcomes"] == {} and not (out / "stage1").exists()
    assert "0 of " in report and "| vanilla | n/a | - |" in report
    assert all(cell["n"] == 0 for cell in before["results"]["advglue"]["vanilla"].values())
    reproduce.main(argv)
    after = reproduce.main(argv + ["--report_only"])
    assert after["results"]["advglue"]["vanilla"]["RTE dev"]["n"] == 1
    report = (out / "report.md").read_text()
    assert "| - |" not in report
    assert f"command `python -m subnets.pipelines.reproduce {' '.join(argv)} --report_only`" in report
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["commit"] == reproduce.code_commit() and len(provenance["runs"]) == 8  # 4 rows x 2 stages
    assert all(r["seconds"] > 0 and r["device"] and r["argv"] for r in provenance["runs"].values())


def test_report_only_refuses_a_run_planned_with_other_settings(tmp_path, monkeypatch):
    """A finished run whose recorded arguments are not what the current code plans (here: vanilla's learning
    rate changed after it ran) is refused by --report_only, naming the run and the option; nothing is written."""
    from subnets.pipelines.papers import rose

    out = tmp_path / "rose"
    argv = ["rose", "--budget", "smoke", "--seeds", "1", "--output_dir", str(out), "--executor", "inline",
            "--tasks", "rte"]
    reproduce.main(argv)
    other_task = argv[:-1] + ["sst2", "--report_only"]  # the RTE runs are not SST-2's, but not refused either
    assert reproduce.main(other_task)["results"]["advglue"]["vanilla"]["SST2 dev"]["n"] == 0
    (out / "report.md").unlink()
    monkeypatch.setattr(rose, "VANILLA", {**rose.VANILLA, "learning_rate": 3e-5})
    with pytest.raises(reproduce.SubnetsError, match=r"stage1/task_name=rte,seed=1-\w+: --learning_rate 2e-05 "
                                                     r"\(planned: 3e-05\)"):
        reproduce.main(argv + ["--report_only"])
    assert not (out / "report.md").exists()


def test_smoke_inputs_killed_while_written_are_generated_again(tmp_path, monkeypatch):
    """Issue 28, defect 13: `reproduce --budget smoke` killed while it wrote its toy inputs never recovered."""
    from subnets import toydata

    paper, out = reproduce.load_paper("robust_tickets"), tmp_path / "rt"
    original = toydata.write_toy_task

    def killed_after_the_first_task(root, name, *args):
        original(root, name, *args)
        raise KeyboardInterrupt  # stands for the kill: the folder holds one task of several

    monkeypatch.setattr(toydata, "write_toy_task", killed_after_the_first_task)
    with pytest.raises(KeyboardInterrupt):
        reproduce.smoke_inputs(paper, out)
    monkeypatch.setattr(toydata, "write_toy_task", original)
    model_dir, data_dir = reproduce.smoke_inputs(paper, out)
    expected = toydata.write_toy_data(tmp_path / "expected", paper.tasks)
    listing = sorted(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file())
    assert listing and all((Path(data_dir) / name).is_file() for name in listing)
    assert (Path(model_dir) / "config.json").is_file() and (Path(model_dir) / "model.safetensors").is_file()


def test_reproduce_pruning_robustness_smoke_has_every_method_at_both_patterns(tmp_path):
    results, report = smoke("pruning_robustness", tmp_path / "pr")
    assert sorted(results) == ["2of4", "cost", "unstructured"]
    for table in ("unstructured", "2of4"):
        assert {"dense", "Wanda", "SparseGPT + retrain", "Wanda robust calib.", "robust ticket"} <= set(results[table])
    assert all(cell["Sparsity"]["mean"] == 50.0 for cell in results["cost"].values())
    evaluate = recorded_argv(tmp_path / "pr" / results["2of4"]["Wanda"]["SST-2 dev"]["runs"][0])
    stage2 = recorded_argv(Path(evaluate[evaluate.index("--checkpoint") + 1]))
    assert stage2[stage2.index("--method") + 1] == "wanda" and stage2[stage2.index("--pattern") + 1] == "2:4"
    paired = [line for line in report.splitlines() if line.endswith("pairs) |")]  # the paired tables' rows
    comparisons = pruning_robustness.COMPARISONS
    assert report.count("Paired differences from dense") == 2 and report.count("Paired differences between rows") == 2
    assert len(paired) == 2 * (len(results["2of4"]) - 1 + len(comparisons))
    assert sum(line.startswith("| robust ticket | ") for line in paired) == 2
    assert sum(line.startswith("| robust ticket - Wanda | ") for line in paired) == 2
    assert not [line for line in paired if line.startswith("| dense |")]
    assert all("(4 pairs)" in line for line in paired)  # 4 attacked sentences paired with the dense model's
    cell = results["unstructured"]["Wanda"]["TextFooler Aua"]
    assert cell["paired"]["verdict"] in ("shown", "a hint") and cell["interval"]["low"] <= cell["mean"]
    # "robust ticket - Wanda" is the bootstrap of the two rows' per-example differences, read from their runs' files
    out = tmp_path / "pr"
    for column, key in (("TextFooler Aua", "sst2/accuracy_under_attack"), ("SST-2 dev", "sst2/eval_accuracy")):
        rows = results["2of4"]
        own = {1: reproduce.example_outcomes(out / rows["robust ticket"][column]["runs"][0], key)}
        other = {1: reproduce.example_outcomes(out / rows["Wanda"][column]["runs"][0], key)}
        direct = paired_difference(own, other)
        stat = rows["robust ticket"][column]["versus"]["Wanda"]
        assert stat["examples"] == direct["examples"] > 0
        assert stat["mean"] == pytest.approx(100 * direct["mean"]) and stat["low"] == pytest.approx(100 * direct["low"])


def test_a_table_that_pairs_a_row_it_lacks_is_refused_when_built():
    with pytest.raises(ValueError, match="'nobody'"):
        Table("t", "t", [], [Row("a", None)], comparisons=(("a", "nobody"),))


def test_an_interval_bound_near_zero_keeps_its_sign_and_first_digit():
    assert [reproduce.bound(v) for v in (-2.44, 3.96, 0.0, -0.004, 0.03, -0.05)] == [
        "-2.4", "+4.0", "+0.0", "-0.004", "+0.03", "-0.1"]


def test_reproduce_can_select_every_training_stage_on_a_held_out_training_split(tmp_path):
    """--validation_split_percentage reaches every training stage (new runs), whose record names the split."""
    out = tmp_path / "rose"
    argv = ["rose", "--budget", "smoke", "--seeds", "1", "--output_dir", str(out), "--executor", "inline",
            "--tasks", "rte"]
    result = reproduce.main(argv + ["--validation_split_percentage", "20"])
    stage1 = [name for name in result["outcomes"] if name.startswith("stage1/")]
    assert len(stage1) == 4 and all(result["outcomes"][name]["status"] == "done" for name in stage1)
    for name in stage1:
        assert "--validation_split_percentage" in recorded_argv(out / name)
        config = json.loads((out / name / "run_config.json").read_text())
        assert config["selection_split"].startswith("validation_split(20%")
    with pytest.raises(reproduce.SubnetsError, match="--validation_split_percentage 100 is out of range"):
        reproduce.main(argv + ["--validation_split_percentage", "100"])



def test_the_attack_row_of_a_wordnet_attack_says_so(tmp_path):
    """PWWS records its WordNet source without a neighbour count; its Aua cell reads "as published"."""
    from subnets.pipelines.reproduce import attack_as_run

    config = {"recipe": "pwws", "source": "pwws_ren_2019.py", "candidates": {"source": "wordnet", "path": "wn"}}
    (tmp_path / "metrics.json").write_text(json.dumps({"ckpt": {"sst2": {"attack_config": config}}}))
    assert attack_as_run(tmp_path, "sst2/accuracy_under_attack") == "WordNet synonyms (as published)"
    assert attack_as_run(tmp_path, "sst2/clean_accuracy") is None
