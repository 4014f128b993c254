"""One-shot pruning: Wanda's scores, SparseGPT's OBS solve, N:M patterns, OWL budgets, robust calibration, and the
stage-2 -> stage-3 -> evaluate chain of the one-shot methods on tiny models."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from safetensors.torch import load_file

import subnets

from subnets.masks import MaskStore
from subnets.pipelines import evaluate, stage2_search, stage3_retrain
from subnets.errors import SubnetsError
from subnets.export import compact_export, structured_masks_from_weight_masks
from subnets.masking import magnitude_mask
from subnets.masking.calibration import calibration_batches, freelb_perturb, input_statistics, read_calibration_file
from subnets.masking.methods import MASK_METHODS
from subnets.masking.methods.magnitude import MAGNITUDE
from subnets.masking.methods.sparsegpt import SPARSEGPT, sparsegpt_prune
from subnets.masking.methods.wanda import WANDA
from subnets.masking.oneshot import (MatrixPruner, OneShotArguments, OneShotSearch, PrunedMatrix, lowest_pruned,
                                     owl_sparsities, prune_one_shot, wanda_scores)
from subnets.models import load_classifier, tiny_model
from subnets.objectives import PerturbationConfig
from subnets.registry import Method
from subnets.sparsity import nm_mask, parse_pattern, pattern_violations
from subnets.targets import find_targets
from subnets.tasks import get_task


def _batches(tokenizer, texts=("a fine film", "a dull and boring plot", "great", "awful acting here"), labels=None):
    encoded = tokenizer(list(texts))
    rows = {**encoded, "labels": list(labels or [i % 2 for i in range(len(texts))])}
    return calibration_batches(datasets.Dataset.from_dict(rows), tokenizer, torch.device("cpu"))


# ---- the matrix-level math ----------------------------------------------------------------------------------------

def test_wanda_score_is_weight_times_input_norm_compared_per_row():
    torch.manual_seed(0)
    weight, x = torch.randn(3, 4), torch.randn(10, 4)  # 10 calibration tokens, 4 input features
    norms = torch.tensor([sum(float(x[t, j]) ** 2 for t in range(10)) ** 0.5 for j in range(4)])
    by_hand = torch.tensor([[abs(float(weight[i, j])) * float(norms[j]) for j in range(4)] for i in range(3)])
    linear = torch.nn.Linear(4, 3)
    stats = input_statistics(torch.nn.Sequential(linear), [{"input": x}], {"lin": linear})["lin"]
    torch.testing.assert_close(stats.norms.float(), norms)
    scores = wanda_scores(weight, stats.norms)
    torch.testing.assert_close(scores, by_hand)
    pruned = WANDA.prune(weight, stats, 0.5, None)
    for i in range(3):  # each row prunes its own two lowest scores, whatever the other rows hold
        assert pruned.kept[i].sum() == 2
        assert set(torch.nonzero(~pruned.kept[i]).flatten().tolist()) == set(by_hand[i].argsort()[:2].tolist())


def _problem(rows=32, cols=128, tokens=512, seed=0, dtype=torch.float64):
    """A layer and its inputs, whose features differ in scale (log-normal), as a transformer's activations do."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(cols, generator=generator, dtype=dtype))
    x = torch.randn(tokens, cols, generator=generator, dtype=dtype) * scale
    return torch.randn(rows, cols, generator=generator, dtype=dtype), x


def _error(weight, pruned, x):
    return float(((x @ weight.T - x @ pruned.T) ** 2).sum())


def test_sparsegpt_reconstructs_better_than_magnitude():
    weight, x = _problem()
    hessian = x.T @ x
    magnitude = lowest_pruned(weight.abs(), 0.5)
    same_mask, kept = sparsegpt_prune(weight, hessian, 0.5, mask=magnitude)
    assert torch.equal(kept, magnitude) and torch.equal(same_mask != 0, magnitude)
    assert _error(weight, same_mask, x) < _error(weight, weight * magnitude, x)
    own, own_kept = sparsegpt_prune(weight, hessian, 0.5)
    assert int((~own_kept).sum()) == weight.numel() // 2
    wanda = lowest_pruned(wanda_scores(weight, x.norm(dim=0)), 0.5, dim=1)
    assert _error(weight, own, x) < _error(weight, weight * wanda, x) < _error(weight, weight * magnitude, x)


