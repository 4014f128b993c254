"""Perturbers (FreeLB, PGD, RoAST) and debiasing losses on tiny random BERT/RoBERTa models."""

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from subnets.errors import SubnetsError
from subnets.objectives import (
    AscentArguments, BiasPredictionArguments, FreeLB, LossObjective, ObjectiveArguments, PGD, PerturbationConfig,
    PredictionCache, RoASTPerturbation,
    build_objective, conf_reg_loss, dataset_fingerprint, poe_loss, reweight_loss,
)
from subnets.objectives.predictions import DeviceLookup
from subnets.objectives.perturbers import ascent_step, initial_delta, project
from subnets.tasks import get_task

PAIRS = [("A man is playing a guitar on stage.", "A man plays music."),
         ("The cat sat.", "Nobody is sitting on the mat near the door today."),
         ("Two dogs run through a snowy field together.", "Animals are outside."),
         ("She reads.", "A woman is reading a book.")]


def pair_batch(tokenizer, labels=(0, 1, 1, 0)) -> dict:
    enc = tokenizer([p for p, _ in PAIRS], [h for _, h in PAIRS], padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor(labels), "idx": torch.tensor([10, 3, 7, 0])}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def run(objective, model, batch, loss_scale=1.0):
    model.zero_grad(set_to_none=True)
    loss = objective(model, batch, loss_scale)
    return loss, grads(model)


class RecordingModel(nn.Module):
    """Wraps a classifier like DDP does (`.module`) and records every call's keyword arguments."""

    def __init__(self, model):
        super().__init__()
        self.module = model
        self.calls: list[dict] = []

    def forward(self, **kwargs):
        self.calls.append({k: v.detach().clone() for k, v in kwargs.items()})
        return self.module(**kwargs)


def test_freelb_one_step_zero_init_gives_the_ce_gradient(tiny):
    model, tok = tiny
    model.eval()
    batch = pair_batch(tok)
    ce_loss, ce_grads = run(LossObjective(), model, batch, loss_scale=0.5)
    adv_loss, adv_grads = run(FreeLB(PerturbationConfig(steps=1, lr=0.3, init_mag=0.0)), model, batch, 0.5)
    torch.testing.assert_close(adv_loss, ce_loss)
    assert ce_grads.keys() == adv_grads.keys()
    assert any("word_embeddings" in n for n in adv_grads), "FreeLB must train the word embeddings too"
    for name in ce_grads:
        torch.testing.assert_close(adv_grads[name], ce_grads[name], rtol=1e-4, atol=1e-6)


def test_freelb_ascent_raises_the_loss(tiny_bert):
    model, tok = tiny_bert
    model.eval()
    batch = pair_batch(tok)
    loss, _ = run(FreeLB(PerturbationConfig(steps=3, lr=0.5, init_mag=0.05)), model, batch)
    # The adversary climbs: the mean loss over the ascent steps exceeds the clean loss.
    assert loss.item() > LossObjective()(model, batch, 0.0).item()


def test_adversarial_pass_keeps_token_type_ids_and_attention_mask(tiny_bert):
    model, tok = tiny_bert
    wrapped = RecordingModel(model)
    batch = pair_batch(tok)
    assert batch["token_type_ids"].any(), "the fixture must be a real sentence pair"
    for objective in (FreeLB(PerturbationConfig(steps=2, lr=0.1, init_mag=0.05)),
                      PGD(PerturbationConfig(steps=2, lr=0.1, max_norm=0.5)), RoASTPerturbation()):
        wrapped.calls.clear()
        objective(wrapped, batch, 1.0)
        assert len(wrapped.calls) >= 2
        for call in wrapped.calls:
            assert torch.equal(call["token_type_ids"], batch["token_type_ids"])
            assert torch.equal(call["attention_mask"], batch["attention_mask"])
            assert "labels" not in call and "idx" not in call


