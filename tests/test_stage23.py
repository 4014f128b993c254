"""Stage 1 -> stage 2 -> stage 3 on a tiny model saved to a temporary directory, with a tiny local SST-2.

Kept small for 2 CPU cores: 16 training examples at batch 8 (2 steps per epoch, 4 per run), one intra-op thread,
and stage 1 once per family (module-scoped fixture); the full chain runs for tiny BERT and tiny RoBERTa.
"""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from subnets.masks import MaskStore
from subnets.masks.checkpoint import load_sparse_state_dict

from subnets.models import tiny_model
from subnets.weights import save_plain_model

WORDS = "good great fine bad awful poor movie plot actor scene".split()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage23")
    rng = random.Random(0)
    data = root / "data" / "glue" / "SST-2"
    data.mkdir(parents=True)
    for split, n in (("train", 16), ("dev", 8)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            words = rng.choices(WORDS, k=5)
            rows.append(f"{' '.join(words)}\t{int(sum(w in WORDS[:3] for w in words) >= 2)}")
        (data / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _common(workspace, out, model):
    return ["--model_name_or_path", str(model), "--task_name", "sst2", "--data_dir", str(workspace / "data"),
            "--output_dir", str(out), "--per_device_train_batch_size", "8", "--num_train_epochs", "2",
            "--disable_tqdm", "true", "--logging_steps", "2", "--max_seq_length", "16"]


def _without_model(argv):
    """Leave --model_name_or_path out (stage 3 then takes the model the mask's run started from)."""
    i = argv.index("--model_name_or_path")
    return argv[:i] + argv[i + 2:]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def finetuned(workspace, request):
    from subnets.pipelines import stage1_finetune

    pretrained = workspace / f"pretrained-{request.param}"
    save_plain_model(*tiny_model(request.param), pretrained)
    run = workspace / f"ft-{request.param}"
    stage1_finetune.main(_common(workspace, run, pretrained) + ["--save_model_at_steps", "2", "--learning_rate", "1e-3"])
    return run


@pytest.fixture(autouse=True)
def mask_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    return tmp_path / "store"


def test_hard_concrete_search_then_ticket_retraining(workspace, finetuned, tmp_path, mask_store):
    from subnets.pipelines import stage2_search, stage3_retrain

    search = tmp_path / "hc"
    metrics = stage2_search.main(_common(workspace, search, finetuned) + [
        "--method", "hard_concrete", "--controller", "lagrangian", "--target_sparsity", "0.5",
        "--mask_lr", "0.5", "--lagrangian_lr", "0.5", "--best_after_fraction", "0.5"])
    assert "eval_accuracy" in metrics and metrics["sparsity_denominator"].endswith("encoder matrices")  # no pooler
    saved = json.loads((search / "metrics.json").read_text())
    assert saved["sparsity"] == metrics["sparsity"] and set(saved["mask_ids"]) == {"ticket", "state"}
    assert len(list((search / "mask-snapshots").iterdir())) == 2  # one per epoch
    best_mask = load_file(search / "checkpoint-best" / "mask.safetensors")
    assert all(m.dtype == torch.bool for m in best_mask.values())

    for init in ("pretrained", "finetuned", "2"):
        out = tmp_path / f"ticket-{init}"
        result = stage3_retrain.main(_without_model(_common(workspace, out, "unused")) + [
            "--mask", str(search), "--init", init, "--sparsity", "0.37", "--weight_decay", "0.1"])
        ticket_metrics = json.loads((out / "metrics.json").read_text())
        assert ticket_metrics["sparsity"] == result["sparsity"]
        pruned = round(0.37 * sum(m.numel() for m in best_mask.values()))
        assert abs(result["sparsity"] * sum(m.numel() for m in best_mask.values()) - pruned) < 1e-6
        weights = load_file(out / "checkpoint-best" / "model.safetensors")
        zeros = sum(int((weights[name] == 0).sum()) for name in best_mask)
        assert zeros >= pruned  # pruned weights are exact zeros in the plain checkpoint
        stored = MaskStore(mask_store).get(result["ticket_id"])
        assert stored.meta["parent"] == saved["mask_ids"]["state"] and stored.meta["seed"] == 42
        assert stored.meta["model"] == str(finetuned)
        assert abs(stored.global_sparsity - result["sparsity"]) < 1e-9
        sparse = load_sparse_state_dict(out / "checkpoint-best-sparse", store=MaskStore(mask_store))
        assert all(torch.equal(sparse[k], v) for k, v in weights.items())  # lossless round trip


@pytest.mark.parametrize("finetuned", ["bert"], indirect=True)
@pytest.mark.parametrize("method", ["scores", "imp", "magnitude"])
def test_other_methods_store_a_ticket(workspace, finetuned, tmp_path, method, mask_store):
    from subnets.pipelines import stage2_search

    out = tmp_path / method
    extra = {"scores": ["--sparsity_schedule", "cubic", "--threshold_interval", "2", "--mask_classifier", "true"],
             "imp": ["--imp_rewind", "pretrained", "--num_train_epochs", "1"],
             "magnitude": []}[method]
    metrics = stage2_search.main(_common(workspace, out, finetuned) + ["--method", method, "--target_sparsity", "0.19",
                                                                       "--scope", "global", *extra])
    ticket = MaskStore(mask_store).get(metrics["mask_ids"]["ticket"])
    assert ticket.meta["method"] == method
    assert metrics["sparsity"] == pytest.approx(0.19, abs=0.011)
    if method == "imp":
        assert metrics["imp_rounds"] == 2 and (out / "round-2" / "checkpoint-best").is_dir()
    if method == "scores":
        assert "classifier" in metrics["sparsity_denominator"]


@pytest.mark.parametrize("stage", ["stage2", "stage2_method", "stage3"])
def test_bad_input_leaves_no_run_directory(workspace, tmp_path, stage):
    from subnets.pipelines import stage2_search, stage3_retrain
    from subnets.errors import SubnetsError

    out = tmp_path / "run"
    if stage.startswith("stage2"):
        model, method = (tmp_path / "no-such-model", "hard_concrete") if stage == "stage2" else ("unused", "pruning")
        argv = _common(workspace, out, model) + ["--method", method]
        main = stage2_search.main
    else:
        argv = _common(workspace, out, "unused") + ["--mask", str(tmp_path / "no-such-mask"), "--sparsity", "0.3"]
        main = stage3_retrain.main
    with pytest.raises(SubnetsError):
        main(argv)
    assert not out.exists()


def test_a_run_that_names_itself_as_its_model_is_one_clear_error(tmp_path, monkeypatch):
    """Issue 28, defect 14: a run folder naming itself as its model made stage 3 `--init pretrained` loop forever."""
    from subnets import runs
    from subnets.errors import SubnetsError
    from subnets.masking import sources

    itself, first, second = tmp_path / "itself", tmp_path / "a", tmp_path / "b"
    for run, model in ((itself, itself), (first, second), (second, first)):
        run.mkdir()
        (run / "run_config.json").write_text(json.dumps({"stage": "stage1_finetune",
                                                         "ModelArguments": {"model_name_or_path": str(model)}}))
    reads = {"n": 0}
    original = runs.run_config

    def counted(path):  # fails the test (rather than hanging it) if the chain is followed round and round
        reads["n"] += 1
        if reads["n"] > 100:
            raise RuntimeError("the chain of run directories is followed endlessly")
        return original(path)

    monkeypatch.setattr(runs, "run_config", counted)
    for run in (itself, first):
        for init in ("pretrained", "2"):
            reads["n"] = 0
            with pytest.raises(SubnetsError, match="started from itself"):
                sources.init_path(str(run), init)