def test_sparsegpt_equals_the_exact_obs_solve_of_one_row():
    """Pruning the first k inputs of a row: the column-by-column updates are the optimum of ||wX - w'X||^2 (with the
    dampened H) under w'_P = 0, d = -H^-1[:, P] (H^-1[P, P])^-1 w_P, from the exact inverse."""
    weight, x = _problem(rows=1, cols=6, tokens=20)
    hessian = x.T @ x
    mask = torch.tensor([[False, False, False, True, True, True]])
    updated, _ = sparsegpt_prune(weight, hessian, 0.5, mask=mask)
    dampened = hessian + 0.01 * torch.diag(hessian).mean() * torch.eye(6, dtype=hessian.dtype)
    inverse = torch.linalg.inv(dampened)
    pruned = [0, 1, 2]
    w = weight[0]
    exact = w - inverse[:, pruned] @ torch.linalg.solve(inverse[pruned][:, pruned], w[pruned])
    torch.testing.assert_close(updated[0], exact)
    # lazy batches of columns change the order of the updates, not the result
    blocked, _ = sparsegpt_prune(weight, hessian, 0.5, mask=mask, block=2)
    torch.testing.assert_close(blocked, updated)


def test_nm_masks_and_pattern_parsing():
    scores = torch.arange(24.0).flip(0).reshape(2, 12)
    kept = nm_mask(scores, 2, 4)
    assert torch.equal(kept.reshape(2, 3, 4).sum(-1), torch.full((2, 3), 2))
    assert kept[0, :2].all() and not kept[0, 2:4].any()  # the two highest of the first group
    assert parse_pattern("2:4") == (2, 4) and parse_pattern("unstructured") is None
    for bad in ("4:2", "2-4", "0:4"):
        with pytest.raises(SubnetsError, match="--pattern"):
            parse_pattern(bad)
    with pytest.raises(SubnetsError, match="multiple of 8"):
        nm_mask(torch.zeros(2, 12), 4, 8)
    assert pattern_violations({"a": kept}, (2, 4)) == [] and pattern_violations({"a": kept}, (1, 4)) == ["a"]
    assert pattern_violations({"a": kept}, (2, 8)) == ["a"]  # 12 inputs cannot hold groups of 8


def test_owl_budgets_average_to_the_target_and_follow_the_outliers():
    ratios = [0.01, 0.05, 0.02, 0.08]
    sparsities = owl_sparsities(ratios, 0.6, lam=0.08)
    assert sum(sparsities) / 4 == pytest.approx(0.6)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    assert sparsities.index(min(sparsities)) == 3  # the layer with most outliers keeps most weights
    assert owl_sparsities([0.1, 0.1], 0.5) == pytest.approx([0.5, 0.5])


# ---- whole models -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pruner", [MAGNITUDE, WANDA, SPARSEGPT], ids=["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", [(2, 4), (4, 8)], ids=["2:4", "4:8"])
def test_nm_pattern_holds_in_every_group_of_every_target(pruner, pattern):
    model, tokenizer = tiny_model("bert")
    targets = find_targets(model, pooler=True)
    ticket, _ = prune_one_shot(model, targets, pruner, {t.name: 0.5 for t in targets}, pattern, _batches(tokenizer))
    n, m = pattern
    modules = dict(model.named_modules())
    assert set(ticket) == {t.name for t in targets}
    for target in targets:
        kept = ticket[target.name]
        rows, cols = kept.shape
        assert torch.equal(kept.reshape(rows, cols // m, m).sum(-1), torch.full((rows, cols // m), n))
        assert torch.equal(modules[target.module_name].weight[~kept], torch.zeros(int((~kept).sum())))
    assert sum(int((~k).sum()) for k in ticket.values()) == sum(t.numel for t in targets) // 2


def test_owl_layer_sparsities_reach_the_global_target(tmp_path, tiny_model_dir, tiny_data_dir):
    metrics = stage2_search.main(_argv(tiny_model_dir("bert"), tiny_data_dir, tmp_path / "owl", "wanda",
                                       "--target_sparsity", "0.6", "--layer_budget", "owl", "--owl_lambda", "0.1"))
    layers = dict(metrics["layer_sparsities"])
    assert len(layers) == 2 and abs(layers[0] - layers[1]) == pytest.approx(0.2)
    # each row of 32 inputs prunes round(s * 32) weights: the global sparsity is within half a weight per row
    assert metrics["sparsity"] == pytest.approx(0.6, abs=0.5 / 32)


def test_freelb_calibration_changes_the_statistics_and_is_seeded():
    model, tokenizer = tiny_model("bert")
    batches = _batches(tokenizer)
    linear = {"q": dict(model.named_modules())[find_targets(model)[0].module_name]}
    clean = input_statistics(model, batches, linear)["q"].squares
    config = PerturbationConfig(steps=2, lr=0.5, init_mag=0.5)
    first = input_statistics(model, freelb_perturb(model, batches, config, seed=1), linear)["q"].squares
    again = input_statistics(model, freelb_perturb(model, batches, config, seed=1), linear)["q"].squares
    other = input_statistics(model, freelb_perturb(model, batches, config, seed=2), linear)["q"].squares
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, clean, rtol=1e-3) and not torch.allclose(first, other, rtol=1e-4)
    with pytest.raises(SubnetsError, match="labelled"):
        freelb_perturb(model, [{k: v for k, v in batches[0].items() if k != "labels"}], config, seed=1)


def test_calibration_file_reads_an_attack_jsonl_and_text_files(tmp_path, tiny_bert):
    _, tokenizer = tiny_bert
    attack = tmp_path / "attack.jsonl"
    attack.write_text("\n".join(json.dumps({"idx": i, "original": [f"fine film {i}"], "perturbed": [f"okay movie {i}"],
                                            "label": i % 2}) for i in range(3)) + "\n")
    data = read_calibration_file(attack, get_task("sst2"), tokenizer, 16)
    assert len(data) == 3 and data["labels"] == [0, 1, 0]
    assert tokenizer.decode(data[0]["input_ids"], skip_special_tokens=True) == "okay movie 0"
    table = tmp_path / "perturbed.csv"
    table.write_text("perturbed,label\nokay movie,positive\nbad film,negative\n")
    data = read_calibration_file(table, get_task("sst2"), tokenizer, 16)
    assert data["labels"] == [1, 0] and tokenizer.decode(data[1]["input_ids"], skip_special_tokens=True) == "bad film"
    text = tmp_path / "texts.txt"
    text.write_text("one text\n\nanother text\n")
    assert len(read_calibration_file(text, get_task("sst2"), tokenizer, 16)) == 2
    with pytest.raises(SubnetsError, match="lacks column"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"x": "y"}) + "\n")
        read_calibration_file(bad, get_task("sst2"), tokenizer, 16)


