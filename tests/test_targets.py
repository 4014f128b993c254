import pytest
import torch

from subnets.errors import SubnetsError
from subnets.models import TINY_KINDS, tiny_model
from subnets.sparsity import flip_rate, gate_scalars, sparsity_report, sparsity_scalars, update_ratio_scalars
from subnets.targets import (
    ENCODER_KINDS,
    classify_parameter,
    describe_denominator,
    find_encoder_layers,
    find_targets,
    targets_from_names,
)


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("num_layers", [2, 3])
def test_targets_found_for_every_family(kind, num_layers):
    model, _ = tiny_model(kind, num_layers=num_layers)
    assert len(find_encoder_layers(model)) == num_layers
    targets = find_targets(model)
    assert len(targets) == 6 * num_layers
    for layer in range(num_layers):
        assert sorted(t.kind for t in targets if t.layer == layer) == sorted(ENCODER_KINDS)
    params = dict(model.named_parameters())
    for t in targets:
        assert params[t.name].shape == t.shape
        assert classify_parameter(model, t.name) == (t.layer, t.kind)
    ffn_in = [t for t in targets if t.kind == "ffn_in"][0]
    ffn_out = [t for t in targets if t.kind == "ffn_out"][0]
    assert ffn_in.shape == (64, 32) and ffn_out.shape == (32, 64)
    assert describe_denominator(targets) == f"{6 * num_layers} encoder matrices"


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_optional_targets(kind):
    model, _ = tiny_model(kind)
    everything = find_targets(model, pooler=True, classifier=True, word_embeddings=True)
    kinds = [t.kind for t in everything]
    assert kinds.count("word_embeddings") == 1 and "classifier" in kinds
    assert ("pooler" in kinds) == (kind in ("bert", "deberta-v2"))
    head = [t for t in everything if t.kind == "classifier"]
    assert any(t.shape[0] == 2 for t in head)
    assert all(t.layer is None for t in everything if t.kind not in ENCODER_KINDS)


def test_classify_parameter_for_non_targets(tiny_bert):
    model, _ = tiny_bert
    assert classify_parameter(model, "bert.encoder.layer.1.attention.output.LayerNorm.weight") == (1, None)
    assert classify_parameter(model, "bert.encoder.layer.0.attention.self.query.bias") == (0, "query")
    assert classify_parameter(model, "bert.embeddings.position_embeddings.weight") == (None, None)
    assert classify_parameter(
        model, "bert.encoder.layer.1.output.dense.parametrizations.weight.original"
    ) == (1, "ffn_out")


def test_names_alone_give_the_same_targets(tiny):
    model, _ = tiny
    targets = find_targets(model, pooler=True, classifier=True)
    recovered = targets_from_names({t.name: t.shape for t in targets})
    assert [(t.layer, t.kind) for t in recovered] == [(t.layer, t.kind) for t in targets]


def test_sparsity_report_counts_and_names_denominator(tiny_bert):
    model, _ = tiny_bert
    targets = find_targets(model, pooler=True)
    mask = {t.name: torch.ones(t.shape, dtype=torch.bool) for t in targets}
    query0 = targets[0].name
    mask[query0][:8] = False  # 8 of 32 rows
    report = sparsity_report(mask, targets)
    total = sum(t.numel for t in targets)
    assert report.total == total and report.pruned == 8 * 32
    assert report.global_sparsity == pytest.approx(256 / total)
    assert report.per_tensor[query0] == 0.25
    assert report.per_layer_kind[(0, "query")] == 0.25 and report.per_kind["query"] == 0.125
    assert report.per_layer[1] == 0.0
    assert report.denominator == "12 encoder matrices + pooler"
    assert report.as_dict()["sparsity_denominator"] == report.denominator
    with pytest.raises(SubnetsError, match="no entry"):
        sparsity_report({k: v for k, v in mask.items() if k != query0}, targets)
    with pytest.raises(SubnetsError, match="bool"):
        sparsity_report({k: v.float() for k, v in mask.items()}, targets)


def test_scalar_tags(tiny_bert):
    model, _ = tiny_bert
    targets = find_targets(model)
    mask = {t.name: torch.rand(t.shape) > 0.5 for t in targets}
    previous = {k: v.clone() for k, v in mask.items()}
    previous[targets[0].name][0, 0] ^= True
    report = sparsity_report(mask, targets)
    parts = [sparsity_scalars(report, flip=flip_rate(previous, mask)),
             gate_scalars({"g": torch.tensor([0.0, 0.5, 1.0, 1.0])}, expected_l0=0.4),
             update_ratio_scalars({0: 0.5, 1: 0.25})]
    s = {tag: value for part in parts for tag, value in part.items()}
    assert len(s) == sum(map(len, parts))  # no tag written twice
    assert s["sparsity/global"] == report.global_sparsity
    assert s["sparsity/layer_1/ffn_out"] == report.per_layer_kind[(1, "ffn_out")]
    assert s["sparsity/kind/value"] == report.per_kind["value"]
    assert s["mask/flip_rate"] == pytest.approx(1 / report.total)
    assert s["mask/gates_near_0"] == 0.25 and s["mask/gates_near_1"] == 0.5
    assert s["sparsity/expected_l0"] == 0.4
    assert s["update/ratio/layer_1"] == 0.25
