"""The paper budgets run as the papers ran them: each constant equals the value cited beside it (issue 27), read
from what the sweep would run (the planned stage arguments), without running anything."""

import pytest
import yaml

from subnets.pipelines import RECIPE_DIR, reproduce
from subnets.pipelines.papers import Setting
from subnets.pipelines.reproduce import argv_options
from subnets.pipelines.sweeping.plan import Plan


def planned(paper: str, tmp_path, tasks=None):
    """{table: {row: [options of each planned run of the row, by stage]}} at the paper budget."""
    module = reproduce.load_paper(paper)
    setting = Setting("paper", module.models["paper"], "data", (1,), reproduce.TRAIN["paper"],
                      reproduce.EVALUATE["paper"], tuple(tasks or module.budget_tasks["paper"]))
    plan = Plan(tmp_path)
    found = {}
    for table in module.tables(setting):
        for row in table.rows:
            runs = []
            for chain in row.chains():
                for leaf in plan.add(chain):
                    run = leaf.run
                    while run is not None:
                        runs.append((run.stage, argv_options(run.argv)))
                        run = plan.runs.get(run.parent) if run.parent else None
            found.setdefault(table.name, {})[row.name] = runs
    return found, module.tables(setting)


def stage(runs, name):
    return [options for stage_name, options in runs if stage_name == name]


def test_robust_tickets_qnli_mask_learning_rate_is_the_papers_table_6_value(tmp_path):
    recipe = yaml.safe_load((RECIPE_DIR / "robust_tickets_qnli.yaml").read_text())
    assert recipe["mask_lr"] == 0.05  # Zheng et al. 2022, Appendix B.3, Table 6: QNLI gamma = 0.05
    rows, _ = planned("robust_tickets", tmp_path, ["qnli"])
    assert stage(rows["qnli"]["robust ticket"], "stage2")[0]["--recipe"] == "robust_tickets_qnli"


def test_srnets_paper_budget_follows_the_authors_scripts(tmp_path):
    rows, _ = planned("srnets", tmp_path, ["mnli"])
    mnli = rows["mnli"]
    assert [o["--num_train_epochs"] for o in stage(mnli["PoE full model"], "stage1")] == ["5"]
    assert [o["--num_train_epochs"] for o in stage(mnli["CE full model"], "stage1")] == ["3"]
    imp = stage(mnli["PoE IMP (from fine-tuned)"], "stage2")[0]
    assert float(imp["--imp_rate"]) == pytest.approx(1 - 0.5 ** (1 / 7))  # the 7th round lands on 50%
    assert imp["--learning_rate"] == "5e-05" and imp["--imp_rewind"] == "none"
    assert 7 * float(imp["--num_train_epochs"]) == pytest.approx(5)
    mask = stage(mnli["PoE mask training (from fine-tuned)"], "stage2")[0]
    assert mask["--threshold_interval"] == "1000" and mask["--num_train_epochs"] == "5"
    own = [name for name in mnli if name.endswith("[toolkit's own]")]
    assert sorted(own) == ["CE IMP (fine-tuned in isolation) [toolkit's own]",
                           "CE mask training (fine-tuned in isolation) [toolkit's own]"]


def test_roast_paper_budget_is_the_authors_setting(tmp_path):
    rows, _ = planned("roast", tmp_path, ["sst2"])
    for name in ("vanilla", "FreeLB", "Child-Tuning-D", "RoAST"):
        options = stage(rows["sst2"][name], "stage1")[0]
        # bbuing9/RoAST common.py defaults and roast_optim.py set_optimizer
        assert (options["--learning_rate"], options["--per_device_train_batch_size"], options["--warmup_ratio"],
                options["--num_train_epochs"], options["--weight_decay"], options["--adam_epsilon"]) == \
            ("1e-05", "16", "0.06", "10", "0.01", "1e-06"), name


def test_rose_paper_budget_scores_rose_first_exactly_and_says_so(tmp_path):
    rows, tables = planned("rose", tmp_path, ["sst2"])
    assert "ROSE-First score: exact" in tables[0].title
    for name in ("ROSE-First", "ROSE-Ensemble"):
        assert stage(rows["advglue"][name], "stage1")[0]["--rose_score_examples"] == "0"
    assert "--rose_score_examples" not in stage(rows["advglue"]["ROSE-Second"], "stage1")[0]
