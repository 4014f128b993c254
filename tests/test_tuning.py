"""reproduce.py --tuning: every cpu setting chosen by hand is tried on a declared grid, each trial trained with a
held-out split of the training data and scored there only; the choice is the best held-out mean."""

import hashlib
import json
from pathlib import Path

import pytest

from subnets.pipelines import reproduce
from subnets.pipelines.papers import Setting
from subnets.pipelines.sweeping.plan import Plan, grid_points
from subnets.pipelines.tuning import choose, tuning_plan
from subnets.errors import SubnetsError


def cpu_setting(paper, percentage=0, seeds=(1, 2, 3)):
    return Setting("cpu", paper.models["cpu"], "DATA", seeds,
                   {**reproduce.TRAIN["cpu"], **({"validation_split_percentage": percentage} if percentage else {})},
                   reproduce.EVALUATE["cpu"], tuple(paper.budget_tasks["cpu"]))


def upstream(run_dir: Path) -> list[Path]:
    """The run folder and every run folder it was fed from (stage 3 -> stage 2 -> stage 1)."""
    argv = json.loads((run_dir / "sweep_run.json").read_text())["argv"]
    for option in ("--mask", "--model_name_or_path"):
        if option in argv and (Path(argv[argv.index(option) + 1]) / "sweep_run.json").is_file():
            return [run_dir, *upstream(Path(argv[argv.index(option) + 1]))]
    return [run_dir]


def test_smoke_tuning_writes_every_trial_scored_on_held_out_rows_and_the_argmax(tmp_path):
    out = tmp_path / "rt"
    argv = ["robust_tickets", "--budget", "smoke", "--tuning", "--seeds", "1", "--output_dir", str(out),
            "--executor", "inline"]
    outcomes = reproduce.main(argv)["outcomes"]
    assert outcomes and all(o["status"] == "done" for o in outcomes.values())
    record = json.loads((out / "tuning.json").read_text())
    assert record["validation_split_percentage"] == reproduce.TUNING_SPLIT and record["seeds"] == [1]
    paper = reproduce.load_paper("robust_tickets")
    tunings = paper.tuning(Setting("smoke", "tiny", "data", (1,), reproduce.TRAIN["smoke"],
                                   reproduce.EVALUATE["smoke"], ("sst2",)))
    assert sorted(record["tunings"]) == sorted(t.name for t in tunings)
    report = (out / "tuning.md").read_text()
    assert not (out / "evaluate").exists()  # no trial evaluates a reported set
    for tuning in tunings:
        found = record["tunings"][tuning.name]
        assert found["current"] == dict(tuning.current) and f"## {tuning.name}" in report
        assert [t["setting"] for t in found["trials"]] == grid_points(tuning.grid)  # every candidate, in order
        for t in found["trials"]:
            assert [r["seed"] for r in t["runs"]] == [1] and t["mean"] == t["runs"][0]["value"]
            for run_dir in upstream(out / t["runs"][0]["run"]):  # every stage of the trial selected on held-out rows
                config = json.loads((run_dir / "run_config.json").read_text())
                assert config["DataArguments"]["validation_split_percentage"] == reproduce.TUNING_SPLIT
                assert config["selection_split"].startswith("validation_split(10%")
            metrics = json.loads((out / t["runs"][0]["run"] / "metrics.json").read_text())
            assert t["runs"][0]["value"] == metrics["eval_accuracy"]
            assert t["runs"][0]["rows"] == metrics["eval_samples"] > 0
        best = max(t["mean"] for t in found["trials"])
        chosen = next(t for t in found["trials"] if t["setting"] == found["chosen"])
        today = next(t for t in found["trials"] if t["setting"] == found["current"])
        p, rows = today["mean"], today["runs"][0]["rows"]
        assert found["margin"] == pytest.approx((p * (1 - p) / rows) ** 0.5)
        assert found["differs"] == (found["chosen"] != found["current"])
        if found["differs"]:
            assert chosen["mean"] == best and best - today["mean"] > found["margin"]
        else:
            assert best - today["mean"] <= found["margin"]
    assert report.count("Chosen: ") == len(tunings)
    again = reproduce.main(argv)["outcomes"]  # a rerun trains nothing: every trial finished
    assert set(again) == set(outcomes) and all(o["status"] == "skipped" for o in again.values())
    assert json.loads((out / "tuning.json").read_text())["tunings"] == record["tunings"]


def trial(lr: int, *values: float, rows: int = 100) -> dict:
    runs = [{"seed": seed, "value": value, "rows": rows} for seed, value in enumerate(values, 1)]
    return {"setting": {"lr": lr}, "runs": runs, "mean": sum(values) / len(values)}


