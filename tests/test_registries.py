"""Method registries: a typo is refused while parsing; a new mask method, adversary or selective optimizer is one
option group plus a builder plus one registry line; one --mask_store receives every record of a run."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import pytest
import torch

import subnets
from subnets.masks import MaskStore
from subnets.pipelines import stage1_finetune, stage2_search
from subnets.pipelines.common import run_cli
from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.weights import apply_masks
from subnets.masking.methods import MASK_METHODS, FoundMask, SearchContext
from subnets.objectives import ADVERSARIES, AscentArguments, ObjectiveArguments, PGDArguments, build_objective
from subnets.objectives import RoASTAdversaryArguments, RoASTPerturbation
from subnets.objectives.losses import LossFn, LossObjective
from subnets.registry import Method
from subnets.selective import SELECTIVE_METHODS, SelectiveArguments, SelectiveSetup, build_selective
from subnets.selective.setup import SelectiveContext
from subnets.store_options import MaskStoreArguments
from subnets.tasks import get_task
from subnets.training import Trainer


def tiny_argv(model_dir, data_dir, out, *extra):
    return [str(a) for a in ["--model_name_or_path", model_dir, "--task_name", "sst2", "--data_dir", data_dir,
                             "--output_dir", out, "--max_steps", "2", "--per_device_train_batch_size", "16",
                             "--disable_tqdm", "true", "--max_seq_length", "16", "--report_to", "none", *extra]]


@pytest.mark.parametrize("option, value", [("method", "hc"), ("adversary", "fgsm"), ("debias", "product"),
                                           ("selective", "rose"), ("controller", "pid"), ("adv_norm", "l1")])
def test_a_typo_in_a_choice_is_one_error_line_while_parsing(capsys, monkeypatch, tmp_path, option, value):
    monkeypatch.setattr(sys, "argv", ["subnets-search", "--output_dir", str(tmp_path / "o"), f"--{option}", value])
    assert run_cli(stage2_search.main) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Argument --{option}") and f"invalid choice: '{value}'" in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_typo_in_a_recipe_choice_is_refused_while_parsing(capsys, monkeypatch, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: hard_concret\n")
    monkeypatch.setattr(sys, "argv", ["subnets-search", "--output_dir", str(tmp_path / "o"), "--recipe", str(recipe)])
    assert run_cli(stage2_search.main) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown --method 'hard_concret'; expected one of hard_concrete, scores") and \
        err.count("\n") == 1, err


def test_the_roast_adversary_reads_its_own_options_and_refuses_the_freelb_ones():
    task = get_task("sst2")
    roast = build_objective(ObjectiveArguments(adversary="roast"), task, None,
                            options=[RoASTAdversaryArguments(roast_eps=0.3, roast_adv_weight=0.25, adv_kl_weight=0.5)])
    assert isinstance(roast, RoASTPerturbation) and (roast.eps, roast.adv_weight, roast.kl_weight) == (0.3, 0.25, 0.5)
    pgd = build_objective(ObjectiveArguments(adversary="pgd"), task, None,
                          options=[AscentArguments(adv_lr=0.2, adv_max_norm=1.0)])
    assert (pgd.cfg.lr, pgd.weight) == (0.2, 1.0)
    for old in (AscentArguments(adv_lr=0.2), PGDArguments(adv_weight=0.5)):
        with pytest.raises(SubnetsError, match="takes its perturbation size from --roast_eps"):
            build_objective(ObjectiveArguments(adversary="roast"), task, None, options=[old])


# ---- a new mask method: its option group and builder (what its new file holds), then one registry line ----------

@dataclass
class StripeArguments:
    config_group = "SearchArguments"

    stripe_stride: int = field(default=2, metadata={"help": "Stripes: prune every stride-th element."})


def search_stripes(context: SearchContext) -> FoundMask:
    stride = context.options[StripeArguments].stripe_stride
    ticket = {t.name: (torch.arange(torch.Size(t.shape).numel()) % stride != 0).view(t.shape) for t in context.targets}
    apply_masks(context.model, ticket)
    return FoundMask(ticket, None, context.make_trainer(context.output_dir, []).evaluate())


def test_a_new_mask_method_is_one_registry_line(monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir):
    monkeypatch.setitem(MASK_METHODS, "stripes", Method(search_stripes, (StripeArguments,)))
    task = subnets.load_task("sst2")
    model, tokenizer = subnets.load_model(tiny_model_dir("bert"), task)
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir, max_seq_length=16, max_eval_samples=16)
    store = tmp_path / "store"
    found = subnets.search_mask(model, tokenizer, task, data, tmp_path / "run", method="stripes", stripe_stride=4,
                                mask_store=store, report_to="none", disable_tqdm=True)
    assert found["method"] == "stripes" and "eval_accuracy" in found and set(found["mask_ids"]) == {"ticket"}
    assert found["sparsity"] == pytest.approx(0.25, abs=0.01)
    record = MaskStore(store).get(found["mask_ids"]["ticket"])
    assert record.meta["config"]["stripe_stride"] == 4 and record.meta["method"] == "stripes"
    ticket = record.masks
    assert all(not m.flatten()[::4].any() and m.flatten()[1::4].all() for m in ticket.values())


# ---- a new adversary --------------------------------------------------------------------------------------------

@dataclass
class ScaledArguments:
    config_group = "ObjectiveArguments"

    loss_scale_factor: float = field(default=1.0, metadata={"help": "Scaled: multiply the loss by this factor."})


class ScaledLoss(LossObjective):
    def __init__(self, factor: float, loss_fn: LossFn) -> None:
        super().__init__(loss_fn)
        self.factor = factor

    def __call__(self, model, batch, loss_scale: float = 1.0) -> torch.Tensor:
        return super().__call__(model, batch, loss_scale * self.factor) * self.factor


def test_a_new_adversary_is_one_registry_line(monkeypatch, tiny_bert):
    monkeypatch.setitem(ADVERSARIES, "scaled",
                        Method(lambda context: ScaledLoss(context.options[ScaledArguments].loss_scale_factor,
                                                          context.loss_fn), (ScaledArguments,)))
    model, tokenizer = tiny_bert
    batch = dict(tokenizer(["a fine film", "a dull plot"], return_tensors="pt", padding=True),
                 labels=torch.tensor([1, 0]), idx=torch.tensor([0, 1]))
    model.eval()
    objective = build_objective(ObjectiveArguments(adversary="scaled"), get_task("sst2"), None,
                                options=[ScaledArguments(loss_scale_factor=3.0)])
    loss = objective(model, batch, 1.0)
    scaled = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    clean = LossObjective()(model, batch, 1.0)
    torch.testing.assert_close(loss, 3 * clean)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(scaled[name], 3 * p.grad)


# ---- a new selective optimizer ----------------------------------------------------------------------------------

@dataclass
class SGDArguments:
    config_group = "SelectiveArguments"

    sgd_momentum: float = field(default=0.0, metadata={"help": "SGD: momentum."})


def build_sgd(context: SelectiveContext) -> SelectiveSetup:
    momentum = context.options[SGDArguments].sgd_momentum
    return SelectiveSetup(lambda groups, training: torch.optim.SGD(groups, lr=training.learning_rate,
                                                                   momentum=momentum))


def test_a_new_selective_optimizer_is_one_registry_line(monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir):
    monkeypatch.setitem(SELECTIVE_METHODS, "sgd", Method(build_sgd, (SGDArguments,)))
    setup = build_selective(SelectiveArguments(selective="sgd"), options=[SGDArguments(sgd_momentum=0.5)])
    task = subnets.load_task("sst2")
    model, tokenizer = subnets.load_model(tiny_model_dir("bert"), task)
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir, max_seq_length=16, max_eval_samples=16)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=16,
                             report_to="none", disable_tqdm=True, eval_strategy="no")
    trainer = Trainer(model, args, task, data.train, data.eval, tokenizer, optimizer_factory=setup.optimizer_factory)
    trainer.train()
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.5 and trainer.global_step == 1


# ---- one mask store ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("selective", ["rose_second", "roast"])
def test_one_mask_store_receives_tickets_states_and_update_masks(monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir,
                                                                 selective):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUBNETS_MASK_STORE", raising=False)
    finetuned, store = tmp_path / "ft", tmp_path / "X"
    stage1_finetune.main(tiny_argv(tiny_model_dir("bert"), tiny_data_dir, finetuned))
    search = tmp_path / "search"
    # IMP trains the weights (under its fixed mask), so a selective optimizer runs in the search
    metrics = stage2_search.main(tiny_argv(finetuned, tiny_data_dir, search, "--method", "imp", "--imp_rate", "0.1",
                                           "--target_sparsity", "0.1",
                                           "--mask_store", store, "--selective", selective, "--update_mask_every", "1",
                                           "--roast_fisher_batches", "1"))
    kinds = {record.meta["kind"] for record in MaskStore(store).list()}
    assert kinds == {"ticket", "state", "update"}
    update_id = json.loads((search / "round-1" / "update_masks.json").read_text())["update_log_id"]
    assert MaskStore(store).get(update_id).meta["method"] == selective
    assert set(metrics["mask_ids"]) == {"ticket", "state"}
    assert not (tmp_path / "masks_store").exists()


def test_update_mask_store_is_gone(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["subnets-finetune", "--output_dir", str(tmp_path / "o"), "--update_mask_store",
                                      str(tmp_path / "s")])
    assert run_cli(stage1_finetune.main) == 2
    assert "--update_mask_store" in capsys.readouterr().err
    assert MaskStoreArguments(str(tmp_path / "s")).root == tmp_path / "s"