@pytest.mark.parametrize("pruner", [MAGNITUDE, WANDA], ids=["magnitude", "wanda"])
@pytest.mark.parametrize("granularity", ["head", "neuron", "structured"])
def test_structured_one_shot_exports_compactly(pruner, granularity):
    model, tokenizer = tiny_model("bert")  # 2 layers of 4 heads and 64 FFN neurons
    targets = find_targets(model, pooler=True)
    batches = _batches(tokenizer)
    ticket, state = prune_one_shot(model, targets, pruner, {t.name: 0.5 for t in targets}, None, batches,
                                   granularity=granularity)
    heads, neurons = structured_masks_from_weight_masks(model, ticket)
    assert [int(h.sum()) for h in heads.values()] == [2 if granularity != "neuron" else 4] * 2
    assert [int(n.sum()) for n in neurons.values()] == [32 if granularity != "head" else 64] * 2
    assert ticket["bert.pooler.dense.weight"].all() and set(state) == {t.name for t in targets if t.layer is not None}
    compact = compact_export(model, heads, neurons)
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in model.parameters())
    model.eval()
    compact.eval()
    inputs = {k: v for k, v in batches[0].items() if k != "labels"}
    torch.testing.assert_close(compact(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)


# ---- the stages ---------------------------------------------------------------------------------------------------

def _argv(model_dir, data_dir, out, method, *extra):
    return [str(a) for a in ["--model_name_or_path", model_dir, "--task_name", "sst2", "--data_dir", data_dir,
                             "--output_dir", out, "--method", method, "--max_eval_samples", "16",
                             "--max_seq_length", "16", "--disable_tqdm", "true", "--report_to", "none",
                             "--calibration_samples", "32", "--mask_store", out.parent / "store", *extra]]


def test_stage2_calibrates_on_an_attack_file_under_freelb(tmp_path, tiny_model_dir, tiny_data_dir):
    model = tiny_model_dir("bert")
    attack = tmp_path / "attack.jsonl"
    attack.write_text("\n".join(json.dumps({"perturbed": [f"a dull movie number {i}"], "label": i % 2})
                                for i in range(8)) + "\n")
    plain = stage2_search.main(_argv(model, tiny_data_dir, tmp_path / "plain", "wanda"))
    robust = stage2_search.main(_argv(model, tiny_data_dir, tmp_path / "robust", "wanda", "--calibration_file", attack,
                                      "--calibration_perturb", "freelb", "--adv_steps", "1"))
    store = MaskStore(tmp_path / "store")
    config = store.get(robust["mask_ids"]["state"]).meta["config"]
    assert config["calibration_perturb"] == "freelb" and config["calibration_file"] == str(attack)
    scores, plain_scores = store.get(robust["mask_ids"]["state"]).masks, store.get(plain["mask_ids"]["state"]).masks
    assert all(not torch.allclose(scores[n], plain_scores[n]) for n in scores)


def test_a_one_shot_run_re_run_is_skipped_and_other_options_refused(monkeypatch, tmp_path, tiny_model_dir,
                                                                     tiny_data_dir):
    argv = _argv(tiny_model_dir("bert"), tiny_data_dir, tmp_path / "run", "wanda")
    first = stage2_search.main(argv)

    def no_pruning(*args, **kwargs):
        raise AssertionError("a finished one-shot run pruned again")

    monkeypatch.setattr("subnets.masking.oneshot.prune_one_shot", no_pruning)
    again = stage2_search.main(argv)
    assert again["mask_ids"] == first["mask_ids"] and again["eval_accuracy"] == first["eval_accuracy"]
    with pytest.raises(SubnetsError, match="already holds a different run"):
        stage2_search.main(argv + ["--calibration_samples", "16"])


@pytest.mark.parametrize("scope", ["per_matrix", "global"])
def test_one_shot_magnitude_is_the_magnitude_baseline(tmp_path, tiny_model_dir, tiny_data_dir, scope):
    task = subnets.load_task("sst2")
    model, tokenizer = subnets.load_model(tiny_model_dir("bert"), task)
    expected = magnitude_mask(model, find_targets(model), 0.5, scope=scope)  # the pooler is masked only if asked
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir, max_seq_length=16, max_eval_samples=16)
    metrics = subnets.search_mask(model, tokenizer, task, data, tmp_path / "run", method="magnitude", scope=scope,
                                  mask_store=tmp_path / "store", report_to="none", disable_tqdm=True)
    ticket = MaskStore(tmp_path / "store").get(metrics["mask_ids"]["ticket"]).masks
    assert set(ticket) == set(expected) and all(torch.equal(ticket[n], expected[n]) for n in expected)


