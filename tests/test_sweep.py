import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from subnets.pipelines import sweep
from subnets.pipelines.sweeping.aggregate import aggregate, flat_metrics, markdown
from subnets.pipelines.sweeping.plan import Chain, Plan
from subnets.errors import SubnetsError
from subnets.objectives.losses import LossObjective


def sweep_argv(model_dir, data_dir, out, *extra, stages="stage1,evaluate", grid=("seed=1,2",)):
    return ["--stages", stages, "--output_dir", str(out), "--grid", *grid,
            "--set", f"model_name_or_path={model_dir}", f"data_dir={data_dir}", "max_steps=6", "save_steps=2",
            "per_device_train_batch_size=16", *(["evaluate.tasks=sst2"] if "evaluate" in stages else []), *extra]


def test_plan_shares_upstream_runs_and_names_directories_safely(tmp_path):
    plan = Plan(tmp_path)
    chain = Chain(["stage1", "stage2", "stage3", "evaluate"],
                  {"*": {"task_name": "sst2", "model_name_or_path": "m"}, "stage2": {"method": "imp"}},
                  {"seed": [1, 2], "stage3.sparsity": [0.3, 0.5]})
    leaves = plan.add(chain)
    stages = [run.stage for run in plan.ordered()]
    assert len(leaves) == 4
    assert stages.count("stage1") == 2 and stages.count("stage2") == 2 and stages.count("stage3") == 4
    for run in plan.ordered():
        assert re.fullmatch(r"[a-z0-9]+/[A-Za-z0-9._=,+-]+-[0-9a-f]{10}", run.name)
    stage3 = [r for r in plan.ordered() if r.stage == "stage3"][0]
    stage2 = plan.runs[stage3.parent]
    assert stage3.argv[stage3.argv.index("--mask") + 1] == str(tmp_path / stage2.name)
    assert stage2.argv[stage2.argv.index("--model_name_or_path") + 1] == str(tmp_path / stage2.parent)
    evaluate = leaves[0].run
    assert "sparsity=0.3" in evaluate.name and "seed=1" in evaluate.name
    again = Plan(tmp_path)
    again.add(chain)
    assert [r.name for r in again.ordered()] == [r.name for r in plan.ordered()]
    with pytest.raises(SubnetsError, match="no option 'sparsity'"):
        Plan(tmp_path).add(Chain(["stage1"], grid={"stage1.sparsity": [0.1]}))


def test_aggregation_over_seeds_on_hand_made_metrics():
    records = [({"seed": s, "sparsity": 0.3}, f"evaluate/run{s}", {"sst2/eval_accuracy": a})
               for s, a in ((1, 0.7), (2, 0.8), (3, 0.9))]
    records.append(({"seed": 1, "sparsity": 0.5}, "evaluate/solo", {"sst2/eval_accuracy": 0.6}))
    cells = aggregate(records)
    cell = cells["sparsity=0.3"]
    assert cell["seeds"] == [1, 2, 3] and cell["runs"] == ["evaluate/run1", "evaluate/run2", "evaluate/run3"]
    stat = cell["metrics"]["sst2/eval_accuracy"]
    assert stat["n"] == 3 and stat["mean"] == pytest.approx(0.8) and stat["sd"] == pytest.approx(0.1)
    assert cells["sparsity=0.5"]["metrics"]["sst2/eval_accuracy"] == {"mean": 0.6, "sd": None, "n": 1}
    table = markdown(cells)
    assert "| sparsity=0.3 | 1 2 3 | 0.8000 ± 0.1000 |" in table and "| sparsity=0.5 | 1 | 0.6000 |" in table
    assert flat_metrics({"ckpt": {"sst2": {"eval_accuracy": 0.5, "note": "x"}}}) == {"sst2/eval_accuracy": 0.5}
    assert flat_metrics({"eval_accuracy": 0.5, "train_runtime": 2.0, "flag": True}) == \
        {"eval_accuracy": 0.5, "train_runtime": 2.0}


