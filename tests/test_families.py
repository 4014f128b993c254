"""Every family of the family table on a tiny random model: targets and their roles, mask layouts (fused
projections, grouped-query attention, gated MLPs), compact export, decoder padding, the unknown-architecture
fallback, and the whole stage 1 -> 2 -> 3 -> attack chain for representative families."""

import copy
import json

import datasets
import pytest
import torch
from transformers import OPTConfig, OPTForSequenceClassification

from subnets.data import tokenize
from subnets.errors import SubnetsError
from subnets.export import (
    COMPACT_CONFIG_KEY,
    apply_structured_masks,
    compact_export,
    load_compact,
    save_compact,
    structured_masks_from_weight_masks,
)
from subnets.families import FAMILIES, role_of_path
from subnets.masking import attach_hard_concrete, binary_mask
from subnets.masking.methods.hard_concrete import expected_density
from subnets.masking.layout import encoder_layers, layout_for
from subnets.models import TINY_FAMILIES, load_classifier, tiny_model
from subnets.sparsity import sparsity_report
from subnets.tasks import get_task
from subnets.targets import classify_parameter, find_encoder_layers, find_targets, targets_from_names
from subnets.weights import save_plain_model

HIDDEN, HEADS, HEAD_DIM, INTERMEDIATE = 32, 4, 8, 64  # tiny_model sizes
GQA_KINDS = ("llama", "qwen2", "qwen3", "mistral", "phi3")  # 2 key/value heads for 4 query heads
GATED_KINDS = ("modernbert", "llama", "qwen2", "qwen3", "mistral", "phi3")
FUSED_KINDS = {"modernbert": ("qkv", "ffn_gate_up"), "gpt2": ("qkv",), "phi3": ("qkv", "ffn_gate_up")}
TEXTS = ["a tiny test sentence that is longer than the others", "short one", "the third example , with a comma"]


def kv_heads(kind):
    return 2 if kind in GQA_KINDS else HEADS


def inputs(tokenizer):
    return dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def sharpened(model):
    """Scale Q and K (fused parts included) so that attention is far from uniform and a wrong head split shows."""
    with torch.no_grad():
        for target in find_targets(model):
            weight = model.get_parameter(target.name)
            for role, start, stop in target.role_slices():
                if role in ("query", "key"):
                    weight.narrow(target.out_axis, start, stop - start).mul_(30)
    return model


def uneven_masks(kind, seed=0):
    """Layer 0 keeps one head unit, layer 1 all but the first; neurons at different rates per layer."""
    units = kv_heads(kind)
    g = torch.Generator().manual_seed(seed)
    heads = {0: torch.arange(units) == units - 1, 1: torch.arange(units) != 0}
    neurons = {0: torch.rand(INTERMEDIATE, generator=g) < 0.3, 1: torch.rand(INTERMEDIATE, generator=g) < 0.8}
    return heads, neurons


def test_every_tiny_family_is_in_the_table_and_paths_name_one_role():
    for kind in TINY_FAMILIES:
        model, _ = tiny_model(kind, num_layers=1)
        assert model.config.model_type in FAMILIES
    for family in FAMILIES.values():
        for path, role in family.role_paths().items():
            assert role_of_path(path) == role


@pytest.mark.parametrize("kind", TINY_FAMILIES)
def test_targets_have_the_right_roles_and_shapes(kind):
    model, _ = tiny_model(kind, num_layers=3)
    assert len(find_encoder_layers(model)) == 3
    targets = find_targets(model)
    expected = {"query": HEADS * HEAD_DIM, "key": kv_heads(kind) * HEAD_DIM, "value": kv_heads(kind) * HEAD_DIM,
                "ffn_in": INTERMEDIATE}
    if kind in GATED_KINDS:
        expected["ffn_gate"] = INTERMEDIATE
    params = dict(model.named_parameters())
    for layer in range(3):
        in_layer = [t for t in targets if t.layer == layer]
        fused = {t.kind for t in in_layer if t.parts}
        assert fused == set(FUSED_KINDS.get(kind, ()))
        out_sizes = {role: stop - start for t in in_layer for role, start, stop in t.role_slices()}
        assert {k: v for k, v in out_sizes.items() if k not in ("attn_out", "ffn_out")} == expected
        for t in in_layer:
            assert params[t.name].shape == t.shape
            in_features = {"attn_out": HEADS * HEAD_DIM, "ffn_out": INTERMEDIATE}.get(t.kind, HIDDEN)
            assert t.shape[1 - t.out_axis] == in_features
            assert classify_parameter(model, t.name) == (t.layer, t.kind)
    recovered = targets_from_names({t.name: t.shape for t in targets})
    assert [t.kind for t in recovered] == [t.kind for t in targets]
    head = find_targets(model, classifier=True)
    assert [t.shape[0] for t in head if t.kind == "classifier"][-1] == 2


