"""The three command-line routes to a compact model on a tiny BERT: a structured hard-concrete search drawn by
stage 3, a structured one-shot magnitude ticket, and a stage-3 ticket drawn from a structured state, each exported
with `subnets-masks export --format prune` (issue 26)."""

from __future__ import annotations

import pytest
import torch

from subnets.masks import MaskStore
from subnets.masks.cli import main as masks_main
from subnets.errors import SubnetsError
from subnets.export import load_compact
from subnets.masking.draw import draw_units
from subnets.masking.layout import encoder_layers
from subnets.models import load_classifier, tiny_model
from subnets.targets import find_targets
from subnets.toydata import write_toy_data
from subnets.weights import save_plain_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("routes")
    write_toy_data(root / "data", ["sst2"], train=16, evaluation=8)
    save_plain_model(*tiny_model("bert"), root / "base")
    return root


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    return tmp_path / "store"


def _common(workspace, out):
    return ["--task_name", "sst2", "--data_dir", str(workspace / "data"), "--output_dir", str(out),
            "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--disable_tqdm", "true",
            "--max_seq_length", "16", "--report_to", "none"]


def _export(workspace, store, record_id, out, capsys):
    code = masks_main(["--root", str(store), "export", record_id, "--format", "prune", "--model",
                       str(workspace / "base"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    compact = load_compact(out)
    card = (out / "README.md").read_text()
    assert "load_compact" in card and record_id[:12] in card
    base, _ = load_classifier(workspace / "base")
    return compact, base


def _stage3(workspace, search, out, sparsity):
    from subnets.pipelines import stage3_retrain

    return stage3_retrain.main(_common(workspace, out) + ["--mask", str(search), "--sparsity", str(sparsity)])


def test_hard_concrete_structured_search_then_stage3_then_export(workspace, tmp_path, store, capsys):
    from subnets.pipelines import stage2_search

    search = tmp_path / "hc"
    metrics = stage2_search.main(_common(workspace, search) + [
        "--model_name_or_path", str(workspace / "base"), "--method", "hard_concrete", "--granularity", "structured",
        "--target_sparsity", "0.5"])
    assert "pooler" not in metrics["sparsity_denominator"]  # the pooler is not masked unless asked
    result = _stage3(workspace, search, tmp_path / "ticket", 0.5)
    ticket = MaskStore(store).get(result["ticket_id"])
    assert ticket.meta["granularity"] == "structured"
    compact, base = _export(workspace, store, ticket.id, tmp_path / "compact", capsys)
    assert compact.num_parameters() < base.num_parameters()


def test_magnitude_structured_ticket_exports(workspace, tmp_path, store, capsys):
    from subnets.pipelines import stage2_search

    search = tmp_path / "magnitude"
    metrics = stage2_search.main(_common(workspace, search) + [
        "--model_name_or_path", str(workspace / "base"), "--method", "magnitude", "--granularity", "structured",
        "--target_sparsity", "0.5"])
    compact, base = _export(workspace, store, metrics["mask_ids"]["ticket"], tmp_path / "compact", capsys)
    structure = compact.config.compact_structure
    assert sum(map(len, structure["kept_heads"])) < base.config.num_attention_heads * base.config.num_hidden_layers


def test_stage3_draws_whole_units_from_a_structured_state(workspace, tmp_path, store, capsys):
    from subnets.pipelines import stage2_search

    search = tmp_path / "scores"
    stage2_search.main(_common(workspace, search) + [
        "--model_name_or_path", str(workspace / "base"), "--method", "scores", "--granularity", "structured",
        "--target_sparsity", "0.3"])
    result = _stage3(workspace, search, tmp_path / "ticket", 0.6)
    assert result["sparsity"] == pytest.approx(0.6, abs=0.1)  # whole units: exact up to one unit
    compact, base = _export(workspace, store, result["ticket_id"], tmp_path / "compact", capsys)
    assert compact.num_parameters() < base.num_parameters()


def test_draw_units_keeps_each_unit_whole_and_hits_the_count(tiny_bert):
    model, _ = tiny_bert
    layers = encoder_layers(model)
    targets = find_targets(model)
    g = torch.Generator().manual_seed(0)
    state = {t.name: torch.rand(t.shape, generator=g) for t in targets}  # per weight: units disagree inside
    total = sum(s.numel() for s in state.values())
    masks = draw_units(state, 0.5, layers, "structured")
    unit = max(s.blocks(state[s.target.name]).shape[1] for layer in layers for s in layer.neurons)
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert abs(pruned - 0.5 * total) <= unit * 4  # a unit spans up to four matrices
    for layer in layers:
        for slices in (layer.heads, layer.neurons):
            kept = [s.blocks(masks[s.target.name]) for s in slices]
            for block in kept:  # every unit all kept or all pruned, the same in each matrix
                assert torch.equal(block.all(dim=1), block.any(dim=1))
                assert torch.equal(block.all(dim=1), kept[0].all(dim=1))
    attention = {s.target.name for layer in layers for s in layer.heads}
    per_layer = draw_units({n: v for n, v in state.items() if n in attention}, 0.5, layers, "head",
                           scope="per_matrix")
    heads = layers[0].heads[0]
    assert int((~heads.blocks(per_layer[heads.target.name]).all(dim=1)).sum()) == round(0.5 * heads.units)


def test_structured_granularity_is_refused_by_weight_only_methods(workspace, tmp_path):
    from subnets.pipelines import stage2_search

    for method in ("imp", "random"):
        with pytest.raises(SubnetsError, match=f"--method {method} masks single weights only"):
            stage2_search.main(_common(workspace, tmp_path / method) + [
                "--model_name_or_path", str(workspace / "base"), "--method", method, "--granularity", "structured"])
        assert not (tmp_path / method).exists()


def test_draw_units_refuses_a_matrix_outside_heads_and_neurons(tiny_bert):
    model, _ = tiny_bert
    state = {t.name: torch.rand(t.shape) for t in find_targets(model, pooler=True)}
    with pytest.raises(SubnetsError, match="pooler"):
        draw_units(state, 0.5, encoder_layers(model), "structured")



def test_a_structured_ticket_whose_matrices_disagree_names_the_stage3_route(workspace, store, capsys):
    model, _ = load_classifier(workspace / "base")
    layer = encoder_layers(model)[0]
    ticket = {t.name: torch.ones(t.shape, dtype=torch.bool) for t in find_targets(model)}
    query = layer.heads[0]  # head 0 removed from Q only: K, V and the output keep it
    ticket[query.target.name].index_fill_(0, query.channels(torch.arange(query.units) == 0), False)
    record_id = MaskStore(store).put(ticket, meta={"task": "sst2", "method": "hard_concrete", "model": "tiny",
                                                   "seed": 0, "granularity": "structured"})
    code = masks_main(["--root", str(store), "export", record_id, "--format", "prune", "--model",
                       str(workspace / "base"), "--out", str(workspace / "split")])
    err = capsys.readouterr().err
    assert code == 2 and "disagree on head 0 of layer 0" in err and "subnets-retrain --mask <run> --sparsity" in err
