import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from subnets.pipelines import evaluate, stage1_finetune
from subnets.pipelines.common import run_cli
from subnets.errors import SubnetsError

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def stage1_argv(model_dir, data_dir, out, *extra):
    return ["--model_name_or_path", str(model_dir), "--task_name", "sst2", "--data_dir", str(data_dir),
            "--output_dir", str(out), "--num_train_epochs", "2", "--learning_rate", "1e-2",
            "--per_device_train_batch_size", "16", "--disable_tqdm", "true", *extra]


def test_stage1_writes_config_metrics_and_resumes_or_refuses(tmp_path, tiny_model_dir, tiny_data_dir):
    model_dir, out = tiny_model_dir("bert"), tmp_path / "run"
    metrics = stage1_finetune.main(stage1_argv(model_dir, tiny_data_dir, out, "--max_train_samples", "64"))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert {"eval_accuracy", "eval_ece", "train_runtime", "train_samples", "best_step"} <= set(saved)
    config = json.loads((out / "run_config.json").read_text())
    assert config["TrainingArguments"]["learning_rate"] == 1e-2 and config["DataArguments"]["max_train_samples"] == 64
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(SubnetsError, match=r"already holds a different run \(TrainingArguments.learning_rate"):
        stage1_finetune.main(stage1_argv(model_dir, tiny_data_dir, out, "--max_train_samples", "64",
                                         "--learning_rate", "3e-3"))
    assert (out / "metrics.json").read_bytes() == before
    again = stage1_finetune.main(stage1_argv(model_dir, tiny_data_dir, out, "--max_train_samples", "64"))
    assert again["eval_accuracy"] == metrics["eval_accuracy"] and again["train_steps"] == metrics["train_steps"]


def test_recipe_supplies_defaults_and_the_command_line_overrides(tmp_path, tiny_model_dir, tiny_data_dir):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 0.005\nnum_train_epochs: 1\nmax_train_samples: 32\n")
    out = tmp_path / "run"
    stage1_finetune.main(stage1_argv(tiny_model_dir("roberta"), tiny_data_dir, out, "--recipe", str(recipe),
                                     "--max_train_samples", "48"))
    config = json.loads((out / "run_config.json").read_text())
    assert config["TrainingArguments"]["learning_rate"] == 1e-2  # command line wins
    assert config["DataArguments"]["max_train_samples"] == 48
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.1\n")
    with pytest.raises(SubnetsError, match="unknown option.*learning_rat"):
        stage1_finetune.main(stage1_argv(tiny_model_dir("roberta"), tiny_data_dir, tmp_path / "r2", "--recipe", str(bad)))


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, tiny_data_dir, capsys, monkeypatch):
    cases = [
        (["--task_name", "nope"], "Unknown task 'nope'"),
        (["--model_name_or_path", str(tmp_path / "missing-model")], "Could not load model"),
        (["--data_dir", str(tmp_path / "nodata")], "does not exist"),
    ]
    for extra, message in cases:
        argv = ["--output_dir", str(tmp_path / "o"), "--data_dir", str(tiny_data_dir), *extra]
        monkeypatch.setattr(sys, "argv", ["stage1", *argv])
        assert run_cli(stage1_finetune.main) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err


def test_evaluate_checkpoints_side_by_side(tmp_path, tiny_model_dir, tiny_data_dir):
    out = tmp_path / "run"
    stage1_finetune.main(stage1_argv(tiny_model_dir("bert"), tiny_data_dir, out, "--num_train_epochs", "6"))
    results = evaluate.main(["--checkpoint", str(out), "--checkpoint", str(tiny_model_dir("roberta")),
                             "--tasks", "sst2", "--data_dir", str(tiny_data_dir), "--output_dir", str(tmp_path / "ev")])
    assert set(results) == {"run", "tiny-roberta"}
    trained = json.loads((out / "metrics.json").read_text())
    assert results["run"]["sst2"]["eval_accuracy"] == pytest.approx(trained["eval_accuracy"])
    table = (tmp_path / "ev" / "results.md").read_text()
    assert "| run |" in table and "sst2 accuracy" in table
    with pytest.raises(SubnetsError, match="expects a 'mnli' model"):
        evaluate.main(["--checkpoint", str(out), "--tasks", "hans", "--data_dir", str(tiny_data_dir),
                       "--output_dir", str(tmp_path / "ev2")])


