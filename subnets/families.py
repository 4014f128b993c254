"""The family table: where each prunable role lives in a transformer block, per `config.model_type`.

One entry per family (docs/families.md renders the table). Paths are module names: `layers` under the model's
base model (`model.base_model`), every other path under one block of that list. Roles:

* `query`, `key`, `value`: separate projections, or `qkv`: one fused projection whose output features are the
  query, key and value parts in that order (query: heads x head_dim, key and value: kv_heads x head_dim);
* `attn_out`: the attention output projection;
* `ffn_in` (the "up" projection) with, in gated MLPs, `ffn_gate` (the one passed through the activation), or
  `ffn_gate_up`: one fused projection whose output features are the gate half then the up half;
* `ffn_out`: the FFN output ("down") projection.

`coupled_rows` are projections that are not pruning targets but whose output features follow the heads (DeBERTa's
relative-position projections), so a compact export removes their rows with the heads. `size_attributes` are the
integer attributes of the attention module that its forward reads and that a compact export must set: to the kept
number of query `heads`, of `kv_heads`, or to the kept query `width` (heads x head_dim); a name starting with
`config.` is an attribute of the config the attention module reads (Phi-3), which the export gives each block its
own copy of. `last_token_head`: the classification head pools the last token that is not padding, which it finds
from `input_ids` (decoders). Head counts come from the config (`num_attention_heads`, and `num_key_value_heads`
for grouped-query attention); the head dimension is the query width divided by the number of heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FUSED_ROLES = {"qkv": ("query", "key", "value"), "ffn_gate_up": ("ffn_gate", "ffn_in")}
"""Fused role -> the roles of its output-feature parts, in order."""


@dataclass(frozen=True)
class Family:
    """Where the roles of one family's transformer blocks live (see the module docstring)."""

    layers: str
    attention: str
    roles: dict[str, str]
    coupled_rows: tuple[str, ...] = ()
    size_attributes: dict[str, str] = field(default_factory=dict)
    kv_heads: str | None = None
    last_token_head: bool = False

    def role_paths(self) -> dict[str, str]:
        """Module path within a block -> role (fused roles under their fused name)."""
        return {path: role for role, path in self.roles.items()}


_BERT = Family(
    layers="encoder.layer", attention="attention.self",
    roles={"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
           "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
    size_attributes={"num_attention_heads": "heads", "all_head_size": "width"},
)
_DEBERTA_V2 = Family(
    layers="encoder.layer", attention="attention.self",
    roles={"query": "attention.self.query_proj", "key": "attention.self.key_proj",
           "value": "attention.self.value_proj", "attn_out": "attention.output.dense", "ffn_in": "intermediate.dense",
           "ffn_out": "output.dense"},
    coupled_rows=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
    size_attributes={"num_attention_heads": "heads", "all_head_size": "width"},
)
_DISTILBERT = Family(
    layers="transformer.layer", attention="attention",
    roles={"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
           "attn_out": "attention.out_lin", "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
    size_attributes={"n_heads": "heads"},
)
_MODERNBERT = Family(
    layers="layers", attention="attn",
    roles={"qkv": "attn.Wqkv", "attn_out": "attn.Wo", "ffn_gate_up": "mlp.Wi", "ffn_out": "mlp.Wo"},
)
_GPT2 = Family(
    layers="h", attention="attn",
    roles={"qkv": "attn.c_attn", "attn_out": "attn.c_proj", "ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"},
    size_attributes={"num_heads": "heads", "split_size": "width"}, last_token_head=True,
)
_LLAMA = Family(
    layers="layers", attention="self_attn",
    roles={"query": "self_attn.q_proj", "key": "self_attn.k_proj", "value": "self_attn.v_proj",
           "attn_out": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_in": "mlp.up_proj",
           "ffn_out": "mlp.down_proj"},
    kv_heads="num_key_value_heads", last_token_head=True,
)
_PHI3 = Family(
    layers="layers", attention="self_attn",
    roles={"qkv": "self_attn.qkv_proj", "attn_out": "self_attn.o_proj", "ffn_gate_up": "mlp.gate_up_proj",
           "ffn_out": "mlp.down_proj"},
    size_attributes={"config.num_attention_heads": "heads", "num_key_value_heads": "kv_heads"},
    kv_heads="num_key_value_heads", last_token_head=True,
)

FAMILIES: dict[str, Family] = {
    "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT, "deberta-v2": _DEBERTA_V2,
    "distilbert": _DISTILBERT, "modernbert": _MODERNBERT, "gpt2": _GPT2, "llama": _LLAMA, "qwen2": _LLAMA,
    "qwen3": _LLAMA, "mistral": _LLAMA, "phi3": _PHI3,
}
"""`config.model_type` -> its family entry (DeBERTa-v3 checkpoints have model_type "deberta-v2")."""


def family_of(model_type: str | None) -> Family | None:
    """The table entry of a model type, None when the family is not in the table."""
    return FAMILIES.get(model_type or "")


def role_of_path(path: str) -> str | None:
    """The role of a module path within a block, by any family's naming (for names without a model at hand)."""
    return _ROLE_BY_PATH.get(path)


_ROLE_BY_PATH = {path: role for family in FAMILIES.values() for path, role in family.role_paths().items()}
