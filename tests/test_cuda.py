"""The CUDA path in one file (skipped without CUDA): every stage family under bf16 autocast with host syncs made
errors in its steady-state steps, and a 2-process NCCL run when two GPUs exist. `benchmarks/gpu_check.sh` runs
this file in its tests phase (docs/performance.md, "GPU check")."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from stage_families import (FAMILIES, MAX_STEPS, WARMUP_STEPS, SteadyStateGuard, cuda_sync_errors, make_workspace,
                            run_family)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def on_cuda(monkeypatch):
    """The suite runs on the CPU (tests/conftest.py); these tests ask for CUDA."""
    monkeypatch.setenv("SUBNETS_USE_CPU", "0")


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("cuda"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_in_bf16_without_host_syncs(family, places, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    guard = SteadyStateGuard(cuda_sync_errors)
    run_family(family, places, tmp_path / family, guard, monkeypatch)
    rounds = 2 if family.startswith("imp") else 1
    assert guard.guarded_steps == rounds * (MAX_STEPS - WARMUP_STEPS)
    assert torch.bfloat16 in guard.logit_dtypes  # the forward passes ran under bf16 autocast


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_nccl_ddp_two_processes_end_identical(tmp_path, tiny_data_dir):
    from test_stage1_cli import DDP_SCRIPT  # trains a tiny BERT 4 steps and saves each rank's weights

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
                    str(script), str(tiny_data_dir), str(out), "8", "2"], check=True, cwd=REPO,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    r0, r1 = (load_file(out / f"rank{r}_of2.safetensors") for r in (0, 1))
    start = __import__("subnets.models", fromlist=["tiny_model"]).tiny_model("bert")[0].state_dict()
    assert any(not torch.equal(r0[k].cpu(), start[k]) for k in r0)  # training moved the weights
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # NCCL all-reduce kept the replicas identical
