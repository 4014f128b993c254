import copy

import pytest
import torch
from torch.nn.utils import parametrize
from transformers import AutoModelForSequenceClassification

from subnets.errors import SubnetsError
from subnets.export import (
    COMPACT_CONFIG_KEY,
    apply_structured_masks,
    compact_export,
    load_compact,
    save_compact,
    structured_masks_from_weight_masks,
)
from subnets.masking import magnitude_structured_masks
from subnets.models import tiny_model
from subnets.targets import find_targets

HIDDEN, HEADS, HEAD_SIZE, INTERMEDIATE = 32, 4, 8, 64  # tiny_model sizes


def batch(tokenizer, kind="bert"):
    texts = ["a tiny test sentence that is longer than the others", "short one", "the third example , with a comma"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    if kind == "distilbert":
        encoded.pop("token_type_ids")
    return dict(encoded)


def sharpened(model):
    """Scale Q and K up so attention is far from uniform: with the tiny models' 0.02-scale random weights every
    head attends almost uniformly, which would hide a wrong head split."""
    with torch.no_grad():
        for target in find_targets(model):
            if target.kind in ("query", "key"):
                model.get_parameter(target.name).mul_(30)
    return model


def uneven_masks(seed=0):
    """Layer 0 keeps 1 head, layer 1 keeps 3; random neurons at different rates per layer."""
    g = torch.Generator().manual_seed(seed)
    heads = {0: torch.tensor([False, False, True, False]), 1: torch.tensor([True, True, False, True])}
    neurons = {0: torch.rand(INTERMEDIATE, generator=g) < 0.3, 1: torch.rand(INTERMEDIATE, generator=g) < 0.8}
    return heads, neurons


def logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def masked_copy(model, heads, neurons):
    masked = copy.deepcopy(model)
    apply_structured_masks(masked, heads, neurons)
    return masked


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_compact_export_matches_masked_model(tiny):
    model, tokenizer = tiny
    sharpened(model)
    heads, neurons = uneven_masks()
    inputs = batch(tokenizer)
    compact = compact_export(model, heads, neurons)
    expected = logits(masked_copy(model, heads, neurons), inputs)
    torch.testing.assert_close(logits(compact, inputs), expected, atol=1e-5, rtol=0)
    # the masks matter: the unmasked model gives different outputs
    assert not torch.allclose(logits(model, inputs), expected, atol=1e-4)


def test_compact_export_shrinks_parameters_by_removed_units(tiny):
    model, _ = tiny
    heads, neurons = uneven_masks()
    compact = compact_export(model, heads, neurons)
    removed_heads = sum(int((~m).sum()) for m in heads.values())
    removed_neurons = sum(int((~m).sum()) for m in neurons.values())
    per_head = 3 * (HEAD_SIZE * HIDDEN + HEAD_SIZE) + HIDDEN * HEAD_SIZE  # Q/K/V rows + biases, output columns
    per_neuron = (HIDDEN + 1) + HIDDEN  # FFN-in row + bias, FFN-out column
    assert count(model) - count(compact) == removed_heads * per_head + removed_neurons * per_neuron
    shapes = {(t.layer, t.kind): t.shape for t in find_targets(compact)}
    assert shapes[(0, "query")] == (HEAD_SIZE, HIDDEN) and shapes[(1, "value")] == (3 * HEAD_SIZE, HIDDEN)
    assert shapes[(0, "ffn_out")] == (HIDDEN, int(neurons[0].sum()))
    structure = getattr(compact.config, COMPACT_CONFIG_KEY)
    assert structure["kept_heads"] == [[2], [0, 1, 3]]
    assert structure["kept_neurons"] == [int(neurons[0].sum()), int(neurons[1].sum())]


def test_compact_export_leaves_the_original_and_its_frozen_flags_alone(tiny_bert):
    model, _ = tiny_bert
    for p in model.base_model.parameters():
        p.requires_grad_(False)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    compact = compact_export(model, *uneven_masks())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert not any(p.requires_grad for p in compact.base_model.parameters())
    assert all(p.requires_grad for p in compact.classifier.parameters())


def test_layer_losing_every_head_and_neuron_keeps_a_zeroed_stand_in(tiny):
    model, tokenizer = tiny
    sharpened(model)
    heads = {0: torch.zeros(HEADS, dtype=torch.bool)}
    neurons = {1: torch.zeros(INTERMEDIATE, dtype=torch.bool)}
    inputs = batch(tokenizer)
    compact = compact_export(model, heads, neurons)
    torch.testing.assert_close(logits(compact, inputs), logits(masked_copy(model, heads, neurons), inputs), atol=1e-5, rtol=0)
    structure = getattr(compact.config, COMPACT_CONFIG_KEY)
    assert structure["kept_heads"][0] == [] and structure["num_heads"] == [1, HEADS]
    assert structure["kept_neurons"][1] == 0 and structure["intermediate_sizes"] == [INTERMEDIATE, 1]


@pytest.mark.parametrize("kind", ["distilbert", "electra", "deberta-v2"])
def test_compact_export_other_families(kind):
    model, tokenizer = tiny_model(kind)
    sharpened(model)
    heads, neurons = uneven_masks(seed=1)
    inputs = batch(tokenizer, kind)
    compact = compact_export(model, heads, neurons)
    torch.testing.assert_close(logits(compact, inputs), logits(masked_copy(model, heads, neurons), inputs), atol=1e-5, rtol=0)
    assert count(compact) < count(model)


def test_save_and_load_round_trip(tiny, tmp_path):
    model, tokenizer = tiny
    compact = compact_export(model, *uneven_masks())
    inputs = batch(tokenizer)
    save_compact(compact, tokenizer, tmp_path / "compact")
    loaded = load_compact(tmp_path / "compact")
    assert type(loaded) is type(compact)
    reference = compact.state_dict()
    assert reference.keys() == loaded.state_dict().keys()
    assert all(torch.equal(reference[n], p) for n, p in loaded.state_dict().items())
    assert torch.equal(logits(loaded, inputs), logits(compact, inputs))
    # a plain save_pretrained directory (the structure lives in config.json) loads the same way
    compact.save_pretrained(tmp_path / "plain")
    assert torch.equal(logits(load_compact(tmp_path / "plain"), inputs), logits(compact, inputs))


def test_from_pretrained_refuses_the_uneven_architecture(tiny_bert, tmp_path):
    model, tokenizer = tiny_bert
    save_compact(compact_export(model, *uneven_masks()), tokenizer, tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_weight_masks_round_trip_to_unit_masks(tiny):
    model, _ = tiny
    heads, neurons = uneven_masks()
    masked = masked_copy(model, heads, neurons)
    weight_masks = {t.name: masked.get_parameter(t.name) != 0 for t in find_targets(masked, pooler=True, classifier=True)}
    got_heads, got_neurons = structured_masks_from_weight_masks(model, weight_masks)
    assert all(torch.equal(got_heads[i], heads[i]) for i in heads)
    assert all(torch.equal(got_neurons[i], neurons[i]) for i in neurons)
    # masks as 0/1 floats over a subset of the matrices give the same answer
    subset = {n: m.float() for n, m in weight_masks.items() if "value" in n or "intermediate" in n}
    got_heads, got_neurons = structured_masks_from_weight_masks(model, subset)
    assert all(torch.equal(got_heads[i], heads[i]) and torch.equal(got_neurons[i], neurons[i]) for i in heads)


def _query_name(model, layer=0, kind="query"):
    return next(t.name for t in find_targets(model) if t.layer == layer and t.kind == kind)


@pytest.mark.parametrize("case, message", [
    ("partial_head", "only part of head 0"),
    ("disagree", "disagree on head 1 of layer 0"),
    ("classifier", "outside the encoder"),
    ("gates", "values other than 0 and 1"),
    ("unknown", "names no parameter"),
])
def test_unstructured_weight_masks_are_rejected(tiny_bert, case, message):
    model, _ = tiny_bert
    query = _query_name(model)
    ones = torch.ones(HIDDEN, HIDDEN, dtype=torch.bool)
    if case == "partial_head":
        masks = {query: ones.clone().index_fill_(1, torch.tensor([0]), False)}
    elif case == "disagree":
        q = ones.clone()
        q[HEAD_SIZE:2 * HEAD_SIZE] = False
        masks = {query: q, _query_name(model, kind="key"): ones}
    elif case == "classifier":
        masks = {"classifier.weight": torch.zeros_like(model.classifier.weight, dtype=torch.bool)}
    elif case == "gates":
        masks = {query: torch.full((HIDDEN, HIDDEN), 0.9)}
    else:
        masks = {"bert.no_such.weight": ones}
    with pytest.raises(SubnetsError, match=message):
        structured_masks_from_weight_masks(model, masks)


def test_apply_structured_masks_zeroes_exactly_the_removed_units(tiny_bert):
    model, _ = tiny_bert
    heads, neurons = uneven_masks()
    masked = masked_copy(model, heads, neurons)
    query = masked.get_parameter(_query_name(masked))
    attn_out = masked.get_parameter(_query_name(masked, kind="attn_out"))
    ffn_out = masked.get_parameter(_query_name(masked, layer=1, kind="ffn_out"))
    kept_rows = heads[0].repeat_interleave(HEAD_SIZE)
    assert (query[~kept_rows] == 0).all() and (query[kept_rows] != 0).all()
    assert (attn_out[:, ~kept_rows] == 0).all() and (attn_out[:, kept_rows] != 0).all()
    assert (ffn_out[:, ~neurons[1]] == 0).all() and (ffn_out[:, neurons[1]] != 0).all()


def test_bad_unit_masks_and_inputs_are_rejected(tiny_bert, tmp_path):
    model, tokenizer = tiny_bert
    with pytest.raises(SubnetsError, match=r"expected \(4,\)"):
        compact_export(model, {0: torch.ones(3, dtype=torch.bool)}, {})
    with pytest.raises(SubnetsError, match="layer 5"):
        apply_structured_masks(model, {}, {5: torch.ones(INTERMEDIATE, dtype=torch.bool)})
    with pytest.raises(SubnetsError, match="compact_export"):
        save_compact(model, tokenizer, tmp_path / "x")
    model.save_pretrained(tmp_path / "regular")
    with pytest.raises(SubnetsError, match="regular model"):
        load_compact(tmp_path / "regular")
    parametrize.register_parametrization(model.classifier, "weight", torch.nn.Identity())
    with pytest.raises(SubnetsError, match="parametrizations"):
        compact_export(model, {}, {})


def test_magnitude_structured_masks_keep_the_largest_units(tiny_bert):
    model, _ = tiny_bert
    value = model.get_parameter(_query_name(model, layer=1, kind="value"))
    with torch.no_grad():
        value[3 * HEAD_SIZE:] *= 100  # head 3 of layer 1 dominates
    heads, neurons = magnitude_structured_masks(model, keep_heads=0.25, keep_neurons=0.5)
    assert heads[1].tolist() == [False, False, False, True]
    assert all(int(m.sum()) == 1 for m in heads.values())
    assert all(int(m.sum()) == INTERMEDIATE // 2 for m in neurons.values())
    with pytest.raises(SubnetsError, match="keep_heads"):
        magnitude_structured_masks(model, keep_heads=1.5, keep_neurons=0.5)


@pytest.mark.slow
def test_minilm_half_heads_half_neurons_matches_masked_model():
    from subnets.models import load_classifier

    model, tokenizer = load_classifier("minilm", ["neg", "pos"])
    heads, neurons = magnitude_structured_masks(model, keep_heads=0.5, keep_neurons=0.5)
    inputs = batch(tokenizer)
    compact = compact_export(model, heads, neurons)
    torch.testing.assert_close(logits(compact, inputs), logits(masked_copy(model, heads, neurons), inputs), atol=1e-5, rtol=0)
    assert count(compact) < 0.8 * count(model)