@pytest.mark.parametrize("norm,max_norm", [("l2", 0.3), ("linf", 0.02), ("l2", 0.0)])
def test_freelb_perturbation_respects_its_bound(tiny_bert, norm, max_norm):
    model, tok = tiny_bert
    wrapped = RecordingModel(model)
    batch = pair_batch(tok)
    cfg = PerturbationConfig(steps=4, lr=0.2, init_mag=0.1, max_norm=max_norm, norm=norm)
    FreeLB(cfg)(wrapped, batch, 1.0)
    words = model.get_input_embeddings()(batch["input_ids"]).detach()
    pad = batch["attention_mask"] == 0
    for step, call in enumerate(wrapped.calls):
        delta = call["inputs_embeds"] - words
        assert delta[pad].abs().max() == 0, "padding must never be perturbed"
        if norm == "linf":
            assert delta.abs().max() <= max_norm + 1e-6
        else:
            bound = max_norm or cfg.init_mag + step * cfg.lr  # unbounded: init norm <= init_mag, each step adds lr
            assert (delta.flatten(1).norm(dim=1) <= bound + 1e-5).all()
    assert len(wrapped.calls) == cfg.steps


def test_initial_delta_scale_and_ascent_direction():
    torch.manual_seed(0)
    embeds = torch.zeros(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)[..., None]
    delta = initial_delta(embeds, mask, PerturbationConfig(init_mag=0.6))
    # Each element is U(-1,1) * init_mag / sqrt(len * hidden), so the l2 norm is at most init_mag.
    lengths = mask.sum(dim=(1, 2))
    assert (delta.abs().flatten(1).amax(1) <= 0.6 / (lengths * 8).sqrt() + 1e-7).all()
    grad = torch.randn(3, 5, 8)
    step = ascent_step(torch.zeros_like(grad), grad, mask, PerturbationConfig(lr=0.25))
    torch.testing.assert_close(step.flatten(1).norm(dim=1)[1], torch.tensor(0.25))  # full-length example
    assert (step * grad).sum() > 0
    projected = project(torch.full((2, 3, 4), 5.0), PerturbationConfig(max_norm=1.0))
    torch.testing.assert_close(projected.flatten(1).norm(dim=1), torch.ones(2))


def test_pgd_projects_and_adds_clean_and_adversarial_loss(tiny):
    model, tok = tiny
    model.eval()
    wrapped = RecordingModel(model)
    batch = pair_batch(tok)
    cfg = PerturbationConfig(steps=3, lr=0.5, init_mag=0.1, max_norm=0.25)
    loss, pgd_grads = run(PGD(cfg, weight=0.0), wrapped, batch)
    clean_loss, clean_grads = run(LossObjective(), model, batch)
    torch.testing.assert_close(loss, clean_loss)  # weight 0: only the clean term
    for name in clean_grads:
        torch.testing.assert_close(pgd_grads["module." + name], clean_grads[name], rtol=1e-4, atol=1e-6)
    words = model.get_input_embeddings()(batch["input_ids"]).detach()
    adversarial = [c for c in wrapped.calls if "inputs_embeds" in c]
    assert len(adversarial) == cfg.steps + 1
    for call in adversarial:
        assert ((call["inputs_embeds"] - words).flatten(1).norm(dim=1) <= 0.25 + 1e-5).all()
    assert PGD(cfg, weight=1.0)(model, batch, 1.0) > clean_loss


def test_roast_perturbs_the_embedding_output_with_max_abs_normalisation(tiny_bert):
    model, tok = tiny_bert
    model.eval()
    batch = pair_batch(tok)
    seen = []
    handle = model.bert.encoder.layer[0].register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).detach()), with_kwargs=True)
    loss = RoASTPerturbation(eps=0.1)(model, batch, 1.0)
    handle.remove()
    clean, adv = seen
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(((adv - clean).abs().amax(-1))[real], torch.full((int(real.sum()),), 0.1))
    clean_ce = F.cross_entropy(model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits,
                               batch["labels"])
    assert loss > clean_ce  # 0.5 CE(clean) + 0.5 CE(adv) + KL, and the adversarial CE is larger