@pytest.mark.parametrize("kind", TINY_FAMILIES)
def test_compact_export_matches_the_masked_model_and_round_trips(kind, tmp_path):
    model, tokenizer = tiny_model(kind)
    sharpened(model)
    heads, neurons = uneven_masks(kind)
    batch = inputs(tokenizer)
    masked = copy.deepcopy(model)
    apply_structured_masks(masked, heads, neurons)
    compact = compact_export(model, heads, neurons)
    expected = logits(masked, batch)
    torch.testing.assert_close(logits(compact, batch), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(logits(model, batch), expected, atol=1e-4)  # the masks matter
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in model.parameters())
    group = HEADS // kv_heads(kind)
    sizes = {t.kind: t.role_slices() for t in find_targets(compact) if t.layer == 0}
    query = next(stop - start for kind_, parts in sizes.items() for role, start, stop in parts if role == "query")
    assert query == group * HEAD_DIM  # one unit kept in layer 0: its query heads
    structure = getattr(compact.config, COMPACT_CONFIG_KEY)
    assert structure["query_heads_per_unit"] == group and "load_compact" in structure["config_sizes"]
    save_compact(compact, tokenizer, tmp_path / "compact")
    loaded = load_compact(tmp_path / "compact")
    torch.testing.assert_close(logits(loaded, batch), logits(compact, batch), atol=0, rtol=0)


@pytest.mark.parametrize("kind", TINY_FAMILIES)
def test_structured_gates_form_whole_units_that_export_reads_back(kind):
    """Hard-concrete gates per head unit and neuron, set to one decision per unit, give weight masks whose units
    (fused parts, GQA groups, gate/up/down) the export reads back as that decision."""
    model, _ = tiny_model(kind)
    targets = find_targets(model)
    heads, neurons = uneven_masks(kind, seed=3)
    gates = attach_hard_concrete(model, targets, granularity="structured")
    assert set(gates) == {t.name for t in targets}
    by_name = {t.name: t for t in targets}
    with torch.no_grad():
        for name, gate in gates.items():
            target = by_name[name]
            attention = target.kind in ("query", "key", "value", "attn_out", "qkv")
            decision = (heads if attention else neurons)[target.layer]
            parts = len(gate.layout.segments)
            gate.log_alpha.copy_(torch.where(decision.repeat(parts), 5.0, -5.0))
    model.eval()
    assert 0 < float(expected_density(gates).detach()) < 1
    got_heads, got_neurons = structured_masks_from_weight_masks(model, binary_mask(gates))
    assert all(torch.equal(got_heads[i], heads[i]) and torch.equal(got_neurons[i], neurons[i]) for i in heads)


def test_grouped_query_attention_masks_a_kv_head_with_its_query_heads():
    model, tokenizer = tiny_model("llama")
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    layer = encoder_layers(model)[0]
    assert layer.num_heads == 2 and layer.group_size == 2 and layer.head_size == HEAD_DIM
    widths = {s.target.kind: (s.units, s.width) for s in layer.heads}
    assert widths == {"query": (2, 16), "key": (2, 8), "value": (2, 8), "attn_out": (2, 16)}
    sharpened(model)
    heads = {0: torch.tensor([False, True]), 1: torch.tensor([True, False])}
    compact = compact_export(model, heads, {})
    attention = compact.model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (16, HIDDEN) and attention.k_proj.weight.shape == (8, HIDDEN)
    assert attention.o_proj.weight.shape == (HIDDEN, 16) and attention.num_key_value_groups == 2
    masked = copy.deepcopy(model)
    apply_structured_masks(masked, heads, {})
    torch.testing.assert_close(logits(compact, inputs(tokenizer)), logits(masked, inputs(tokenizer)), atol=1e-5, rtol=0)
    # the kept query heads are those of the kept kv head: rows 16..31 of q_proj, rows 8..15 of k_proj
    q = model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(attention.q_proj.weight, q[16:])