def test_sweep_skips_finished_runs_and_resumes_an_interrupted_one(tmp_path, tiny_model_dir, tiny_data_dir,
                                                                  monkeypatch, capsys):
    model_dir, out = tiny_model_dir("bert"), tmp_path / "sweep"
    calls = {"n": 0}
    original = LossObjective.__call__

    def crash_once(self, model, batch, loss_scale):
        calls["n"] += 1
        if calls["n"] == 5:  # seed 1 dies after its step-4 checkpoint
            raise RuntimeError("simulated crash")
        return original(self, model, batch, loss_scale)

    monkeypatch.setattr(LossObjective, "__call__", crash_once)
    first = sweep.main(sweep_argv(model_dir, tiny_data_dir, out, "--executor", "inline"))["outcomes"]
    status = {name: o["status"] for name, o in first.items()}
    assert sorted(status.values()) == ["blocked", "done", "done", "failed"]
    failed = next(n for n, s in status.items() if s == "failed")
    assert failed.startswith("stage1/seed=1") and "simulated crash" in first[failed]["error"]
    assert (out / failed / "checkpoint-last").is_dir() and not (out / failed / "metrics.json").exists()
    assert json.loads((out / "sweep_status.json").read_text())[failed]["status"] == "failed"

    calls["n"] = -10 ** 6  # no more crashes; count the steps the second sweep trains
    capsys.readouterr()
    second = sweep.main(sweep_argv(model_dir, tiny_data_dir, out, "--executor", "inline"))
    printed = capsys.readouterr().out
    assert "[sweep] 2 runs to run, 2 finished earlier (skipped)" in printed
    assert re.search(r"resuming from \S+checkpoint-last at step 4 of 6 \(epoch \d+\)", printed)
    assert re.search(r"\[sweep\] done stage1/seed=1\S* \(1 of 2 finished, elapsed 0:\d\d:\d\d, ETA 0:\d\d:\d\d\)",
                     printed)
    assert "***** train metrics *****" in printed and "(2 of 2 finished" in printed
    status = {name: o["status"] for name, o in second["outcomes"].items()}
    assert status[failed] == "done" and calls["n"] == -10 ** 6 + 2  # resumed at step 4 of 6
    assert sorted(status.values()) == ["done", "done", "skipped", "skipped"]
    cells = second["cells"]
    assert cells["all"]["seeds"] == ["1", "2"] and cells["all"]["metrics"]["sst2/eval_accuracy"]["n"] == 2
    assert "sst2/eval_accuracy" in (out / "results.md").read_text()

    third = sweep.main(sweep_argv(model_dir, tiny_data_dir, out, "--executor", "inline"))["outcomes"]
    assert {o["status"] for o in third.values()} == {"skipped"}


