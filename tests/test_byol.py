"""Bring your own loop (subnets.loop, subnets.hf_trainer): a plain PyTorch loop, transformers.Trainer, finalize and
HF save/load, and the refusals of a gated model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import subnets
from subnets.api import load_data, retrain, search_mask
from subnets.data import Collator
from subnets.errors import SubnetsError
from subnets.masking.base import attached_masks
from subnets.models import tiny_model
from subnets.tasks import get_task

SEED, BATCH, STEPS = 42, 16, 12


@pytest.fixture
def setup(tiny_data_dir):
    """A tiny BERT without dropout (no RNG but the method's own) and the toy SST-2 tokenised."""
    task = get_task("sst2")
    model, tokenizer = tiny_model("bert", label_names=task.label_names)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return task, model, tokenizer, load_data(task, tokenizer, data_dir=tiny_data_dir)


def _batches(data, tokenizer, steps):
    """`steps` shuffled training batches (model inputs and labels)."""
    columns = [c for c in data.train.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    loader = torch.utils.data.DataLoader(data.train.select_columns(columns), batch_size=BATCH, shuffle=True,
                                         collate_fn=Collator(tokenizer), generator=torch.Generator().manual_seed(0))
    while True:
        for batch in loader:
            if steps == 0:
                return
            steps -= 1
            yield batch


def _logits(model, tokenizer):
    model.eval()
    inputs = tokenizer(["a great and moving film", "flat, tired and far too long"], return_tensors="pt",
                       padding=True)
    with torch.no_grad():
        return model(**inputs).logits


def test_plain_loop_reaches_the_target_with_the_lagrangian(setup):
    task, model, tokenizer, data = setup
    steps, target = 150, 0.5
    handle = subnets.attach(model, "hard_concrete", max_steps=steps, target_sparsity=target, controller="lagrangian",
                            lagrangian_lr=0.02)
    optimizer = torch.optim.AdamW(handle.param_groups(), lr=1e-3)
    for batch in _batches(data, tokenizer, steps):
        labels = batch.pop("labels")
        loss = F.cross_entropy(model(**batch).logits, labels) + handle.penalty()
        loss.backward()
        handle.after_backward()
        optimizer.step()
        optimizer.zero_grad()
        handle.step()
    scalars = handle.log_scalars()
    assert handle.global_step == steps and scalars["train/target_sparsity"] == target
    assert abs(scalars["train/expected_sparsity"] - target) < 0.03  # the controller's quantity
    ticket = handle.draw(target)
    assert sum(int((~m).sum()) for m in ticket.values()) == round(target * sum(m.numel() for m in ticket.values()))
    with pytest.raises(SubnetsError, match="after_backward"):
        handle.step()  # no after_backward since the last step: refused


def test_finalize_then_save_and_load_gives_identical_logits(setup, tmp_path):
    task, model, tokenizer, data = setup
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    handle = subnets.attach(model, "scores", max_steps=4, target_sparsity=0.4)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "scores" not in n)
    gated = tmp_path / "gated"
    model.save_pretrained(gated)  # an attached model saves what finalize() leaves
    ticket = handle.mask()
    plain = handle.finalize()
    assert plain is model and not attached_masks(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    for name, keep in ticket.items():
        weight = model.get_parameter(name)
        assert bool((weight[~keep] == 0).all()) and bool((weight[keep] != 0).all())
    model.save_pretrained(tmp_path / "plain")
    expected = _logits(model, tokenizer)
    for directory in (gated, tmp_path / "plain"):
        loaded = AutoModelForSequenceClassification.from_pretrained(directory)
        assert torch.equal(_logits(loaded, tokenizer), expected)


def test_gated_model_refusals(setup, tmp_path):
    task, model, tokenizer, data = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    found = search_mask(model, tokenizer, task, data, tmp_path / "search", method="hard_concrete", max_steps=2,
                        per_device_train_batch_size=BATCH, report_to="none", disable_tqdm=True,
                        mask_store=str(tmp_path / "store"))
    assert attached_masks(model)  # search_mask leaves the gates on; save_pretrained writes the finalized model
    model.save_pretrained(tmp_path / "saved")
    with pytest.raises(SubnetsError, match="parametrization keys"):
        model.save_pretrained(tmp_path / "raw", state_dict=model.state_dict())
    assert not (tmp_path / "raw").exists()
    with pytest.raises(SubnetsError, match="retrain was given a gated model"):
        retrain(model, tokenizer, {}, task, data, tmp_path / "retrain", max_steps=1)
    assert not (tmp_path / "retrain").exists()
    with pytest.raises(SubnetsError, match="already carries"):
        subnets.attach(model, max_steps=1)
    with pytest.raises(SubnetsError, match="finalize"):
        subnets.fix_mask(model, {})
    ticket = {n: m.layout.expand(m.binary()) for n, m in attached_masks(model).items()}
    subnets.finalize(model)
    assert not attached_masks(model) and all(p.requires_grad for p in model.parameters())
    for name, weight in model.named_parameters():  # the original weights (not scaled by the gates), pruned exactly
        keep = ticket.get(name, torch.ones_like(weight, dtype=torch.bool))
        assert torch.equal(weight[keep], before[name][keep]) and bool((weight[~keep] == 0).all())
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert torch.equal(_logits(loaded, tokenizer), _logits(model, tokenizer))
    assert found["mask_ids"]
    with pytest.raises(SubnetsError, match="Unknown option.*imp_rate"):
        subnets.attach(model, "hard_concrete", max_steps=4, imp_rate=0.2)
    with pytest.raises(SubnetsError, match="own loop"):
        subnets.attach(model, "imp", max_steps=4)
    assert not attached_masks(model)


def _hf_trainer(model, tokenizer, data, tmp_path, handle, objective=None, **args):
    """SubnetsTrainer over the toolkit's data order: its epoch permutations, read sequentially, and the global RNG
    seeded before the first step as the toolkit's Trainer seeds it (the two differences docs/api.md names)."""
    from transformers import TrainerCallback, TrainingArguments

    class SeedAtFirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                torch.manual_seed(SEED)

    n = len(data.train)
    epochs = -(-STEPS * BATCH // n)
    order = np.concatenate([np.random.default_rng([SEED, e]).permutation(n) for e in range(epochs)])
    arguments = TrainingArguments(str(tmp_path / "hf"), max_steps=STEPS, per_device_train_batch_size=BATCH,
                                  seed=SEED, train_sampling_strategy="sequential", report_to="none", use_cpu=True,
                                  logging_steps=STEPS, disable_tqdm=True, **{"save_strategy": "no", **args})
    return subnets.SubnetsTrainer(model, arguments, train_dataset=data.train.select(order), eval_dataset=data.eval,
                                  processing_class=tokenizer, subnet=handle,
                                  objective=objective or subnets.make_objective(get_task("sst2")),
                                  callbacks=[SeedAtFirstStep()])


@pytest.mark.parametrize("method,options", [("hard_concrete", {"controller": "lagrangian", "mask_lr": 1.0,
                                                              "mask_pooler": True}),
                                            ("scores", {"threshold_interval": 4})])
def test_hf_trainer_search_gives_the_stage_mask(setup, tiny_data_dir, tmp_path, method, options):
    pytest.importorskip("accelerate")  # transformers.Trainer needs it
    task, model, tokenizer, data = setup
    stage_model, _ = tiny_model("bert", label_names=task.label_names)
    stage_model.load_state_dict(model.state_dict())
    for module in stage_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    search_mask(stage_model, tokenizer, task, data, tmp_path / "stage", method=method, target_sparsity=0.3,
                max_steps=STEPS, per_device_train_batch_size=BATCH, seed=SEED, eval_strategy="no", report_to="none",
                disable_tqdm=True, mask_store=str(tmp_path / "store"), **options)
    stage_ticket = load_file(tmp_path / "stage" / "checkpoint-best" / "mask.safetensors")
    stage_state = load_file(tmp_path / "stage" / "checkpoint-best" / "mask_state.safetensors")

    handle = subnets.attach(model, method, max_steps=STEPS, target_sparsity=0.3, **options)
    trainer = _hf_trainer(model, tokenizer, data, tmp_path, handle)
    trainer.train()
    assert handle.global_step == STEPS
    ticket = handle.mask()
    assert ticket.keys() == stage_ticket.keys()
    assert all(torch.equal(ticket[n], stage_ticket[n]) for n in ticket)
    state = handle.state()
    assert all(torch.equal(state[n], stage_state[n]) for n in state)  # the trained gates / scores, bit for bit
    assert 0 < handle.sparsity() < 1
    assert any("sparsity/global" in entry for entry in trainer.state.log_history)


def test_hf_trainer_fixed_mask_retraining(setup, tmp_path):
    pytest.importorskip("accelerate")
    task, model, tokenizer, data = setup
    weights = {t: model.get_parameter(t).detach().clone() for t in ("bert.encoder.layer.0.attention.self.query.weight",
                                                                    "bert.encoder.layer.1.output.dense.weight")}
    ticket = {n: torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) > 0.3 for n, w in weights.items()}
    handle = subnets.fix_mask(model, ticket)
    trainer = _hf_trainer(model, tokenizer, data, tmp_path, handle, learning_rate=1e-2, weight_decay=0.1)
    trainer.train()
    for name, keep in ticket.items():
        weight = model.get_parameter(name)
        assert bool((weight[~keep] == 0).all())  # pruned: exact zeros after weight decay and momentum
        assert not torch.equal(weight[keep], weights[name][keep])  # kept: trained
    pruned = sum(int((~m).sum()) for m in ticket.values())
    assert handle.sparsity() == pruned / sum(m.numel() for m in ticket.values())


def test_dir_lists_the_api():
    names = dir(subnets)
    for name in ("attach", "fix_mask", "finalize", "make_objective", "SubnetsTrainer", "search_mask", "retrain"):
        assert name in names and callable(getattr(subnets, name))


@pytest.mark.parametrize("example", ["plain PyTorch", "transformers.Trainer", "accelerate"])
def test_docs_examples_run(example, tmp_path, tiny_model_dir, monkeypatch, capsys):
    """docs/api.md's three loops run as written (a tiny model in place of minilm) and leave what they say."""
    if example != "plain PyTorch":
        pytest.importorskip("accelerate")
    import csv
    import re

    from conftest import REPO

    text = (REPO / "docs" / "api.md").read_text()
    code = re.search(rf"```python\n(# bring your own loop: {re.escape(example)}\n.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    rows = [("a great and moving film", "pos"), ("a dull and boring mess", "neg")] * 8
    for name in ("train.csv", "dev.csv"):
        with open(name, "w", newline="") as f:
            csv.writer(f).writerows([("sentence", "label"), *rows])
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "__main__", "MODEL": str(tiny_model_dir())})
    assert re.search(r"ticket sparsity 0\.300", capsys.readouterr().out)
    if example == "plain PyTorch":
        saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "runs" / "loop-ticket")
        zeros = sum(int((p == 0).sum()) for n, p in saved.named_parameters() if "encoder" in n and "weight" in n)
        assert zeros > 0


