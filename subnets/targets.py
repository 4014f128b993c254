"""Prunable targets: the weight matrices of a transformer's blocks, found through the family table.

Per block, the family table (`subnets.families`) names the module of each role: query / key / value or a fused
query-key-value projection, the attention output, the FFN in (up), gate or fused gate-up, and the FFN out. A fused
projection is one target whose `parts` name the role of each slice of its output features, so masks stay one
per weight matrix while sparsity is reported per role. An architecture missing from the table falls back to every
`nn.Linear` and `Conv1D` of its blocks (kind "other", unstructured masks only) with one warning; its blocks are the
longest `torch.nn.ModuleList` of same-class blocks holding such layers. The pooler, the classification head and
the word embeddings are optional targets.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch.nn.utils import parametrize

from .errors import SubnetsError
from .families import FUSED_ROLES, Family, family_of, role_of_path

MATRIX_KINDS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out", "pooler", "classifier", "word_embeddings")
ENCODER_KINDS = MATRIX_KINDS[:6]
OPTIONAL_KINDS = MATRIX_KINDS[6:]
LAYER_KINDS = ENCODER_KINDS + ("ffn_gate", *FUSED_ROLES)
"""Every per-block kind: BERT's six, the gate of a gated MLP, and the fused projections (`qkv`, `ffn_gate_up`)."""

_HEAD_NAMES = ("classifier", "pre_classifier", "score")


@dataclass(frozen=True)
class Target:
    """One prunable weight matrix.

    name: parameter name, e.g. "bert.encoder.layer.0.attention.self.query.weight" (never the parametrization's
    internal `...parametrizations.weight.original` name); module_name: the owning module; layer: block index, None
    for pooler / classifier / word_embeddings; kind: one of LAYER_KINDS + OPTIONAL_KINDS or "other"; shape: the
    weight shape; out_axis: the weight axis of the output features (1 for GPT-2's `Conv1D`, which stores the
    transposed weight); parts: for a fused projection, (role, start, stop) slices of the output features.
    """

    name: str
    module_name: str
    layer: int | None
    kind: str
    shape: tuple[int, ...]
    out_axis: int = 0
    parts: tuple[tuple[str, int, int], ...] = ()

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def role_slices(self) -> tuple[tuple[str, int, int], ...]:
        """(role, start, stop) along `out_axis`: the fused parts, or the whole matrix under its kind."""
        return self.parts or ((self.kind, 0, self.shape[self.out_axis]),)


def model_family(model: torch.nn.Module) -> Family | None:
    """The family table entry of `model` (by `config.model_type`), None for an architecture not in the table."""
    return family_of(getattr(getattr(model, "config", None), "model_type", None))


def find_encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks, in order (the family's layer list, or the fallback's longest ModuleList)."""
    return [module for _, module in _encoder_layer_list(model)]


def _prunable(module: torch.nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layer (here: the store loads no transformers)

    return isinstance(module, (torch.nn.Linear, Conv1D))


def _base_prefix(model: torch.nn.Module) -> str:
    base = getattr(model, "base_model", model)
    return next(name for name, module in model.named_modules() if module is base)


def _encoder_layer_list(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    family = model_family(model)
    if family is not None:
        prefix = _base_prefix(model)
        name = f"{prefix}.{family.layers}" if prefix else family.layers
        try:
            blocks = model.get_submodule(name)
        except AttributeError as e:
            raise SubnetsError(f"{type(model).__name__} has no module '{name}', where the family table expects its "
                               f"blocks (model type '{model.config.model_type}').") from e
        return [(f"{name}.{i}", b) for i, b in enumerate(blocks)]
    best: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) <= len(best):
            continue
        blocks = list(module)
        same_class = all(type(b) is type(blocks[0]) for b in blocks)
        if same_class and sum(_prunable(m) for m in blocks[0].modules()) >= 2:
            best = [(f"{name}.{i}", b) for i, b in enumerate(blocks)]
    if not best:
        raise SubnetsError(
            f"Could not find the transformer blocks of {type(model).__name__}: expected a ModuleList of identical "
            "blocks with linear layers."
        )
    return best


def _warn_unknown(model: torch.nn.Module) -> None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    warnings.warn(
        f"Model type {model_type!r} ({type(model).__name__}) is not in the family table (docs/families.md): every "
        "linear layer of its blocks is a target of kind 'other', for unstructured (per-weight) masks only."
    )


def _fused_parts(model: torch.nn.Module, family: Family, role: str, out_features: int) -> tuple:
    """The (role, start, stop) slices of a fused projection's output features."""
    roles = FUSED_ROLES[role]
    if role == "ffn_gate_up":
        half = out_features // 2
        return ((roles[0], 0, half), (roles[1], half, out_features))
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, family.kv_heads, None) if family.kv_heads else None
    kv_heads = kv_heads or heads
    head_dim, rest = divmod(out_features, heads + 2 * kv_heads)
    if rest:
        raise SubnetsError(f"The fused projection of {type(model).__name__} has {out_features} output features, not "
                           f"a multiple of {heads} query + 2 x {kv_heads} key/value heads.")
    q, kv = heads * head_dim, kv_heads * head_dim
    return ((roles[0], 0, q), (roles[1], q, q + kv), (roles[2], q + kv, q + 2 * kv))