def test_a_new_one_shot_method_is_one_registry_line(monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir):
    def largest_first_inputs(weight, stats, sparsity, pattern):
        scores = stats.squares.to(weight.dtype).expand_as(weight)  # prune the quietest inputs, same for every row
        return PrunedMatrix(lowest_pruned(scores, sparsity, dim=1))

    quiet = MatrixPruner("norms", largest_first_inputs)
    monkeypatch.setitem(MASK_METHODS, "quiet", Method(OneShotSearch(quiet), (OneShotArguments,)))
    task = subnets.load_task("sst2")
    model, tokenizer = subnets.load_model(tiny_model_dir("bert"), task)
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir, max_seq_length=16, max_eval_samples=16)
    metrics = subnets.search_mask(model, tokenizer, task, data, tmp_path / "run", method="quiet",
                                  calibration_samples=32, mask_store=tmp_path / "store", report_to="none",
                                  disable_tqdm=True)
    ticket = MaskStore(tmp_path / "store").get(metrics["mask_ids"]["ticket"]).masks
    assert metrics["method"] == "quiet" and metrics["sparsity"] == pytest.approx(0.5)
    assert all(torch.equal(m, m[:1].expand_as(m)) for m in ticket.values())  # whole input columns


def test_one_shot_options_that_do_nothing_or_contradict_are_refused(tmp_path, tiny_model_dir, tiny_data_dir):
    model = tiny_model_dir("bert")
    cases = [("magnitude", ["--calibration_perturb", "freelb"], "reads no calibration data"),
             ("wanda", ["--pattern", "2:4", "--target_sparsity", "0.3"], "prunes exactly 0.5"),
             ("wanda", ["--scope", "global"], "--scope global"),
             ("sparsegpt", ["--layer_budget", "owl", "--pattern", "2:4"], "unstructured"),
             ("hard_concrete", ["--pattern", "2:4"], "apply to the one-shot methods"),
             ("sparsegpt", ["--granularity", "head"], "prunes whole heads and neurons"),
             ("wanda", ["--adversary", "freelb"], "trains nothing"),
             ("sparsegpt", ["--selective", "rose_first"], "--selective rose_first would have no effect")]
    for i, (method, extra, message) in enumerate(cases):
        with pytest.raises(SubnetsError, match=message):
            stage2_search.main(_argv(model, tiny_data_dir, tmp_path / f"run{i}", method, *extra))
        assert not (tmp_path / f"run{i}").exists()


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_stage2_stage3_evaluate_on_a_one_shot_ticket(tmp_path, tiny_model_dir, tiny_data_dir, method):
    source = tiny_model_dir("bert")
    search = tmp_path / "search"
    metrics = stage2_search.main(_argv(source, tiny_data_dir, search, method, "--pattern", "2:4"))
    assert metrics["pattern"] == "2:4" and metrics["prune_seconds"] > 0
    record = MaskStore(tmp_path / "store").get(metrics["mask_ids"]["ticket"])
    assert record.meta["weights"] == str((search / "checkpoint-best").resolve())
    pruned, _ = load_classifier(str(search / "checkpoint-best"))
    dense, _ = load_classifier(str(source))
    name = find_targets(dense)[0].name
    kept = record.masks[name]
    changed = not torch.equal(pruned.state_dict()[name][kept], dense.state_dict()[name][kept])
    assert changed == (method == "sparsegpt")  # SparseGPT updates the weights it keeps, Wanda does not
    ticket = tmp_path / "ticket"
    # learning rate 0: the retrained model is its initialisation, which must be the one-shot run's weights; the
    # 2:4 ticket is drawn from Wanda's scores (the same per-row groups: the same ticket) or is SparseGPT's own
    retrained_metrics = stage3_retrain.main([str(a) for a in [
        "--mask", search, "--init", "finetuned", "--pattern", "2:4", "--task_name", "sst2", "--data_dir",
        tiny_data_dir, "--output_dir", ticket, "--max_steps", "1", "--learning_rate", "0", "--max_seq_length", "16",
        "--disable_tqdm", "true", "--report_to", "none", "--mask_store", tmp_path / "store"]])
    drawn = MaskStore(tmp_path / "store").get(retrained_metrics["ticket_id"])
    assert drawn.meta["pattern"] == "2:4" and all(torch.equal(drawn.masks[n], m) for n, m in record.masks.items())
    retrained = load_file(ticket / "checkpoint-best" / "model.safetensors")
    torch.testing.assert_close(retrained[name], pruned.state_dict()[name])
    results = evaluate.main([str(a) for a in ["--checkpoint", search, "--checkpoint", ticket, "--tasks", "sst2",
                                              "--data_dir", tiny_data_dir, "--output_dir", tmp_path / "eval",
                                              "--max_seq_length", "16", "--max_eval_samples", "16"]])
    accuracies = [sets["sst2"]["eval_accuracy"] for sets in results.values()]
    assert accuracies == [pytest.approx(metrics["eval_accuracy"])] * 2


