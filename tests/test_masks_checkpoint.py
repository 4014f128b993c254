"""Sparse-aware checkpoints: lossless round trip, the size bound, store references, dense export."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize
from transformers import AutoModelForSequenceClassification, BertConfig

from subnets.masks import MaskStore, apply_masks
from subnets.masks.checkpoint import (
    checkpoint_bytes,
    export_dense,
    load_sparse_model,
    load_sparse_state_dict,
    save_sparse_checkpoint,
    size_bound,
)
from subnets.errors import SubnetsError
from subnets.targets import find_targets
from subnets.weights import plain_state_dict


def masked(model: torch.nn.Module, keep: float, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {t.name: torch.rand(t.shape, generator=g) < keep for t in find_targets(model, pooler=True)}
    apply_masks(model, masks)
    first = next(iter(masks))
    masks[first][0, 0] = True  # a kept weight that is exactly zero must stay kept
    with torch.no_grad():
        model.get_parameter(first)[0, 0] = 0.0
    return masks


def test_lossless_round_trip_and_zero_valued_kept_weights(tmp_path, tiny):
    model, tokenizer = tiny
    masks = masked(model, keep=0.3)
    save_sparse_checkpoint(model, masks, tmp_path / "ck", tokenizer=tokenizer)
    state = load_sparse_state_dict(tmp_path / "ck")
    reference = model.state_dict()
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    from subnets.masks.checkpoint import checkpoint_mask

    stored = checkpoint_mask(tmp_path / "ck")
    first = next(iter(masks))
    assert stored[first][0, 0] and all(torch.equal(stored[n], masks[n]) for n in masks)
    reloaded = load_sparse_model(tmp_path / "ck")
    assert torch.equal(reloaded.get_parameter(first), model.get_parameter(first))


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
def test_size_is_within_the_bound(tmp_path, sparsity):
    config = BertConfig(vocab_size=500, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    masks = masked(model, keep=1 - sparsity)
    save_sparse_checkpoint(model, masks, tmp_path / "ck")
    size, bound = checkpoint_bytes(tmp_path / "ck"), size_bound(plain_state_dict(model), masks)
    dense = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert size <= bound < dense


def test_mask_reference_to_the_store(tmp_path, tiny_bert):
    model, _ = tiny_bert
    masks = masked(model, keep=0.5)
    store = MaskStore(tmp_path / "store")
    record_id = store.put(masks, meta={"method": "imp"})
    save_sparse_checkpoint(model, masks, tmp_path / "ck", mask_id=record_id)
    assert not (tmp_path / "ck" / "mask.safetensors").exists()
    with pytest.raises(SubnetsError, match="pass the mask store"):
        load_sparse_state_dict(tmp_path / "ck")
    state = load_sparse_state_dict(tmp_path / "ck", store=store)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_export_dense_is_an_ordinary_from_pretrained_directory(tmp_path, tiny_bert):
    model, tokenizer = tiny_bert
    masks = masked(model, keep=0.4)
    save_sparse_checkpoint(model, masks, tmp_path / "ck", tokenizer=tokenizer)
    out = export_dense(tmp_path / "ck", tmp_path / "dense")
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    for name, mask in masks.items():
        weight = loaded.get_parameter(name)
        assert not weight[~mask].any()
        assert torch.equal(weight, model.get_parameter(name))
    assert (out / "tokenizer_config.json").exists()


def test_unmasked_model_and_wrong_masks_are_rejected(tmp_path, tiny_bert):
    model, _ = tiny_bert
    g = torch.Generator().manual_seed(1)
    masks = {t.name: torch.rand(t.shape, generator=g) < 0.5 for t in find_targets(model)}
    with pytest.raises(SubnetsError, match="apply the mask first"):
        save_sparse_checkpoint(model, masks, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    with pytest.raises(SubnetsError, match="has shape \\(3, 3\\)"):
        save_sparse_checkpoint(model, {next(iter(masks)): torch.ones(3, 3, dtype=torch.bool)}, tmp_path / "ck")
    with pytest.raises(SubnetsError, match="not a sparse checkpoint"):
        load_sparse_state_dict(tmp_path)


def test_a_parametrized_model_is_saved_with_its_masked_values_and_left_working(tmp_path, tiny_bert):
    """The checkpoint holds the parametrized (masked) values under plain names, and the model it was saved from
    keeps its parametrizations and its outputs (removing them from a deep copy used to break the original)."""
    from subnets.masking import attach_hard_concrete, binary_mask

    model, tokenizer = tiny_bert
    gates = attach_hard_concrete(model, find_targets(model), init_log_alpha=0.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for gate in gates.values():  # gates about half open, half closed: a real mask
            closed = torch.rand(gate.log_alpha.shape, generator=g) < 0.5
            gate.log_alpha.copy_(torch.where(closed, -10.0, 10.0))
    model.eval()
    inputs = tokenizer(["a parametrized model"], return_tensors="pt")
    before = model(**inputs).logits
    masks = binary_mask(gates)
    save_sparse_checkpoint(model, masks, tmp_path / "ck")
    assert torch.equal(model(**inputs).logits, before)
    assert all(parametrize.is_parametrized(model.get_submodule(name.rpartition(".")[0])) for name in masks)
    state = load_sparse_state_dict(tmp_path / "ck")
    assert not any(".parametrizations." in name for name in state)
    assert all(torch.equal(state[name], value) for name, value in plain_state_dict(model).items())
    for name, keep in masks.items():
        assert not state[name][~keep].any() and keep.any() and not keep.all()
