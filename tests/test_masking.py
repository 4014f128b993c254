import math

import pytest
import torch

from subnets.errors import SubnetsError
from subnets.models import tiny_model
from subnets.masking import (
    FixedMask,
    HardConcreteGate,
    Layout,
    attach_hard_concrete,
    attach_scores,
    binary_mask,
    cubic_sparsity,
    detach,
    deterministic_gate,
    draw_mask,
    expected_density,
    expected_l0,
    imp_prune,
    imp_sparsity,
    magnitude_mask,
    mask_states,
    mean_expected_l0,
    random_mask,
    reset_thresholds,
    rewind,
    sample_gate,
    sample_masked_weight,
    snapshot,
)
from subnets.masking.methods.hard_concrete import BETA, LIMIT_L, LIMIT_R
from subnets.sparsity import sparsity_report
from subnets.targets import find_targets


def _inputs(tokenizer):
    return tokenizer(["a short sentence", "another, slightly longer sentence here"], return_tensors="pt", padding=True)


def _pruned(mask):
    return sum(int((~m).sum()) for m in mask.values())


@pytest.mark.parametrize("scope", ["global", "per_matrix"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.777, 1.0])
def test_drawn_sparsity_is_exact_to_the_weight(tiny, scope, sparsity):
    model, _ = tiny
    targets = find_targets(model, pooler=True, classifier=True)
    state = {t.name: torch.randn(t.shape).round() for t in targets}  # many ties
    mask = draw_mask(state, sparsity, scope=scope)
    if scope == "global":
        assert _pruned(mask) == round(sparsity * sum(t.numel for t in targets))
    else:
        for t in targets:
            assert int((~mask[t.name]).sum()) == round(sparsity * t.numel)
    assert sparsity_report(mask, targets).pruned == _pruned(mask)


def test_draw_prunes_the_lowest_and_keeps_previous_pruning():
    state = {"a": torch.tensor([3.0, 1.0, 2.0, 0.5]), "b": torch.tensor([10.0, -1.0])}
    mask = draw_mask(state, 0.5, scope="global")
    assert mask["a"].tolist() == [True, False, True, False] and mask["b"].tolist() == [True, False]
    previous = {"a": torch.tensor([False, True, True, True]), "b": torch.tensor([True, True])}
    mask = draw_mask(state, 0.5, scope="global", keep_pruned=previous)
    assert mask["a"].tolist() == [False, True, True, False] and mask["b"].tolist() == [True, False]
    with pytest.raises(SubnetsError, match="sparsity"):
        draw_mask(state, 1.5)


def test_hard_concrete_sampling_matches_expected_l0():
    torch.manual_seed(0)
    log_alpha = torch.linspace(-4, 4, 9).repeat(40_000, 1)
    samples = sample_gate(log_alpha)
    assert samples.min() >= 0 and samples.max() <= 1
    empirical_nonzero = (samples > 0).float().mean(0)
    torch.testing.assert_close(empirical_nonzero, expected_l0(log_alpha[0]), atol=0.01, rtol=0)
    # exact ones also occur (the stretched tail beyond 1 is clamped)
    assert (samples == 1).any() and (samples == 0).any()
    assert deterministic_gate(torch.tensor(math.log(5.0))).item() == pytest.approx(0.9)


def _reference_sample(log_alpha, weight=None):
    """The hard-concrete sample as a plain autograd graph (docs/methods.md formulas), same noise draw as the fused one."""
    u = torch.rand_like(log_alpha)
    s = torch.sigmoid((torch.logit(u, 1e-6) + log_alpha) / BETA)
    z = (s * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)
    return z if weight is None else weight * z


@pytest.mark.parametrize("weight_kind", ["none", "frozen", "trainable"])
def test_fused_hard_concrete_sample_matches_autograd_exactly(weight_kind):
    log_alpha = torch.randn(64, 48, generator=torch.Generator().manual_seed(1)).mul_(3).requires_grad_()
    weight = None if weight_kind == "none" else torch.randn(64, 48).requires_grad_(weight_kind == "trainable")
    upstream = torch.randn(64, 48)
    fused = sample_gate if weight is None else sample_masked_weight
    outputs, gradients = [], []
    for sample in (_reference_sample, fused):
        torch.manual_seed(0)  # the same noise for both
        out = sample(log_alpha) if weight is None else sample(log_alpha, weight)
        out.backward(upstream)
        outputs.append(out.detach())
        gradients.append((log_alpha.grad, None if weight is None else weight.grad))
        log_alpha.grad = None
        if weight is not None:
            weight.grad = None
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(gradients[0][0], gradients[1][0])
    if weight_kind == "trainable":
        assert torch.equal(gradients[0][1], gradients[1][1])
    # both clamped regions (no gradient) and the stretched middle (gradient) were exercised
    assert (gradients[1][0] == 0).float().mean() > 0.2 and (gradients[1][0] != 0).float().mean() > 0.2