def test_perturbers_work_through_parametrized_masks(tiny_bert):
    model, tok = tiny_bert

    class Gate(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.score = nn.Parameter(torch.ones(shape))

        def forward(self, weight):
            return weight * self.score

    for p in model.parameters():
        p.requires_grad_(False)
    query = model.bert.encoder.layer[0].attention.self.query
    parametrize.register_parametrization(query, "weight", Gate(query.weight.shape))
    gate = query.parametrizations.weight[0].score
    for objective in (FreeLB(PerturbationConfig(steps=2)), PGD(PerturbationConfig(max_norm=0.1)), RoASTPerturbation()):
        gate.grad = None
        objective(model, pair_batch(tok), 1.0)
        assert gate.grad is not None and gate.grad.abs().sum() > 0


def test_freelb_under_bf16_autocast(tiny_bert):
    model, tok = tiny_bert
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = FreeLB(PerturbationConfig(steps=2, init_mag=0.05))(model, pair_batch(tok), 1.0)
        RoASTPerturbation()(model, pair_batch(tok), 1.0)
    assert torch.isfinite(loss) and loss.dtype == torch.float32


# ---------------------------------------------------------------- debiasing losses


def test_poe_with_uniform_bias_equals_ce_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    ce = F.cross_entropy(logits, labels)
    (ce_grad,) = torch.autograd.grad(ce, logits)
    poe = poe_loss(logits, labels, torch.full((6, 3), 1 / 3))
    (poe_grad,) = torch.autograd.grad(poe, logits)
    torch.testing.assert_close(poe, ce)
    torch.testing.assert_close(poe_grad, ce_grad)
    # A confident correct bias model lowers the loss of the examples it explains.
    confident = torch.full((6, 3), 0.05).scatter(1, labels[:, None], 0.9)
    assert poe_loss(logits, labels, confident) < ce


def test_reweight_and_conf_reg_reduce_to_ce_in_their_neutral_cases():
    torch.manual_seed(1)
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1])
    ce = F.cross_entropy(logits, labels)
    torch.testing.assert_close(reweight_loss(logits, labels, torch.full((5, 3), 1 / 3)), ce)
    one_hot_teacher = F.one_hot(labels, 3).float()
    torch.testing.assert_close(conf_reg_loss(logits, labels, torch.zeros(5, 3), one_hot_teacher), ce)
    # Where the bias model is certain of the gold label, the teacher's target becomes uniform.
    certain = F.one_hot(labels, 3).float()
    teacher = torch.softmax(torch.randn(5, 3), -1)
    uniform_target = -(F.log_softmax(logits, -1)).mean(-1).mean()
    torch.testing.assert_close(conf_reg_loss(logits, labels, certain, teacher), uniform_target)
    # Reweighting ignores examples the bias model gets right with certainty.
    weights_zero_first = torch.full((5, 3), 1 / 3)
    weights_zero_first[0] = F.one_hot(labels[0], 3).float()
    expected = F.cross_entropy(logits[1:], labels[1:])
    torch.testing.assert_close(reweight_loss(logits, labels, weights_zero_first), expected)


def make_cache(ids, labels, num_classes=3, task="mnli", kind="bias", seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_classes), size=len(ids)).astype(np.float32)
    return PredictionCache(np.asarray(ids), probs, np.asarray(labels), task,
                           dataset_fingerprint(np.asarray(ids), np.asarray(labels)), kind)


def test_cache_round_trip_and_device_lookup_by_example_id(tmp_path):
    ids, labels = np.array([7, 3, 10, 0, 5]), np.array([0, 1, 2, 1, 0])
    cache = make_cache(ids, labels)
    cache.save(tmp_path / "bias.safetensors")
    loaded = PredictionCache.load(tmp_path / "bias.safetensors")
    assert (loaded.task, loaded.kind, loaded.fingerprint) == ("mnli", "bias", cache.fingerprint)
    expected = {int(i): cache.probs[k] for k, i in enumerate(cache.ids)}
    query = torch.tensor([10, 0, 3, 3, 7])
    got = DeviceLookup(loaded)(query)
    np.testing.assert_allclose(got.numpy(), np.stack([expected[int(i)] for i in query]))


