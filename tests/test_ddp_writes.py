"""Under torchrun only rank 0 writes: stages 1, 2 and 3 with two CPU processes (gloo) write metrics.json,
run_config.json and each mask-store record once, from rank 0.

Every file the project writes goes through an atomic rename (`subnets.io`, `subnets.masks.files`); the launched script
records each rename's target per rank, and the test reads the two lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stage_families import make_workspace

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, os, sys
rank = os.environ["RANK"]
log = open(os.path.join(sys.argv[1], f"writes-rank{rank}.jsonl"), "a")
real_replace, real_rename = os.replace, os.rename
def recorded(real):
    def move(src, dst, *args, **kwargs):
        log.write(json.dumps(str(dst)) + "\\n"); log.flush()
        return real(src, dst, *args, **kwargs)
    return move
os.replace, os.rename = recorded(real_replace), recorded(real_rename)
import importlib
stage = importlib.import_module("subnets.pipelines." + sys.argv[2])
stage.main(sys.argv[3:])
"""

COMMON = ["--task_name", "sst2", "--per_device_train_batch_size", "8", "--max_steps", "2", "--max_seq_length", "16",
          "--disable_tqdm", "true", "--report_to", "none", "--eval_strategy", "steps", "--eval_steps", "2"]


def torchrun(tmp_path: Path, logs: Path, stage: str, argv: list[str], port: int) -> None:
    script = tmp_path / "recording_stage.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUBNETS_MASK_STORE": str(tmp_path / "store")}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(port), str(script), str(logs), stage, *argv], check=True, cwd=REPO, env=env,
                   stdout=subprocess.DEVNULL)


def writes(logs: Path, rank: int) -> list[str]:
    path = logs / f"writes-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_only_rank_zero_writes_run_files_and_records_in_stages_1_2_3(tmp_path):
    places = make_workspace(tmp_path / "work")
    data = ["--data_dir", places["data"]]
    runs = {"stage1_finetune": (tmp_path / "ft", ["--model_name_or_path", places["pretrained"]]),
            "stage2_search": (tmp_path / "hc", ["--model_name_or_path", str(tmp_path / "ft" / "checkpoint-best"),
                                                "--method", "hard_concrete", "--target_sparsity", "0.3"]),
            "stage3_retrain": (tmp_path / "ticket", ["--mask", str(tmp_path / "hc"), "--sparsity", "0.3",
                                                     "--init", "pretrained",
                                                     "--model_name_or_path", places["pretrained"]])}
    for port, (stage, (out, argv)) in enumerate(runs.items(), start=29561):
        logs = tmp_path / f"logs-{stage}"
        logs.mkdir()
        torchrun(tmp_path, logs, stage, [*COMMON, *data, "--output_dir", str(out), *argv], port)
        assert writes(logs, 1) == [], stage  # rank 1 renamed nothing into place: it wrote no file
        names = [Path(p).name for p in writes(logs, 0)]
        for name in ("run_config.json", "metrics.json"):
            assert names.count(name) == 1, (stage, name, names)
        records = [p for p in writes(logs, 0) if Path(p).parent.name == "records"]
        expected = {"stage1_finetune": 0, "stage2_search": 2, "stage3_retrain": 1}[stage]  # ticket+state; ticket
        assert len(records) == expected, (stage, records)
        assert json.loads((out / "metrics.json").read_text()).get("eval_accuracy") is not None
