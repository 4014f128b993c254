"""RoAST: Fisher accumulation, keep probabilities, unbiased masks, masked-gradient AdamW, Child-Tuning-D."""

import copy
import math

import datasets
import pytest
import torch
import torch.nn.functional as F

from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.selective import (FisherAccumulator, RoastAdamW, RoastMasks, draw_masks, encoder_layer_parameters,
                               keep_probabilities)
from subnets.selective.methods.roast import initial_fisher_pass
from subnets.tasks import get_task
from subnets.training import Trainer

SENTENCES = ["a good film", "the plot was dull", "superb actors", "a sad story", "lovely", "weak and boring"]
LABELS = [1, 0, 1, 0, 1, 0]
SST2 = get_task("sst2")


def without_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def per_example_fisher(model, tokenizer, params):
    """Mean over examples of squared per-example gradients, each from its own torch.autograd.grad call."""
    total = [torch.zeros_like(p) for p in params]
    for sentence, label in zip(SENTENCES, LABELS):
        logits = model(**tokenizer(sentence, return_tensors="pt")).logits
        grads = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([label])), params)
        total = [t + g ** 2 for t, g in zip(total, grads)]
    return [t / len(SENTENCES) for t in total]


def test_initial_fisher_pass_matches_per_example_autograd(tiny, tmp_path):
    model, tokenizer = tiny
    without_dropout(model)
    selected = encoder_layer_parameters(model, weights_only=False)
    # raw rows as the training loop reads them; batch size 1 = per-example squared gradients
    dataset = datasets.Dataset.from_dict(
        {**{k: list(v) for k, v in tokenizer(SENTENCES).items()}, "labels": LABELS, "idx": list(range(len(LABELS)))})
    model.config.id2label = dict(enumerate(SST2.label_names))
    model.config.label2id = {name: i for i, name in enumerate(SST2.label_names)}
    trainer = Trainer(model, TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=1), SST2,
                      dataset, None, tokenizer)
    fisher = FisherAccumulator([s.param for s in selected])
    initial_fisher_pass(trainer, fisher)
    assert fisher.count == len(SENTENCES)
    expected = per_example_fisher(model, tokenizer, [s.param for s in selected])
    for s, ours, theirs in zip(selected, fisher.mean(), expected):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-12), s.name
        assert float(theirs.abs().sum()) > 0 or "bias" in s.name
    assert all(p.grad is None for p in model.parameters())


def test_fisher_accumulates_squared_batch_gradients():
    p = torch.nn.Parameter(torch.zeros(3))
    fisher = FisherAccumulator([p])
    fisher.add([torch.tensor([1.0, -2.0, 0.0])])
    fisher.add([torch.tensor([3.0, 0.0, 1.0])])
    assert torch.equal(fisher.mean()[0], torch.tensor([5.0, 2.0, 0.5]))
    fisher.reset()
    with pytest.raises(SubnetsError):
        fisher.mean()


def test_keep_probabilities_follow_the_rank():
    torch.manual_seed(0)
    fisher = [torch.rand(40, 25), torch.rand(1000)]
    p = torch.cat([t.reshape(-1) for t in keep_probabilities(fisher, alpha=0.9, beta=10.0, min_keep=0.01)])
    flat = torch.cat([t.reshape(-1) for t in fisher])
    order = flat.argsort()
    assert (p[order].diff() >= 0).all()  # monotone in the Fisher
    assert math.isclose(float(p[order[-1]]), 1 / (1 + math.exp(-2 * 10 * (1 - 0.9))), rel_tol=1e-5)
    assert float(p.min()) == pytest.approx(0.01)  # the floor
    assert 0.10 < float(p.mean()) < 0.125  # "about 11% of weights updated" (+ the floor's share)


def test_masks_are_unbiased():
    torch.manual_seed(1)
    fisher = [torch.rand(500)]
    p = keep_probabilities(fisher, alpha=0.6, beta=1.0, min_keep=0.05)
    generator = torch.Generator().manual_seed(7)
    draws = 4000
    total = torch.zeros(500)
    for _ in range(draws):
        total += draw_masks(p, [torch.Size([500])], generator)[0]
    mean = total / draws
    sd = ((1 - p[0]) / (p[0] * draws)).sqrt()
    assert float(((mean - 1).abs() / sd).max()) < 5  # every element: E[m] = 1 within 5 standard errors
    assert abs(float(mean.mean()) - 1) < 0.01


def test_child_tuning_limit_and_rescale_bound():
    torch.manual_seed(2)
    fisher = [torch.rand(1000)]
    p = keep_probabilities(fisher, alpha=0.7, beta=float("inf"), min_keep=0.01)[0]
    assert set(p.unique().tolist()) == {0.0, 1.0}
    assert float(p.mean()) == pytest.approx(0.3, abs=1e-3)
    assert torch.equal(p.bool(), fisher[0] >= fisher[0].sort().values[700])  # top 30% by Fisher
    masks = draw_masks([p], [torch.Size([1000])], torch.Generator().manual_seed(0))[0]
    assert torch.equal(masks, p)  # deterministic, nothing rescaled
    soft = keep_probabilities(fisher, alpha=0.9, beta=10.0, min_keep=0.02)
    drawn = draw_masks(soft, [torch.Size([1000])], torch.Generator().manual_seed(0))[0]
    assert float(drawn.max()) <= 1 / 0.02 + 1e-4


def test_roast_adamw_masks_the_gradient_before_the_moments(tiny_bert):
    model, tokenizer = tiny_bert
    model.eval()
    reference = copy.deepcopy(model)
    roast = RoastMasks(alpha=0.5, beta=2.0).bind(model)
    roast.fisher.add([torch.rand_like(p) for p in roast.params])
    masks = roast.redraw(epoch=0)
    assert roast.fisher.count == 0  # refreshed from the next epoch's gradients
    opt = RoastAdamW(model.parameters(), roast=roast, lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)
    adamw = torch.optim.AdamW(reference.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01, foreach=True)
    by_name = {s.name: m for s, m in zip(roast.selected, masks)}
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    for _ in range(2):
        for m, o in ((model, opt), (reference, adamw)):
            o.zero_grad()
            F.cross_entropy(m(**batch).logits, torch.tensor(LABELS)).backward()
        for name, p in reference.named_parameters():
            if name in by_name:
                p.grad.mul_(by_name[name])
        opt.step()
        adamw.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(a, b), name


def test_redraw_is_seeded_per_epoch(tiny_bert):
    model, _ = tiny_bert
    roast = RoastMasks(alpha=0.5, beta=2.0, seed=3, refresh=False).bind(model)
    roast.fisher.add([torch.rand_like(p) for p in roast.params])
    first = [m.clone() for m in roast.redraw(0)]
    again = roast.redraw(0)
    other = roast.redraw(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("bad", [dict(alpha=1.5, beta=1.0), dict(alpha=0.5, beta=0.0), dict(alpha=0.5, beta=1.0, min_keep=0.0)])
def test_bad_roast_options(bad):
    with pytest.raises(SubnetsError):
        RoastMasks(**bad)