@pytest.mark.parametrize("kind", ["modernbert", "gpt2", "phi3"])
def test_a_fused_projection_is_masked_and_reported_per_role(kind):
    model, _ = tiny_model(kind)
    targets = find_targets(model)
    qkv = next(t for t in targets if t.kind == "qkv" and t.layer == 0)
    mask = {t.name: torch.ones(t.shape, dtype=torch.bool) for t in targets}
    (_, q0, q1), (_, k0, k1), _ = qkv.role_slices()
    mask[qkv.name].narrow(qkv.out_axis, q0, (q1 - q0) // 2).fill_(False)  # half of the query part only
    report = sparsity_report(mask, targets)
    assert report.per_layer_kind[(0, "query")] == 0.5
    assert report.per_layer_kind[(0, "key")] == 0 and report.per_layer_kind[(0, "value")] == 0
    assert report.per_kind["query"] == 0.25 and "qkv" not in report.per_kind
    assert report.per_tensor[qkv.name] == pytest.approx((q1 - q0) / 2 / qkv.shape[qkv.out_axis])
    # at head granularity each part has its own head-unit entries, as the unfused q/k/v matrices would
    layout = layout_for(qkv, "head", HEADS, kv_heads(kind))
    group = HEADS // kv_heads(kind)
    units = kv_heads(kind)
    assert layout.axis == qkv.out_axis
    assert layout.segments == ((units, group * HEAD_DIM), (units, HEAD_DIM), (units, HEAD_DIM))
    values = torch.arange(3 * units, dtype=torch.float)
    expanded = layout.expand(values)
    channel = expanded if qkv.out_axis == 1 else expanded.T  # [input, output features]
    assert channel[0, k0].item() == units and channel[0, k0 - 1].item() == units - 1
    assert channel[0, k1].item() == 2 * units
    gate_up = [t for t in targets if t.kind == "ffn_gate_up"]
    if gate_up:
        assert layout_for(gate_up[0], "neuron").segments == ((INTERMEDIATE, 1), (INTERMEDIATE, 1))


def test_mask_search_logs_a_fused_projection_per_role():
    from types import SimpleNamespace

    from subnets.masking.callbacks import MaskSearchCallback

    model, _ = tiny_model("phi3")
    gates = attach_hard_concrete(model, find_targets(model), granularity="weight")
    model.eval()
    scalars = MaskSearchCallback(gates, lr=0.1).log_scalars(SimpleNamespace(model=model))
    roles = {tag.rsplit("/", 1)[1] for tag in scalars if tag.startswith("sparsity/kind/")}
    assert roles == {"query", "key", "value", "attn_out", "ffn_gate", "ffn_in", "ffn_out"}


def tiny_opt():
    config = OPTConfig(vocab_size=200, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                       max_position_embeddings=64, word_embed_proj_dim=16)
    torch.manual_seed(0)
    return OPTForSequenceClassification(config)


def test_an_unknown_architecture_falls_back_to_unstructured_targets_with_a_warning():
    model = tiny_opt()
    with pytest.warns(UserWarning, match="'opt'.*not in the family table"):
        targets = find_targets(model)
    per_block = sum(isinstance(m, torch.nn.Linear) for m in find_encoder_layers(model)[0].modules())
    assert len(targets) == 2 * per_block and {t.kind for t in targets} == {"other"}
    assert {t.layer for t in targets} == {0, 1}
    gates = attach_hard_concrete(model, targets, granularity="weight")
    assert len(gates) == len(targets)
    for granularity in ("head", "neuron", "structured"):
        with pytest.raises(SubnetsError, match="not in the family table.*--granularity weight"):
            attach_hard_concrete(tiny_opt(), targets, granularity=granularity)
    with pytest.raises(SubnetsError, match="not in the family table"):
        compact_export(tiny_opt(), {}, {})


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_decoder_without_a_pad_token_gets_eos_and_pools_its_last_real_token(kind, tmp_path):
    model, tokenizer = tiny_model(kind)
    assert tokenizer.pad_token == tokenizer.eos_token and model.config.pad_token_id == tokenizer.eos_token_id
    tokenizer.pad_token = None  # saved as a decoder tokenizer ships: no pad token
    save_plain_model(model, tokenizer, tmp_path / "decoder")
    config = json.loads((tmp_path / "decoder" / "config.json").read_text())
    config["pad_token_id"] = None
    (tmp_path / "decoder" / "config.json").write_text(json.dumps(config))
    loaded, loaded_tokenizer = load_classifier(tmp_path / "decoder")
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token
    assert loaded.config.pad_token_id == loaded_tokenizer.pad_token_id
    batch = dict(loaded_tokenizer(TEXTS, padding=True, return_tensors="pt"))
    assert (batch["input_ids"] == loaded_tokenizer.pad_token_id).any()  # the batch is padded
    together = logits(loaded, batch)
    alone = torch.cat([logits(loaded, dict(loaded_tokenizer([t], return_tensors="pt"))) for t in TEXTS])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    task = get_task("sst2")
    dataset = tokenize(datasets.Dataset.from_dict({"sentence": TEXTS, "label": [0, 1, 0]}), loaded_tokenizer, task, 6)
    assert max(len(ids) for ids in dataset["input_ids"]) == 6  # --max_seq_length truncates
    assert set(dataset.column_names) == {"input_ids", "attention_mask", "labels"}


@pytest.mark.parametrize("objective", ["freelb", "pgd"])
def test_embedding_adversaries_refuse_a_last_token_head(objective):
    from subnets.objectives import PGD, FreeLB, PerturbationConfig

    model, tokenizer = tiny_model("llama")
    batch = {**inputs(tokenizer), "labels": torch.tensor([0, 1, 0])}
    config = PerturbationConfig(steps=1, max_norm=0.1)
    adversary = FreeLB(config) if objective == "freelb" else PGD(config)
    with pytest.raises(SubnetsError, match="last non-padding token"):
        adversary(model, batch)
    encoder, encoder_tokenizer = tiny_model("modernbert")
    assert adversary(encoder, {**inputs(encoder_tokenizer), "labels": torch.tensor([0, 1, 0])}).isfinite()


# --- stage 1 -> stage 2 -> stage 3 -> evaluate --attack textbugger -------------------------------------------------

E2E_KINDS = ["bert", "modernbert", "gpt2", "llama", "phi3"]


@pytest.fixture(scope="module")
def e2e_data(tmp_path_factory):
    from subnets.toydata import write_toy_neighbours, write_toy_task

    root = tmp_path_factory.mktemp("families") / "data"
    write_toy_task(root, "sst2", train=16, evaluation=8)
    write_toy_neighbours(root)
    return root


def _argv(data, out, model):
    return ["--model_name_or_path", str(model), "--task_name", "sst2", "--data_dir", str(data), "--output_dir",
            str(out), "--per_device_train_batch_size", "8", "--num_train_epochs", "1", "--disable_tqdm", "true",
            "--logging_steps", "1", "--max_seq_length", "12", "--learning_rate", "1e-3"]


@pytest.mark.parametrize("kind", E2E_KINDS)
def test_every_stage_and_an_attack_run_on_the_family(kind, e2e_data, tmp_path, monkeypatch):
    from subnets.pipelines import evaluate, stage1_finetune, stage2_search, stage3_retrain

    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    pretrained = tmp_path / "pretrained"
    save_plain_model(*tiny_model(kind, label_names=["negative", "positive"]), pretrained)
    finetuned = tmp_path / "stage1"
    stage1_finetune.main(_argv(e2e_data, finetuned, pretrained))
    searches = {
        "weights": ["--method", "hard_concrete", "--target_sparsity", "0.5", "--mask_lr", "0.5"],
        "units": ["--method", "hard_concrete", "--granularity", "structured", "--target_sparsity", "0.5",
                  "--mask_lr", "0.5"],
        "imp": ["--method", "imp", "--target_sparsity", "0.19"],
    }
    for name, options in searches.items():
        metrics = stage2_search.main(_argv(e2e_data, tmp_path / name, finetuned) + options)
        assert "eval_accuracy" in metrics and 0 <= metrics["sparsity"] < 1
        matrices = 2 * {"bert": 6, "llama": 7}.get(kind, 4)  # per block: fused projections are one matrix each
        assert metrics["sparsity_denominator"].startswith(f"{matrices} encoder matrices")
        assert json.loads((tmp_path / name / "metrics.json").read_text())["sparsity"] == metrics["sparsity"]
    assert metrics["sparsity"] == pytest.approx(0.19, abs=0.01)  # IMP's one round prunes the target fraction
    retrained = tmp_path / "stage3"
    result = stage3_retrain.main(_argv(e2e_data, retrained, "unused")[2:] + [
        "--mask", str(tmp_path / "weights"), "--init", "finetuned", "--sparsity", "0.3"])
    assert result["sparsity"] == pytest.approx(0.3, abs=0.01)
    report = evaluate.main(["--checkpoint", str(retrained), "--tasks", "sst2", "--data_dir", str(e2e_data),
                            "--output_dir", str(tmp_path / "eval"), "--attack", "textbugger", "--attack_samples", "2",
                            "--attack_disable", "use"])
    (metrics,) = [task for checkpoint in report.values() for task in checkpoint.values() if "attack_config" in task]
    assert 0 <= metrics["accuracy_under_attack"] <= metrics["clean_accuracy"]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("selective", [["--selective", "rose_first"], ["--selective", "rose_second"],
                                       ["--selective", "roast", "--adversary", "roast", "--roast_fisher_batches", "1"]],
                         ids=["rose_first", "rose_second", "roast"])
def test_selective_methods_train_decoders(kind, selective, e2e_data, tmp_path, monkeypatch):
    # RoAST perturbs the word embeddings' output where the decoder has no separate embeddings block
    from subnets.pipelines import stage1_finetune

    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    pretrained = tmp_path / "pretrained"
    save_plain_model(*tiny_model(kind, label_names=["negative", "positive"]), pretrained)
    metrics = stage1_finetune.main(_argv(e2e_data, tmp_path / "run", pretrained) + selective)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["train_steps"] == 2
