"""CPU thread set-up of the stages: intra-op thread count and libgomp's wait policy (subnets/threads.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from subnets.errors import SubnetsError
from subnets.threads import configure_threads, prefer_passive_wait

REPO = Path(__file__).resolve().parent.parent
SCRIPT_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # this checkout's packages, not an installed copy


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_thread_count_follows_option_then_environment_then_usable_cores(monkeypatch, restore_threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert configure_threads() == 3 == torch.get_num_threads()
    assert configure_threads(1) == 1 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # torch already follows it: left as it is
    assert configure_threads() == 1
    with pytest.raises(SubnetsError, match="--num_threads must be a positive integer; got 0"):
        configure_threads(0)


def test_passive_wait_is_preferred_unless_the_environment_says_otherwise(monkeypatch):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    prefer_passive_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    prefer_passive_wait()
    assert "OMP_WAIT_POLICY" not in os.environ


def _spin_count(*command: str, **env: str) -> str:
    """libgomp's spin count as it starts in `python <command>` (OMP_DISPLAY_ENV prints its settings)."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=REPO, check=True,
                            env={**base, "OMP_DISPLAY_ENV": "verbose", **SCRIPT_ENV, **env})
    return next(line.split("=")[1].strip(" '") for line in result.stderr.splitlines() if "GOMP_SPINCOUNT" in line)


@pytest.mark.parametrize("script", ["pipelines/stage1_finetune.py", "pipelines/evaluate.py"])
def test_stage_scripts_start_openmp_with_the_passive_wait(script):
    assert _spin_count(script, "--help") == "0"  # libgomp's default is 300000 spins per barrier


def test_a_wait_policy_the_user_set_is_kept():
    assert _spin_count("-c", "import pipelines, torch", OMP_WAIT_POLICY="ACTIVE") != "0"


def test_bad_thread_count_is_one_error_line(tmp_path, monkeypatch, capsys, restore_threads):
    from subnets.pipelines import stage1_finetune
    from subnets.pipelines.common import run_cli

    monkeypatch.setattr(sys, "argv", ["stage1_finetune.py", "--task_name", "sst2", "--output_dir",
                                      str(tmp_path / "run"), "--num_threads", "0"])
    assert run_cli(stage1_finetune.main) == 2
    assert capsys.readouterr().err == "error: --num_threads must be a positive integer; got 0.\n"
    assert not (tmp_path / "run").exists()