def test_submitit_local_executor_runs_a_two_run_grid(tmp_path, tiny_model_dir, tiny_data_dir, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sweep"
    result = sweep.main(sweep_argv(tiny_model_dir("bert"), tiny_data_dir, out, "--executor", "submitit",
                                   "--submitit_cluster", "local", "--workers", "2", "--threads_per_worker", "1",
                                   stages="stage1", grid=("seed=1,2",)))
    assert [o["status"] for o in result["outcomes"].values()] == ["done", "done"]
    for name in result["outcomes"]:
        assert json.loads((out / name / "metrics.json").read_text())["train_steps"] == 6
    assert result["cells"]["all"]["seeds"] == ["1", "2"]


def test_local_workers_get_gpus_round_robin():
    from subnets.pipelines.sweeping.execute import worker_gpus

    assert worker_gpus(3, 1, ["3", "5"]) == ["3", "5", "3"]
    assert worker_gpus(2, 2, ["0", "1", "2", "3"]) == ["0,1", "2,3"]
    assert worker_gpus(2, 2, ["0", "1", "2"]) == ["0,1", "2,0"]
    assert worker_gpus(4, 1, []) is None


def _report_gpus(sync_dir: str, workers: int) -> str:
    """In a worker: wait until every worker holds a task (so that each answers once), then report its GPUs."""
    import os
    import time
    from pathlib import Path

    Path(sync_dir, str(os.getpid())).touch()
    while len(list(Path(sync_dir).iterdir())) < workers:
        time.sleep(0.05)
    return os.environ["CUDA_VISIBLE_DEVICES"]


def test_each_local_worker_sees_its_own_gpus(tmp_path, monkeypatch):
    from subnets.pipelines.sweeping.execute import LocalExecutor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # two GPUs, as the sweep's parent sees them
    executor = LocalExecutor(2)
    try:
        handles = [executor.submit(_report_gpus, str(tmp_path), 2) for _ in range(2)]
        assert sorted(h.result() for h in handles) == ["3", "5"]
    finally:
        executor.close()


def test_torchrun_runs_get_a_rendezvous_of_their_own(monkeypatch):
    from subnets.pipelines.sweeping import execute

    commands = []

    class Done:
        returncode = 0

    monkeypatch.setattr(execute.subprocess, "run", lambda command, **kwargs: commands.append(command) or Done())
    monkeypatch.setattr(execute, "atomic_write_json", lambda *args: None)
    execute.execute_run("stage1", ["--output_dir", "x"], "x", {}, nproc_per_run=2)
    assert commands[0][1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def test_sweep_and_reproduce_exit_non_zero_listing_failed_and_blocked_runs(tmp_path, tiny_data_dir, monkeypatch,
                                                                         capsys):
    """Issue 28, defect 17: `sweep` and `reproduce` exited 0 when runs failed or were blocked."""
    from subnets.pipelines import reproduce

    missing = tmp_path / "no-such-model"
    argv = sweep_argv(missing, tiny_data_dir, tmp_path / "sweep", "--executor", "inline", grid=("seed=1",))
    monkeypatch.setattr(sys, "argv", ["sweep", *argv])
    assert sweep.cli() == 2
    err = capsys.readouterr().err
    assert "2 of 2 runs failed or were blocked" in err and "stage1/seed=1" in err and "(blocked)" in err
    monkeypatch.setattr(sys, "argv", ["reproduce", "robust_tickets", "--budget", "smoke", "--seeds", "1",
                                      "--tasks", "sst2", "--model_name_or_path", str(missing), "--executor", "inline",
                                      "--output_dir", str(tmp_path / "reproduce")])
    assert reproduce.cli() == 2
    assert "runs failed or were blocked" in capsys.readouterr().err
    assert (tmp_path / "reproduce" / "report.md").is_file()  # the report is still written


def _descendants(pid):
    """The processes `pid` started, and theirs (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or not hasattr(os, "pidfd_open"), reason="needs Linux")
def test_kill_9_of_a_sweep_takes_its_workers_with_it_and_the_rerun_completes(tmp_path, tiny_model_dir, tiny_data_dir):
    """Issue 28, defect 12: after kill -9 of a sweep with --workers N the workers lived on, holding their run locks."""
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "subnets.pipelines.sweep", "--stages", "stage1", "--output_dir", str(out),
            "--grid", "seed=1,2", "--executor", "local", "--workers", "2", "--threads_per_worker", "1",
            "--set", f"model_name_or_path={tiny_model_dir('bert')}", f"data_dir={tiny_data_dir}", "max_steps=100",
            "save_steps=10", "eval_strategy=no", "max_seq_length=16", "per_device_train_batch_size=16",
            "report_to=none"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sweep_process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    while len(list((out / "stage1").glob("*/run_config.json"))) < 2:  # both workers are training
        assert sweep_process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.1)
    workers = _descendants(sweep_process.pid)
    pidfds = [os.pidfd_open(pid) for pid in workers]
    sweep_process.send_signal(signal.SIGKILL)
    sweep_process.wait()
    running = set(pidfds)
    while running:  # a hang guard, not a timing check: the workers die at once, or, unfixed, never
        ready, _, _ = select.select(list(running), [], [], 120)
        if not ready:
            break
        running -= set(ready)
    left = [pid for pid, fd in zip(workers, pidfds) if fd in running]
    assert workers and not left, f"processes left after the sweep was killed: {left}"
    assert len(list((out / "stage1").glob("*/metrics.json"))) < 2  # the kill interrupted a run
    rerun = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    status = json.loads((out / "sweep_status.json").read_text())
    assert sorted(o["status"] for o in status.values()) == ["done", "done"]
    assert all(json.loads((out / n / "metrics.json").read_text())["train_steps"] == 100 for n in status)