def test_hf_trainer_runs_a_debiasing_objective(setup, tmp_path):
    """PoE against a uniform bias model is cross-entropy: the same weights after HF runs of either objective (so the
    batches reach the loss with their example ids)."""
    pytest.importorskip("accelerate")
    from subnets.objectives import PredictionCache, dataset_fingerprint

    task, model, tokenizer, data = setup
    ids, labels = np.asarray(data.train["idx"]), np.asarray(data.train["labels"])
    PredictionCache(ids, np.full((len(ids), 2), 0.5, np.float32), labels, task.name,
                    dataset_fingerprint(ids, labels)).save(tmp_path / "bias.safetensors")
    start = {n: p.detach().clone() for n, p in model.state_dict().items()}
    ticket = {"bert.encoder.layer.0.output.dense.weight": torch.ones(32, 64, dtype=torch.bool)}
    trained = []
    for debias in ("none", "poe"):
        model.load_state_dict(start)
        handle = subnets.fix_mask(model, ticket)
        options = {"bias_predictions": str(tmp_path / "bias.safetensors")} if debias == "poe" else {}
        objective = subnets.make_objective(task, data.train, debias=debias, **options)
        _hf_trainer(model, tokenizer, data, tmp_path / debias, handle, objective, learning_rate=1e-3,
                    remove_unused_columns=False).train()
        trained.append({n: p.detach().clone() for n, p in model.state_dict().items()})
    assert not torch.equal(trained[0]["classifier.weight"], start["classifier.weight"])
    with pytest.raises(SubnetsError, match="Unknown option.*bias_predictions"):
        subnets.make_objective(task, data.train, adversary="freelb", bias_predictions="bias.safetensors")
    for name in start:
        torch.testing.assert_close(trained[1][name], trained[0][name])


def test_hf_trainer_refusals(setup, tmp_path):
    pytest.importorskip("accelerate")
    task, model, tokenizer, data = setup
    handle = subnets.attach(model, "scores", max_steps=STEPS - 1, target_sparsity=0.3)
    with pytest.raises(SubnetsError, match="load_best_model_at_end"):
        _hf_trainer(model, tokenizer, data, tmp_path, handle, load_best_model_at_end=True, eval_steps=4,
                    eval_strategy="steps", save_strategy="steps", save_steps=4)
    with pytest.raises(SubnetsError, match="another model"):
        _hf_trainer(tiny_model("bert", label_names=task.label_names)[0], tokenizer, data, tmp_path, handle)
    trainer = _hf_trainer(model, tokenizer, data, tmp_path, handle)
    with pytest.raises(SubnetsError, match="cannot resume"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(SubnetsError, match=f"runs {STEPS} optimizer steps.*max_steps={STEPS - 1}"):
        trainer.train()