def test_cache_misalignment_is_a_clear_error(tmp_path):
    dataset = datasets.Dataset.from_dict({"idx": [0, 1, 2, 3], "labels": [0, 1, 2, 0]})
    good = make_cache([0, 1, 2, 3, 4], [0, 1, 2, 0, 1])
    good.check_alignment(dataset, "mnli", 3)  # a superset of the training ids is fine
    with pytest.raises(SubnetsError, match="no row for 1 of 4"):
        make_cache([0, 1, 2], [0, 1, 2]).check_alignment(dataset, "mnli", 3)
    with pytest.raises(SubnetsError, match="disagree with the training labels"):
        make_cache([0, 1, 2, 3], [0, 1, 2, 2]).check_alignment(dataset, "mnli", 3)
    with pytest.raises(SubnetsError, match="2 classes"):
        make_cache([0, 1, 2, 3], [0, 1, 1, 0], num_classes=2).check_alignment(dataset, "mnli", 3)
    with pytest.raises(SubnetsError, match="task 'qnli'"):
        make_cache([0, 1, 2, 3], [0, 1, 2, 0], task="qnli").check_alignment(dataset, "mnli", 3)
    with pytest.raises(SubnetsError, match="repeat example ids"):
        make_cache([0, 0, 1], [0, 0, 1])
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SubnetsError, match="not a readable safetensors file"):
        PredictionCache.load(tmp_path / "broken.safetensors")


def test_build_objective_wires_debias_and_adversary(tmp_path, tiny_bert):
    model, tok = tiny_bert
    task = get_task("rte")  # two classes, like the tiny model
    batch = pair_batch(tok)
    ids = batch["idx"].numpy()
    dataset = datasets.Dataset.from_dict({"idx": ids.tolist(), "labels": batch["labels"].tolist()})
    uniform = PredictionCache(ids, np.full((4, 2), 0.5, np.float32), batch["labels"].numpy(), "rte",
                              dataset_fingerprint(ids, batch["labels"].numpy()))
    uniform.save(tmp_path / "bias.safetensors")
    model.eval()
    args = ObjectiveArguments(adversary="freelb", debias="poe")
    bias = BiasPredictionArguments(bias_predictions=str(tmp_path / "bias.safetensors"))
    options = [AscentArguments(adv_steps=1, adv_init_mag=0.0), bias]
    objective = build_objective(args, task, dataset, options=options)
    torch.testing.assert_close(objective(model, batch, 1.0), LossObjective()(model, batch, 1.0))
    with pytest.raises(SubnetsError, match="for task 'rte', but the run trains on 'qnli'"):
        build_objective(args, get_task("qnli"), dataset, options=options)
    with pytest.raises(SubnetsError, match="needs --teacher_predictions"):
        build_objective(ObjectiveArguments(debias="conf_reg"), task, dataset, options=[bias])
    with pytest.raises(SubnetsError, match="Unknown --adversary 'fgsm'"):
        build_objective(ObjectiveArguments(adversary="fgsm"), task, dataset)
    with pytest.raises(SubnetsError, match="PGD needs a perturbation bound"):
        build_objective(ObjectiveArguments(adversary="pgd"), task, dataset)


def test_perturbers_inside_ddp_match_the_unwrapped_model(tmp_path, tiny_bert):
    import torch.distributed as dist

    model, tok = tiny_bert
    model.eval()
    batch = pair_batch(tok)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        for objective in (FreeLB(PerturbationConfig(steps=3, init_mag=0.0)),
                          PGD(PerturbationConfig(steps=2, max_norm=0.2)), RoASTPerturbation()):
            for _ in range(2):  # a second step fails if the reducer was left expecting a backward pass
                wrapped_loss, wrapped_grads = run(objective, ddp, batch)
            plain_loss, plain_grads = run(objective, model, batch)
            if not isinstance(objective, PGD):  # PGD's random start differs between the two calls
                torch.testing.assert_close(wrapped_loss, plain_loss)
                for name, grad in plain_grads.items():
                    torch.testing.assert_close(wrapped_grads["module." + name], grad, rtol=1e-4, atol=1e-6)
    finally:
        dist.destroy_process_group()