def _weight_shape(module: torch.nn.Module) -> tuple[int, ...]:
    """The weight shape without evaluating a parametrization (which could sample a stochastic mask)."""
    if parametrize.is_parametrized(module, "weight"):
        return tuple(module.parametrizations.weight.original.shape)
    return tuple(module.weight.shape)


def _module_targets(model: torch.nn.Module) -> dict[str, Target]:
    """Every candidate target module name -> its Target, optional kinds included."""
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    family = model_family(model)
    if family is None:
        _warn_unknown(model)
    found: dict[str, Target] = {}

    def add(name: str, layer: int | None, kind: str) -> Target:
        module = modules[name]
        out_axis = 1 if isinstance(module, Conv1D) else 0
        found[name] = Target(f"{name}.weight", name, layer, kind, _weight_shape(module), out_axis)
        return found[name]

    for index, (prefix, block) in enumerate(_encoder_layer_list(model)):
        if family is None:
            for rel, module in block.named_modules():
                if _prunable(module):
                    add(f"{prefix}.{rel}", index, "other")
            continue
        for role, path in family.roles.items():
            name = f"{prefix}.{path}"
            if name not in modules:
                raise SubnetsError(f"{type(model).__name__} has no module '{name}', where the family table expects "
                                   f"its {role} projection (model type '{model.config.model_type}').")
            target = add(name, index, role)
            if role in FUSED_ROLES:
                parts = _fused_parts(model, family, role, target.shape[target.out_axis])
                found[name] = dataclasses.replace(target, parts=parts)
    for name, module in modules.items():
        if not _prunable(module) or name in found:
            continue
        parts = name.split(".")
        if "pooler" in parts:
            add(name, None, "pooler")
        elif parts[0] in _HEAD_NAMES and not any(p == "pooler" for p in parts):
            add(name, None, "classifier")
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for name, module in modules.items():
        if embeddings is not None and module is embeddings:
            add(name, None, "word_embeddings")
    return found


def find_targets(
    model: torch.nn.Module, *, pooler: bool = False, classifier: bool = False, word_embeddings: bool = False
) -> list[Target]:
    """The prunable weight matrices of `model`: those of every block, plus the optional kinds requested.

    Robust Tickets counts 72 encoder matrices + pooler (`pooler=True`); SRNets also masks the classifier
    (`classifier=True`). Models without a pooler (RoBERTa, DistilBERT) simply contribute none.
    """
    optional = {k for k, on in (("pooler", pooler), ("classifier", classifier), ("word_embeddings", word_embeddings))
                if on}
    order = {name: i for i, name in enumerate(dict(model.named_modules()))}
    targets = [t for t in _module_targets(model).values() if t.layer is not None or t.kind in optional]
    return sorted(targets, key=lambda t: order[t.module_name])


def canonical_parameter_name(name: str) -> str:
    """`x.parametrizations.weight.original` -> `x.weight`; other names unchanged."""
    return re.sub(r"\.parametrizations\.(\w+)\.original\d*$", r".\1", name)


def classify_parameter(model: torch.nn.Module, name: str) -> tuple[int | None, str | None]:
    """(encoder layer, matrix kind) of any parameter name; None where it does not apply.

    Biases share their matrix's kind; LayerNorm parameters inside a layer give (layer, None); embeddings other
    than the word embeddings give (None, None). Parametrized names are accepted.
    """
    module_name = canonical_parameter_name(name).rsplit(".", 1)[0]
    known = _module_targets(model)
    if module_name in known:
        return known[module_name].layer, known[module_name].kind
    for index, (prefix, _) in enumerate(_encoder_layer_list(model)):
        if module_name == prefix or module_name.startswith(prefix + "."):
            return index, None
    return None, None


_LAYER_PATTERN = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


def targets_from_names(shapes: Mapping[str, Sequence[int]]) -> list[Target]:
    """Targets recovered from parameter names alone (no model at hand, e.g. when inspecting a stored mask).

    A block's matrices are placed by the family table's module paths (a fused projection keeps its fused kind:
    its parts need the model's head counts); names it cannot place get kind "other".
    """
    targets = []
    for name, shape in shapes.items():
        name = canonical_parameter_name(name)
        module_name = name.rsplit(".", 1)[0]
        match = _LAYER_PATTERN.search(name)
        layer = int(match.group(1)) if match else None
        kind = role_of_path(module_name[match.end():]) if match else _optional_kind(module_name)
        targets.append(Target(name, module_name, layer, kind or "other", tuple(shape)))
    return targets


def _optional_kind(module_name: str) -> str | None:
    parts = module_name.split(".")
    if "pooler" in parts:
        return "pooler"
    if parts[0] in _HEAD_NAMES:
        return "classifier"
    return "word_embeddings" if parts[-1] in ("word_embeddings", "wte", "embed_tokens", "tok_embeddings") else None


def describe_denominator(targets: Iterable[Target]) -> str:
    """Name the targets a sparsity was computed over, e.g. "72 encoder matrices + pooler + classifier (2 tensors)"."""
    targets = list(targets)
    encoder = sum(t.kind in LAYER_KINDS for t in targets)
    parts = [f"{encoder} encoder matrices"] if encoder else []
    for kind in OPTIONAL_KINDS + ("other",):
        count = sum(t.kind == kind for t in targets)
        if count:
            label = kind.replace("_", " ")
            parts.append(label if count == 1 else f"{label} ({count} tensors)")
    return " + ".join(parts) if parts else "no targets"