def test_choose_replaces_todays_value_only_by_a_mean_more_than_one_standard_error_above_it():
    # today's mean 0.7 on 100 held-out rows: one standard error is sqrt(0.7 * 0.3 / 100) = 0.0458
    trials = [trial(1, 0.6), trial(2, 0.8), trial(3, 0.8), trial(4, 0.7)]
    assert choose(trials, {"lr": 4}) == {"lr": 2}  # 0.1 above: the first of the best
    assert choose(trials, {"lr": 3}) == {"lr": 3}  # a tie keeps today's value
    close = [trial(1, 0.74), trial(2, 0.7)]
    assert choose(close, {"lr": 2}) == {"lr": 2}  # 0.04 above, within 0.0458: kept
    # two seeds pool 200 rows: one standard error is 0.0324, and the same 0.04 gap now replaces it
    assert choose([trial(1, 0.74, 0.74), trial(2, 0.7, 0.7)], {"lr": 2}) == {"lr": 1}
    assert choose([*trials, {"setting": {"lr": 5}, "runs": [], "mean": None}], {"lr": 2}) is None  # not finished


@pytest.mark.parametrize("paper_name", reproduce.PAPERS)
def test_every_cpu_tuning_trains_only_on_held_out_selection_and_tries_todays_value(paper_name):
    paper = reproduce.load_paper(paper_name)
    tunings = paper.tuning(cpu_setting(paper, 10, (1,)))
    plan, leaves = tuning_plan(tunings, Path("OUT"))
    assert all(run.stage in ("stage1", "stage2", "stage3") for run in plan.runs.values())
    for run in plan.runs.values():  # every trial run selects on the held-out 10%
        assert run.argv[run.argv.index("--validation_split_percentage") + 1] == "10"
    for tuning in tunings:
        assert dict(tuning.current) in grid_points(tuning.grid)
        assert len(leaves[tuning.name]) == len(grid_points(tuning.grid)) * len(paper.budget_tasks["cpu"])


# sha256 of the sorted run names that main's code (before --tuning existed) plans for every paper's cpu and paper
# budgets (seeds 1 2 3, data folder "DATA"): --tuning must not rename a run of the normal plans. Robust Tickets' cpu
# names changed once on purpose, with the learning rate --tuning chose (CPU_TRAINING 5e-5 -> 1e-4), and so did
# pruning and robustness' cpu names, with the schedule it chose (SCHEDULE['cpu'] 1 epoch at 5e-5 -> 2 at 1e-4)
NAMES = {("robust_tickets", "cpu"): (126, "b41286a11df98559"), ("robust_tickets", "paper"): (318, "d29d450a0782e15a"),
         ("srnets", "cpu"): (126, "8f6c1cdb3e060b32"), ("srnets", "paper"): (399, "7384847afe824b9b"),
         ("rose", "cpu"): (60, "d7b33914fbf37c8c"), ("rose", "paper"): (108, "8f295469d0d6d2b9"),
         ("roast", "cpu"): (60, "a6e5d252ab2753da"), ("roast", "paper"): (108, "9ad772aca5507446"),
         ("pruning_robustness", "cpu"): (132, "c05a13202379a511"),
         ("pruning_robustness", "paper"): (132, "81e881fc96e8eee0")}


@pytest.mark.parametrize("paper_name,budget", sorted(NAMES))
def test_the_normal_plans_keep_their_run_names(paper_name, budget):
    paper = reproduce.load_paper(paper_name)
    setting = Setting(budget, paper.models[budget], "DATA", (1, 2, 3), reproduce.TRAIN[budget],
                      reproduce.EVALUATE[budget], tuple(paper.budget_tasks[budget]))
    plan = Plan("OUT")
    for table in paper.tables(setting):
        for row in table.rows:
            for c in row.chains():
                plan.add(c)
    names = sorted(plan.runs)
    assert (len(names), hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]) == NAMES[paper_name, budget]


@pytest.mark.parametrize("options", [["--budget", "paper"],
                                     ["--budget", "smoke", "--validation_split_percentage", "0"]])
def test_tuning_refuses_the_paper_budget_and_no_held_out_rows_before_writing(tmp_path, options):
    out = tmp_path / "never"
    with pytest.raises(SubnetsError, match="--tuning chooses the cpu budget's settings on held-out training rows"):
        reproduce.main(["rose", "--tuning", "--output_dir", str(out), "--data_dir", str(tmp_path), *options])
    assert not out.exists()
