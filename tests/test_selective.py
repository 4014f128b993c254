"""ROSE: masked AdamW exactness, frozen tensors, Ensemble values, first/second-order scores."""

import copy

import pytest
import torch
import torch.nn.functional as F

from subnets.errors import SubnetsError
from subnets.models import tiny_model
from subnets.objectives import RoASTPerturbation, symmetric_kl
from subnets.selective import (ROSE_KL_SCALE, MaskedAdamW, RoseAdamW, RoseFirstObjective, RoseMasks, band_mask,
                               encoder_layer_parameters, second_order_scores)
from subnets.training import NO_DECAY

SENTENCES = ["a good film", "the plot was dull and boring", "superb actors", "quite a sad story really"]


def make_batch(tokenizer, labels=(1, 0, 1, 0)):
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor(labels)
    return batch


def param_groups(model, weight_decay=0.01):
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in NO_DECAY)]
    no_decay = [p for n, p in model.named_parameters() if any(k in n for k in NO_DECAY)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def ce_backward(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    F.cross_entropy(model(**inputs).logits, batch["labels"]).backward()


@pytest.mark.parametrize("kind,foreach", [("bert", True), ("bert", False), ("roberta", True)])
def test_full_band_equals_adamw_exactly(kind, foreach):
    model, tokenizer = tiny_model(kind)
    model.eval()  # identical gradients in both copies
    reference = copy.deepcopy(model)
    batch = make_batch(tokenizer)
    rose = RoseMasks("second", lower=0, upper=100).bind(model)
    ours = RoseAdamW(param_groups(model), rose=rose, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    adamw = torch.optim.AdamW(param_groups(reference), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, foreach=foreach)
    for _ in range(3):
        for m, opt in ((model, ours), (reference, adamw)):
            opt.zero_grad()
            ce_backward(m, batch)
            opt.step()
        assert all(bool((mask == 1).all()) for mask in rose.last)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name


def test_frozen_tensors_do_not_move(tiny_bert):
    model, tokenizer = tiny_bert
    model.eval()
    batch = make_batch(tokenizer)
    rose = RoseMasks("second", lower=0, upper=40).bind(model)
    # weight decay on every group, so a frozen LayerNorm weight would move too if decay were not masked
    opt = RoseAdamW(model.parameters(), rose=rose, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1)
    frozen_seen = 0
    for step in range(4):
        opt.zero_grad()
        ce_backward(model, batch)
        before = [p.detach().clone() for p in rose.params]
        momenta = [opt.state[p]["exp_avg"].clone() if opt.state[p] else None for p in rose.params]
        opt.step()
        masks = rose.last
        if step == 0:
            assert all(float(m) == 1.0 for m in masks)  # m_prev = 0: everything is kept at step 1
            continue
        for p, old, momentum, m, s in zip(rose.params, before, momenta, masks, rose.scored):
            if float(m) == 0.0:
                frozen_seen += 1
                assert torch.equal(p, old), s.name
                assert torch.equal(opt.state[p]["exp_avg"], momentum)  # g' = m_prev leaves m unchanged
            else:
                assert not torch.equal(p, old), s.name
    assert frozen_seen > 0


def test_second_order_masks_follow_the_formula(tiny_bert):
    model, tokenizer = tiny_bert
    model.eval()
    batch = make_batch(tokenizer)
    rose = RoseMasks("second", lower=10, upper=60).bind(model)
    opt = RoseAdamW(param_groups(model), rose=rose, lr=1e-3, betas=(0.9, 0.98))
    for _ in range(3):
        opt.zero_grad()
        ce_backward(model, batch)
        g = torch.stack([p.grad.norm() for p in rose.params])
        m = torch.stack([opt.state[p]["exp_avg"].norm() if opt.state[p] else torch.tensor(0.0) for p in rose.params])
        opt.step()
    scores = (0.1 * g / m - 1).abs()
    low, high = torch.quantile(scores, torch.tensor([0.10, 0.60]))
    expected = ((scores >= low) & (scores <= high)).float()
    assert torch.equal(torch.stack(rose.last), expected)
    assert 0 < expected.sum() < len(expected)


def test_band_mask_matches_quantile():
    torch.manual_seed(0)
    scores = torch.rand(37)
    for lower, upper in ((0, 100), (0, 30), (25, 75), (60, 60)):
        low, high = torch.quantile(scores, torch.tensor([lower / 100, upper / 100]))
        assert torch.equal(band_mask(scores, lower, upper), ((scores >= low) & (scores <= high)).float())
    assert band_mask(scores, 0, 100).sum() == 37


def test_second_order_score_is_finite_for_zero_momentum():
    score = second_order_scores(torch.tensor([0.5, 0.0]), torch.tensor([0.0, 0.0]), 0.9)
    assert torch.isfinite(score).all()


def test_ensemble_values(tiny_bert):
    model, tokenizer = tiny_bert
    batch = make_batch(tokenizer)
    gamma = 0.3
    rose = RoseMasks("ensemble", lower=20, upper=70, gamma=gamma).bind(model)
    opt = RoseAdamW(param_groups(model), rose=rose, lr=1e-3, betas=(0.9, 0.98))
    objective = RoseFirstObjective(rose)
    allowed = torch.tensor([0.0, gamma, 1 - gamma, 1.0])
    seen = set()
    for _ in range(4):
        opt.zero_grad()
        objective(model, batch, 1.0)
        opt.step()
        values = torch.stack(rose.last)
        distance = (values[:, None] - allowed[None, :]).abs().min(dim=1).values
        assert float(distance.max()) < 1e-6
        seen |= {round(float(v), 4) for v in values}
    assert len(seen) >= 2


def first_order_step(model, batch, rose, seed, **options):
    """RoseFirstObjective on `batch` with loss scale 0.5 from `seed`; then zero grads and reseed for the manual pass."""
    torch.manual_seed(seed)
    loss = RoseFirstObjective(rose, **options)(model, batch, 0.5)
    ce_grads = [p.grad.clone() for p in rose.params]
    kl_grads = rose.first_order_gradients
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks in the same order
    return loss, ce_grads, kl_grads


def assert_first_order_matches(rose, loss, ce_grads, kl_grads, manual_ce, manual_kl):
    """Ours against the manual computation; `manual_ce` (scaled by 0.5) is backpropagated here."""
    (0.5 * manual_ce).backward()
    assert torch.allclose(loss, manual_ce.detach())
    for ours, theirs in zip(kl_grads, manual_kl):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-4)
    for ours, p in zip(ce_grads, rose.params):
        assert torch.allclose(ours, p.grad, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in kl_grads)  # dropout makes the two passes differ


def test_first_order_objective_gradients(tiny_bert):
    model, tokenizer = tiny_bert
    model.train()
    batch = make_batch(tokenizer)
    rose = RoseMasks("first", lower=0, upper=50).bind(model)
    loss, ce_grads, kl_grads = first_order_step(model, batch, rose, seed=3)

    # the same computation by hand: two dropout passes of the doubled batch
    inputs = {k: torch.cat([v, v]) for k, v in batch.items() if k != "labels"}
    a, b = model(**inputs).logits.chunk(2)
    p_a, p_b = a.softmax(-1), b.softmax(-1)
    kl = ((p_a * (p_a.log() - p_b.log())).sum() + (p_b * (p_b.log() - p_a.log())).sum()) / 4
    assert torch.allclose(ROSE_KL_SCALE * symmetric_kl(a, b), kl, atol=1e-6)
    manual_kl = torch.autograd.grad(0.5 * kl, rose.params, retain_graph=True)
    ce = (F.cross_entropy(a, batch["labels"]) + F.cross_entropy(b, batch["labels"])) / 2
    assert_first_order_matches(rose, loss, ce_grads, kl_grads, ce, manual_kl)


def test_first_order_scores_from_a_subset_of_the_batch(tiny_bert):
    """score_examples=k: the KL gradient of the first k examples scaled by B/k; the CE gradient of the whole batch."""
    model, tokenizer = tiny_bert
    model.train()
    batch = make_batch(tokenizer)
    rose = RoseMasks("first", lower=0, upper=50).bind(model)
    loss, ce_grads, kl_grads = first_order_step(model, batch, rose, seed=5, score_examples=1)

    pairs = []  # the scored example's two passes first, then the other three's
    for rows in (slice(0, 1), slice(1, 4)):
        inputs = {k: torch.cat([v[rows], v[rows]]) for k, v in batch.items() if k != "labels"}
        a, b = model(**inputs).logits.chunk(2)
        pairs.append((a, b, F.cross_entropy(a, batch["labels"][rows], reduction="sum")
                      + F.cross_entropy(b, batch["labels"][rows], reduction="sum")))
    manual_kl = torch.autograd.grad(0.5 * 4 * ROSE_KL_SCALE * symmetric_kl(*pairs[0][:2]), rose.params,
                                    retain_graph=True)
    ce = (pairs[0][2] + pairs[1][2]) / (2 * 4)  # mean over both passes of all four examples
    assert_first_order_matches(rose, loss, ce_grads, kl_grads, ce, manual_kl)
    with pytest.raises(SubnetsError, match="score examples"):
        RoseFirstObjective(rose, score_examples=-1)


def test_default_score_takes_the_first_quarter_of_the_batch(tiny_bert):
    model, tokenizer = tiny_bert
    model.train()
    batch = make_batch(tokenizer)  # 4 examples: the default scores from the first one
    rose = RoseMasks("first", lower=0, upper=50).bind(model)

    def step(score_examples):
        rose.first_order_gradients = None  # each call's own KL gradients, not a sum
        return first_order_step(model, batch, rose, seed=5, score_examples=score_examples)

    one, default = step(1), step(None)
    assert torch.equal(default[0], one[0])
    for ours, theirs in zip([*default[1], *default[2]], [*one[1], *one[2]]):
        assert torch.equal(ours, theirs)
    exact = step(0)
    assert any(not torch.equal(a, b) for a, b in zip(exact[2], one[2]))


def test_first_order_masks_rank_kl_gradient_norms(tiny_bert):
    model, tokenizer = tiny_bert
    rose = RoseMasks("first", lower=0, upper=50).bind(model)
    opt = RoseAdamW(param_groups(model), rose=rose, lr=1e-3)
    RoseFirstObjective(rose)(model, make_batch(tokenizer), 1.0)
    norms = torch.stack([g.norm() for g in rose.first_order_gradients])
    opt.step()
    kept = torch.stack(rose.last).bool()
    assert float(norms[kept].max()) <= float(norms[~kept].min())  # the lower half of the scores is kept
    assert rose.first_order_gradients is None  # consumed by the step


def test_first_order_without_objective_is_an_error(tiny_bert):
    model, tokenizer = tiny_bert
    rose = RoseMasks("first").bind(model)
    opt = RoseAdamW(param_groups(model), rose=rose, lr=1e-3)
    ce_backward(model, make_batch(tokenizer))
    with pytest.raises(SubnetsError, match="RoseFirstObjective"):
        opt.step()


def test_elementwise_masks_freeze_elements(tiny_bert):
    model, tokenizer = tiny_bert
    model.eval()
    batch = make_batch(tokenizer)
    rose = RoseMasks("second", lower=0, upper=50, elementwise=True).bind(model)
    opt = RoseAdamW(param_groups(model), rose=rose, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        ce_backward(model, batch)
        before = [p.detach().clone() for p in rose.params]
        opt.step()
    for p, old, m in zip(rose.params, before, rose.last):
        assert m.shape == p.shape
        frozen = m == 0
        assert 0 < frozen.float().mean() < 1
        assert torch.equal(p[frozen], old[frozen])
        assert not torch.equal(p[~frozen], old[~frozen])


def test_scored_parameters_are_encoder_weights(tiny):
    model, _ = tiny
    scored = encoder_layer_parameters(model, weights_only=True)
    names = [s.name for s in scored]
    assert len(names) == 2 * 8  # Q, K, V, AO, LN, FFN in, FFN out, LN per layer
    assert all(".layer." in n and n.endswith(".weight") for n in names)
    assert not any("embeddings" in n or "classifier" in n for n in names)
    assert {s.layer for s in scored} == {0, 1}


@pytest.mark.parametrize("bad", [dict(lower=50, upper=40), dict(upper=101), dict(gamma=1.5)])
def test_bad_rose_options(bad):
    with pytest.raises(SubnetsError):
        RoseMasks("ensemble", **bad)


def test_masked_adamw_rejects_bad_betas():
    with pytest.raises(SubnetsError, match="betas"):
        MaskedAdamW([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 1.0))


def test_one_symmetric_kl_for_roast_and_rose(tiny_bert):
    """Both call sites of `objectives.symmetric_kl` against the KLs written out: RoAST's consistency term is the
    symmetric KL summed over the batch, ROSE's first-order score is the gradient of a quarter of it (Eq. 3)."""
    def reference(a, b):  # KL(p_a || p_b) + KL(p_b || p_a), summed over the batch
        log_a, log_b = F.log_softmax(a.double(), -1), F.log_softmax(b.double(), -1)
        return (F.kl_div(log_b, log_a, reduction="sum", log_target=True)
                + F.kl_div(log_a, log_b, reduction="sum", log_target=True))

    model, tokenizer = tiny_bert
    batch = make_batch(tokenizer)
    model.eval()  # RoAST without dropout: both calls see the same clean and adversarial logits
    logits = []
    handle = model.register_forward_hook(lambda module, args, output: logits.append(output.logits.detach()))
    weight = 1000.0
    with_kl, without_kl = (RoASTPerturbation(kl_weight=w)(model, batch, 1.0) for w in (weight, 0.0))
    difference = with_kl - without_kl
    handle.remove()
    clean, adversarial = logits[:2]
    assert float(reference(clean, adversarial)) > 0
    assert float(difference) == pytest.approx(weight * float(reference(clean, adversarial)), rel=1e-4)

    model.train()
    model.zero_grad()
    rose = RoseMasks("first").bind(model)
    _, _, kl_grads = first_order_step(model, batch, rose, seed=4)  # loss scale 0.5
    a, b = model(**{k: torch.cat([v, v]) for k, v in batch.items() if k != "labels"}).logits.chunk(2)
    manual = torch.autograd.grad(0.5 * reference(a, b).float() / 4, rose.params)
    for ours, theirs in zip(kl_grads, manual):
        assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-4)


def test_update_ratio_meter_counts_updated_elements_per_layer():
    from subnets.selective import LayerParameter, UpdateRatioMeter

    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in (4, (2, 3), 6)]
    selected = [LayerParameter("a", params[0], 0), LayerParameter("b", params[1], 0), LayerParameter("c", params[2], 1)]
    meter = UpdateRatioMeter(selected, "cpu")
    meter.add([torch.tensor([0.0, 2.5, -1.0, 0.0]), torch.tensor([[1.0, 0, 0], [0, 0, 0]]), torch.ones(6)])
    meter.add([torch.zeros(4), torch.zeros(2, 3), torch.tensor([0, 0, 0, 1.0, 1, 0])])
    assert meter.mean() == pytest.approx([(3 / 10 + 0) / 2, (1 + 2 / 6) / 2])
    meter.add([torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.3)])  # one value per tensor
    assert meter.mean() == pytest.approx([4 / 10, 1.0])