DDP_SCRIPT = """
import sys, torch
from subnets.config import TrainingArguments
from subnets.data import load_split, tokenize
from subnets.distributed import init_distributed
from subnets.models import tiny_model
from subnets.tasks import get_task
from subnets.training import Trainer
from safetensors.torch import save_file
data_dir, out, batch, world = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
task = get_task("sst2")
model, tok = tiny_model("bert", label_names=task.label_names)
for m in model.modules():
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
train, dev = (tokenize(load_split(task, s, data_dir), tok, task, 32) for s in ("train", "validation"))
args = TrainingArguments(output_dir=f"{out}/run{world}", max_steps=4, learning_rate=1e-2, max_grad_norm=0.0,
                         per_device_train_batch_size=batch, eval_strategy="steps", eval_steps=2, disable_tqdm=True)
trainer = Trainer(model, args, task, train, dev, tok, distributed=init_distributed())
trainer.train()
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}_of{world}.safetensors")
"""


def test_ddp_two_cpu_processes_end_identical_and_match_one_process(tmp_path, tiny_data_dir):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                    str(script), str(tiny_data_dir), str(out), "8", "2"], check=True, env=env, cwd=REPO)
    subprocess.run([sys.executable, str(script), str(tiny_data_dir), str(out), "16", "1"], check=True, env=env,
                   cwd=REPO)
    r0, r1 = (load_file(out / f"rank{r}_of2.safetensors") for r in (0, 1))
    single = load_file(out / "rank0_of1.safetensors")
    start = __import__("subnets.models", fromlist=["tiny_model"]).tiny_model("bert")[0].state_dict()
    assert any(not torch.equal(r0[k], start[k]) for k in r0)  # training moved the weights
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], single[k], atol=3e-5, rtol=1e-4)


def test_a_run_with_tuple_options_resumes_in_its_own_directory(tmp_path):
    from dataclasses import dataclass, field

    from subnets.config import StageArgs, TrainingArguments
    from subnets.runs import prepare_run_dir

    @dataclass
    class WithTuple:
        window: tuple[float, float] = field(default=(0.1, 0.4))

    args = StageArgs([TrainingArguments(output_dir=str(tmp_path / "run")), WithTuple()])
    prepare_run_dir(args, "stage_x")
    prepare_run_dir(args, "stage_x")  # the same options: accepted (resume)
    args[WithTuple].window = (0.2, 0.4)
    with pytest.raises(SubnetsError, match=r"WithTuple.window = \[0.1, 0.4\] there, \[0.2, 0.4\] here"):
        prepare_run_dir(args, "stage_x")


def test_overwrite_output_dir_starts_from_an_empty_folder_and_never_empties_a_foreign_one(tmp_path, tiny_model_dir,
                                                                                         tiny_data_dir):
    """Issue 28, defect 3: --overwrite_output_dir kept round-*/, checkpoint-step-* and other leftovers."""
    model_dir, out = tiny_model_dir("bert"), tmp_path / "run"
    stage1_finetune.main(stage1_argv(model_dir, tiny_data_dir, out, "--max_steps", "2", "--save_model_at_steps", "1"))
    (out / "round-1").mkdir()
    (out / "round-1" / "metrics.json").write_text("{}")
    assert (out / "checkpoint-step-1").is_dir()
    stage1_finetune.main(stage1_argv(model_dir, tiny_data_dir, out, "--max_steps", "2", "--learning_rate", "3e-3",
                                     "--overwrite_output_dir", "true"))
    assert not (out / "round-1").exists() and not (out / "checkpoint-step-1").exists()
    assert json.loads((out / "run_config.json").read_text())["TrainingArguments"]["learning_rate"] == 3e-3
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("words")
    with pytest.raises(SubnetsError, match="holds no run"):
        stage1_finetune.main(stage1_argv(model_dir, tiny_data_dir, foreign, "--overwrite_output_dir", "true"))
    assert (foreign / "chapter1.tex").read_text() == "words" and len(list(foreign.iterdir())) == 1
    with pytest.raises(SubnetsError, match="would delete --model_name_or_path"):  # a run folder as its own model
        stage1_finetune.main(stage1_argv(out, tiny_data_dir, out, "--max_steps", "2", "--overwrite_output_dir", "true"))
    assert (out / "checkpoint-best").is_dir()