def test_fused_expected_l0_matches_autograd_exactly():
    generator = torch.Generator().manual_seed(2)
    gates = {f"g{i}": HardConcreteGate(Layout(shape)) for i, shape in enumerate([(8, 6), (5,), (3, 7)])}
    with torch.no_grad():
        for g in gates.values():
            g.log_alpha.normal_(0, 3, generator=generator)
    total = sum(g.log_alpha.numel() for g in gates.values())
    references = {
        mean_expected_l0: lambda: torch.stack([expected_l0(g.log_alpha).mean() for g in gates.values()]).mean(),
        expected_density: lambda: sum(expected_l0(g.log_alpha).sum() for g in gates.values()) / total,
    }
    for fused, reference in references.items():
        grads = []
        for value in (fused(gates), reference()):
            (value * 0.7).backward()
            grads.append([g.log_alpha.grad for g in gates.values()])
            for g in gates.values():
                g.log_alpha.grad = None
        torch.testing.assert_close(fused(gates), reference())
        assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_hard_concrete_search_computes_no_weight_gradients(tiny):
    model, tokenizer = tiny
    gates = attach_hard_concrete(model, find_targets(model, pooler=True))
    model.train()
    out = model(**_inputs(tokenizer), labels=torch.tensor([0, 1]))
    (out.loss + mean_expected_l0(gates)).backward()
    for name, param in model.named_parameters():
        if name.endswith("log_alpha"):
            assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0
        else:
            assert not param.requires_grad and param.grad is None, name
    assert set(gates) == {t.name for t in find_targets(model, pooler=True)}


def test_hard_concrete_eval_is_deterministic_and_detach_keeps_masked_weights(tiny_bert):
    model, tokenizer = tiny_bert
    targets = find_targets(model)
    gates = attach_hard_concrete(model, targets)
    with torch.no_grad():
        for g in gates.values():
            g.log_alpha.normal_(0, 3)
    model.eval()
    inputs = _inputs(tokenizer)
    first, second = model(**inputs).logits, model(**inputs).logits
    assert torch.equal(first, second)
    mask = binary_mask(gates)
    detach(model)
    weights = dict(model.named_parameters())
    for name, keep in mask.items():
        assert (weights[name][~keep] == 0).all()
    torch.testing.assert_close(model(**inputs).logits, first)


def test_structured_gates_prune_whole_heads_and_neurons(tiny_bert):
    model, _ = tiny_bert
    targets = find_targets(model)
    gates = attach_hard_concrete(model, targets, granularity="structured")
    query = "bert.encoder.layer.0.attention.self.query.weight"
    attn_out = "bert.encoder.layer.0.attention.output.dense.weight"
    ffn_out = "bert.encoder.layer.0.output.dense.weight"
    assert gates[query].log_alpha.shape == (4,) and gates[ffn_out].log_alpha.shape == (64,)
    with torch.no_grad():
        gates[query].log_alpha[1] = -20
        gates[attn_out].log_alpha[2] = -20
        gates[ffn_out].log_alpha[5] = -20
    mask = binary_mask(gates)
    assert (~mask[query]).nonzero()[:, 0].unique().tolist() == list(range(8, 16))  # rows of head 1
    assert (~mask[attn_out]).nonzero()[:, 1].unique().tolist() == list(range(16, 24))  # columns of head 2
    assert (~mask[ffn_out]).sum() == 32 and (~mask[ffn_out][:, 5]).all()
    assert mask_states(gates)[query].shape == (32, 32)