def test_stage3_draws_an_nm_ticket_from_a_state_and_the_store_checks_the_pattern(capsys, tmp_path):
    from subnets.masks.cli import main as masks_cli
    from subnets.masking.retrain import RetrainArguments, draw_ticket
    from subnets.store_options import MaskStoreArguments

    store = MaskStore(tmp_path / "store")
    state = {"enc.layer.0.attention.self.query.weight": torch.randn(4, 16),
             "enc.layer.0.output.dense.weight": torch.randn(8, 8)}  # e.g. hard-concrete log_alpha
    state_id = store.put(state, {"kind": "state", "method": "hard_concrete"})
    where = MaskStoreArguments(str(tmp_path / "store"))
    ticket, _ = draw_ticket(RetrainArguments(mask=state_id, pattern="4:8"), where)
    assert pattern_violations(ticket, (4, 8)) == []
    for name, kept in ticket.items():  # the four highest values of every group of eight
        groups = state[name].reshape(kept.shape[0], -1, 8)
        assert torch.equal(kept.reshape(groups.shape), groups >= groups.topk(4, dim=-1).values[..., -1:])
    with pytest.raises(SubnetsError, match="prunes exactly 0.5"):
        RetrainArguments(mask=state_id, pattern="2:4", sparsity=0.3)
    unstructured = store.put({n: torch.rand(m.shape) > 0.5 for n, m in state.items()}, {"kind": "ticket"})
    with pytest.raises(SubnetsError, match="without the 2:4 pattern"):
        draw_ticket(RetrainArguments(mask=unstructured, pattern="2:4"), where)
    with pytest.raises(SubnetsError, match="declares pattern 2:4"):
        store.put({n: torch.rand(m.shape) > 0.5 for n, m in state.items()}, {"kind": "ticket", "pattern": "2:4"})
    ticket_id = store.put(ticket, {"kind": "ticket", "pattern": "4:8"})
    assert masks_cli(["--root", str(tmp_path / "store"), "show", ticket_id]) == 0
    assert "pattern:   4:8 (checked: every group of 8 consecutive input weights keeps 4, in all 2 tensors)" in \
        capsys.readouterr().out