def test_score_masks_are_straight_through_and_thresholds_control_sparsity(tiny):
    model, tokenizer = tiny
    targets = find_targets(model, classifier=True)
    masks = attach_scores(model, targets, init="hard", sparsity=0.25)
    for t in targets:
        assert int((~masks[t.name].binary()).sum()) == round(0.25 * t.numel)
    weights = dict(model.named_parameters())
    model.train()
    model(**_inputs(tokenizer), labels=torch.tensor([0, 1])).loss.backward()
    assert all(m.scores.grad is not None and m.scores.grad.abs().sum() > 0 for m in masks.values())
    assert all(p.grad is None for n, p in weights.items() if not n.endswith("scores"))
    reset_thresholds(masks, 0.5, scope="global")
    assert len({float(m.threshold) for m in masks.values()}) == 1


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5])
def test_thresholds_from_one_sort_per_shape_equal_each_matrix_kthvalue(sparsity):
    from subnets.masking.draw import pruned_count

    model, _ = tiny_model("bert")
    targets = find_targets(model, classifier=True)  # several shapes: attention, FFN in/out, classifier
    masks = attach_scores(model, targets, init="soft", sparsity=0.1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in masks.values():  # random scores with ties (values on a coarse grid)
            m.scores.copy_(torch.randint(0, 50, m.scores.shape, generator=generator).float() / 7)
    reset_thresholds(masks, sparsity, scope="per_matrix")
    for m in masks.values():
        k = pruned_count(m.scores.numel(), sparsity)
        expected = m.scores.min() - 1.0 if k == 0 else torch.kthvalue(m.scores.flatten(), k).values
        assert torch.equal(m.threshold, expected)
    reset_thresholds(masks, sparsity, scope="global")
    flat = torch.cat([m.scores.flatten() for m in masks.values()])
    k = pruned_count(flat.numel(), sparsity)
    expected = flat.min() - 1.0 if k == 0 else torch.kthvalue(flat, k).values
    assert all(torch.equal(m.threshold, expected) for m in masks.values())


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_soft_score_init_hits_the_sparsity(kind):
    model, _ = tiny_model(kind)
    targets = find_targets(model, classifier=True)
    masks = attach_scores(model, targets, init="soft", sparsity=0.4)
    for t in targets:
        assert (~masks[t.name].binary()).float().mean() == pytest.approx(0.4, abs=0.02)
    weights = {t.name: masks[t.name].scores for t in targets}
    assert all(torch.all(w >= 0) for w in weights.values())  # |W|


def test_cubic_sparsity_schedule():
    kwargs = dict(initial=0.0, final=0.8, start=10, end=110)
    assert cubic_sparsity(0, **kwargs) == 0.0 and cubic_sparsity(110, **kwargs) == pytest.approx(0.8)
    assert cubic_sparsity(60, **kwargs) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert cubic_sparsity(500, **kwargs) == pytest.approx(0.8)


def test_imp_rounds_and_rewinding(tiny):
    model, _ = tiny
    targets = find_targets(model, pooler=True)
    pretrained = snapshot(model)
    total = sum(t.numel for t in targets)
    mask = None
    for round_index, expected in enumerate([0.1, 0.19, 0.271, 0.3439], start=1):
        with torch.no_grad():  # "fine-tuning" moves every weight, the head included
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        head_before = {n: p.clone() for n, p in model.named_parameters() if n.startswith("classifier")}
        new_mask = imp_prune(model, targets, mask, round_index, scope="global")
        assert imp_sparsity(round_index) == pytest.approx(expected)
        assert _pruned(new_mask) == round(expected * total)
        if mask is not None:
            assert all((new_mask[n] <= mask[n]).all() for n in mask)  # pruned weights stay pruned
        mask = new_mask
        rewind(model, pretrained, mask)
        for name, param in model.named_parameters():
            if name.startswith("classifier"):
                assert torch.equal(param, head_before[name])
            elif name in mask:
                assert torch.equal(param[mask[name]], pretrained[name][mask[name]])
                assert (param[~mask[name]] == 0).all()
            else:
                assert torch.equal(param, pretrained[name])


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_fixed_mask_keeps_pruned_weights_zero(tiny_bert, optimizer_name):
    model, tokenizer = tiny_bert
    targets = find_targets(model, pooler=True)
    fixed = FixedMask(model, random_mask(targets, 0.6, seed=1))
    if optimizer_name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=0.1)
    inputs = _inputs(tokenizer)
    model.train()
    for _ in range(25):
        model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
        fixed.zero_grads()
        optimizer.step()
        optimizer.zero_grad()
        fixed.zero_weights()
    weights = dict(model.named_parameters())
    for name, keep in fixed.mask.items():
        assert (weights[name][~keep] == 0).all()
        assert (weights[name][keep] != 0).float().mean() > 0.99


def test_magnitude_and_random_baselines(tiny_bert):
    model, _ = tiny_bert
    targets = find_targets(model)
    mask = magnitude_mask(model, targets, 0.5, scope="per_matrix")
    weights = dict(model.named_parameters())
    for t in targets:
        w = weights[t.name].abs()
        assert w[~mask[t.name]].max() <= w[mask[t.name]].min()
    a, b = random_mask(targets, 0.5, seed=3), random_mask(targets, 0.5, seed=3)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert _pruned(a) == sum(round(0.5 * t.numel) for t in targets)


def test_target_sparsity_under_the_fixed_controller_warns_that_it_only_records(tiny_bert):
    """Issue 23, item 8: the fixed controller (the default) is not steered by --target_sparsity; the option check
    and the builder (which `subnets.attach` runs without the stage's check) say so, the Lagrangian does not."""
    import warnings

    from subnets import attach
    from subnets.masking.methods.hard_concrete import HardConcreteArguments
    from subnets.masking.search import SearchArguments, check_search
    from subnets.registry import OptionGroups

    search = SearchArguments(method="hard_concrete", target_sparsity=0.3)
    with pytest.warns(UserWarning, match=r"--target_sparsity 0.3 steers nothing under --controller fixed") as caught:
        check_search(search, OptionGroups())
    assert "only recorded" in str(caught[0].message) and "--controller lagrangian" in str(caught[0].message)
    with pytest.warns(UserWarning, match="steers nothing under --controller fixed"):
        attach(tiny_bert[0], "hard_concrete", max_steps=4, target_sparsity=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_search(search, OptionGroups([HardConcreteArguments(controller="lagrangian")]))
