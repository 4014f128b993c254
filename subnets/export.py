"""Compact export: physically remove pruned attention heads and FFN neurons from an encoder.

A structured subnetwork is described per encoder layer by a boolean vector over attention heads (True = kept)
and one over FFN neurons. The "masked model" zeroes the removed units' weights (Q/K/V rows and the attention
output columns of a head; the FFN-in row and FFN-out column of a neuron). Because a removed unit's output
column is zero, it contributes nothing, so deleting its rows and columns gives the same outputs with smaller
matrices. The deletion goes through torch-pruning's `DependencyGraph`, which traces the model and couples the
Q/K/V output channels of a head with the attention output's input channels (and DeBERTa's relative-position
projections), so no per-family wiring is written here.

transformers cannot run an attention block with zero heads, so a layer that loses every head keeps one
stand-in head whose output columns are zero (likewise one zeroed neuron for a layer that loses every neuron):
the outputs stay exact and the cost is one head / one neuron.

The compact architecture differs per layer, which `from_pretrained` cannot express: it raises a size-mismatch
error. `save_compact` records the per-layer structure in `config.json` under `compact_structure` and
`load_compact` rebuilds the shrunk architecture before loading the weights.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from .errors import SubnetsError
from .masking.layout import HEAD_KINDS, NEURON_KINDS, EncoderLayer, Layout, UnitMasks, encoder_layers
from .targets import Target, canonical_parameter_name
from .weights import require_plain, save_plain_model

if TYPE_CHECKING:
    import torch_pruning as tp

COMPACT_CONFIG_KEY = "compact_structure"
LOADER_NAME = "subnets.export.load_compact"
_HEAD_COUNT_ATTRIBUTES = ("num_attention_heads", "n_heads", "num_heads")


def _binary(name: str, mask: torch.Tensor) -> torch.Tensor:
    """`mask` as a bool tensor; only bool or 0/1 values are accepted."""
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise SubnetsError(
            f"Mask '{name}' holds values other than 0 and 1; expected a binary mask (draw one from gates or scores first)."
        )
    return mask != 0


# ---------------------------------------------------------------------------------------------------------------
# weight masks -> per-layer unit masks


def _units_from_slices(
    masks: Mapping[str, torch.Tensor], slices: list[tuple[Target, Layout]], unit: str, layer: int
) -> torch.Tensor:
    """Kept units of one layer from the weight masks of the matrices that share them.

    Each (target, layout) names a matrix whose rows (layout axis 0) or columns (axis 1) form the units; every
    unit must be entirely kept or entirely pruned, and all matrices must agree.
    """
    units = slices[0][1].group_shape[0]
    kept: torch.Tensor | None = None
    agreed_with = ""
    for target, layout in slices:
        if target.name not in masks:
            continue
        mask = _binary(target.name, masks[target.name])
        if tuple(mask.shape) != target.shape:
            raise SubnetsError(
                f"Mask '{target.name}' has shape {tuple(mask.shape)}; expected the weight shape {target.shape}."
            )
        blocks = (mask if layout.axis == 0 else mask.T).reshape(units, -1)
        block_kept, block_any = blocks.all(dim=1), blocks.any(dim=1)
        partial = (block_kept != block_any).nonzero().flatten()
        if len(partial):
            raise SubnetsError(
                f"Mask '{target.name}' prunes only part of {unit} {int(partial[0])}; expected whole {unit}s kept or "
                "removed (a structured mask)."
            )
        if kept is not None and not torch.equal(kept, block_kept):
            differ = int((kept != block_kept).nonzero()[0])
            raise SubnetsError(
                f"Masks '{agreed_with}' and '{target.name}' disagree on {unit} {differ} of layer {layer}; expected "
                f"every matrix of a {unit} to keep or remove it together."
            )
        kept, agreed_with = block_kept, target.name
    return kept.cpu() if kept is not None else torch.ones(units, dtype=torch.bool)


def structured_masks_from_weight_masks(
    model: torch.nn.Module, masks: Mapping[str, torch.Tensor]
) -> tuple[UnitMasks, UnitMasks]:
    """Per encoder layer, the kept heads [num_heads] and kept FFN neurons [intermediate] of a structured weight mask.

    `masks` is keyed by parameter name (as in the mask store); matrices without a mask count as fully kept.
    Raises SubnetsError if a mask removes part of a head or neuron, if the matrices of one unit disagree, or
    if a mask outside the six encoder matrices removes anything (only heads and neurons can be exported).
    """
    layers = encoder_layers(model)
    encoder_names = {t.name for layer in layers for t in layer.targets.values()}
    parameter_names = {canonical_parameter_name(n) for n, _ in model.named_parameters()}
    for name, mask in masks.items():
        if name not in parameter_names:
            raise SubnetsError(f"Mask '{name}' names no parameter of {type(model).__name__}; expected parameter names.")
        if name not in encoder_names and not bool(_binary(name, mask).all()):
            raise SubnetsError(
                f"Mask '{name}' removes weights outside the encoder's attention and FFN matrices; a compact export "
                "can only remove whole attention heads and FFN neurons."
            )
    heads: UnitMasks = {}
    neurons: UnitMasks = {}
    for index, layer in enumerate(layers):
        heads[index] = _units_from_slices(masks, [(layer.targets[k], layer.layouts[k]) for k in HEAD_KINDS], "head", index)
        neurons[index] = _units_from_slices(masks, [(layer.targets[k], layer.layouts[k]) for k in NEURON_KINDS],
                                            "neuron", index)
    return heads, neurons


# ---------------------------------------------------------------------------------------------------------------
# masking


def _full_unit_masks(given: Mapping[int, torch.Tensor], units: list[int], unit: str) -> list[torch.Tensor]:
    """One bool vector per layer (all True where a layer is not given), validated against the layer sizes."""
    unknown = sorted(set(given) - set(range(len(units))))
    if unknown:
        raise SubnetsError(
            f"The {unit} masks name layer {unknown[0]}; expected layer indices 0..{len(units) - 1}."
        )
    full = []
    for index, count in enumerate(units):
        if index not in given:
            full.append(torch.ones(count, dtype=torch.bool))
            continue
        mask = _binary(f"{unit} mask of layer {index}", torch.as_tensor(given[index])).cpu()
        if tuple(mask.shape) != (count,):
            raise SubnetsError(
                f"The {unit} mask of layer {index} has shape {tuple(mask.shape)}; expected ({count},)."
            )
        full.append(mask)
    return full


def _unit_vectors(
    layers: list[EncoderLayer], head_masks: Mapping[int, torch.Tensor], neuron_masks: Mapping[int, torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    heads = _full_unit_masks(head_masks, [layer.num_heads for layer in layers], "head")
    neurons = _full_unit_masks(neuron_masks, [layer.intermediate_size for layer in layers], "neuron")
    return heads, neurons


@torch.no_grad()
def _zero_units(modules: Mapping[str, torch.nn.Module], layer: EncoderLayer, heads: torch.Tensor, neurons: torch.Tensor) -> None:
    for kind in HEAD_KINDS + NEURON_KINDS:
        weight = modules[layer.targets[kind].module_name].weight
        kept = layer.layouts[kind].broadcast(heads if kind in HEAD_KINDS else neurons)
        weight.masked_fill_(~kept.to(weight.device), 0)


def apply_structured_masks(
    model: torch.nn.Module, head_masks: Mapping[int, torch.Tensor], neuron_masks: Mapping[int, torch.Tensor]
) -> None:
    """Zero, in place, the weights of the removed heads (Q/K/V rows, attention-output columns) and neurons
    (FFN-in rows, FFN-out columns). Layers missing from a dict keep all their units."""
    require_plain(model)
    layers = encoder_layers(model)
    heads, neurons = _unit_vectors(layers, head_masks, neuron_masks)
    _zero_all(model, layers, heads, neurons)


def _zero_all(model: torch.nn.Module, layers: list[EncoderLayer], heads: list[torch.Tensor],
              neurons: list[torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for layer, layer_heads, layer_neurons in zip(layers, heads, neurons):
        _zero_units(modules, layer, layer_heads, layer_neurons)


# ---------------------------------------------------------------------------------------------------------------
# shrinking


def _example_inputs(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    input_ids = model.dummy_inputs["input_ids"].to(model.device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _prune_coupled(graph: tp.DependencyGraph, modules: Mapping[str, torch.nn.Module], layer: EncoderLayer,
                   kind: str, removed: list[int]) -> None:
    """Remove output channels `removed` of the `kind` matrix and every channel torch-pruning couples to them."""
    import torch_pruning as tp

    if not removed:
        return
    t = layer.targets
    group = graph.get_pruning_group(modules[t[kind].module_name], tp.prune_linear_out_channels, idxs=removed)
    coupled = {dep.target.module for dep, _ in group}
    expected = HEAD_KINDS if kind == "query" else NEURON_KINDS
    missing = [t[k].module_name for k in expected if modules[t[k].module_name] not in coupled]
    if missing:
        raise SubnetsError(
            f"torch-pruning did not couple {', '.join(missing)} with {t[kind].module_name}; compact export supports "
            "BERT, RoBERTa, DistilBERT, ELECTRA and DeBERTa-v2 style attention blocks."
        )
    group.prune()


def _shrink(model: PreTrainedModel, kept_heads: list[list[int]], kept_neurons: list[list[int]]) -> None:
    """Delete, in place, every head and neuron not listed (each list non-empty), and fix the head counts."""
    import torch_pruning as tp  # imported here: it takes about a second and only exports need it

    layers = encoder_layers(model)
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    # Tracing follows autograd, so every parameter must require grad while the graph is built.
    for p in model.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=_example_inputs(model), verbose=False)
    modules = dict(model.named_modules())
    for layer, heads, neurons in zip(layers, kept_heads, kept_neurons):
        removed_heads = sorted(set(range(layer.num_heads)) - set(heads))
        removed_channels = [h * layer.head_size + c for h in removed_heads for c in range(layer.head_size)]
        _prune_coupled(graph, modules, layer, "query", removed_channels)
        _prune_coupled(graph, modules, layer, "ffn_in", sorted(set(range(layer.intermediate_size)) - set(neurons)))
        attention = modules[layer.attention_name]
        for attribute in _HEAD_COUNT_ATTRIBUTES:
            if isinstance(getattr(attention, attribute, None), int):
                setattr(attention, attribute, len(heads))
        if isinstance(getattr(attention, "all_head_size", None), int):
            attention.all_head_size = len(heads) * layer.head_size
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    model.train(was_training)


def _kept_or_stand_in(mask: torch.Tensor) -> list[int]:
    """Indices of kept units; unit 0 (already zeroed) stands in when none is kept."""
    kept = mask.nonzero().flatten().tolist()
    return kept or [0]


def compact_export(
    model: PreTrainedModel, head_masks: Mapping[int, torch.Tensor], neuron_masks: Mapping[int, torch.Tensor]
) -> PreTrainedModel:
    """A physically smaller copy of `model` without the removed heads and neurons, with the masked model's outputs.

    `model` itself is left untouched. The copy's config records the structure under `compact_structure`
    (original indices of kept heads per layer, kept neuron counts, and the sizes actually built).
    """
    require_plain(model)
    compact = copy.deepcopy(model)
    layers = encoder_layers(compact)
    heads, neurons = _unit_vectors(layers, head_masks, neuron_masks)
    _zero_all(compact, layers, heads, neurons)
    kept_heads = [_kept_or_stand_in(m) for m in heads]
    kept_neurons = [_kept_or_stand_in(m) for m in neurons]
    _shrink(compact, kept_heads, kept_neurons)
    setattr(compact.config, COMPACT_CONFIG_KEY, {
        "loader": LOADER_NAME,
        "kept_heads": [m.nonzero().flatten().tolist() for m in heads],
        "kept_neurons": [int(m.sum()) for m in neurons],
        "num_heads": [len(k) for k in kept_heads],
        "intermediate_sizes": [len(k) for k in kept_neurons],
    })
    return compact


# ---------------------------------------------------------------------------------------------------------------
# saving and loading


def save_compact(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, directory: str | os.PathLike) -> None:
    """Write `model` (from `compact_export`) and `tokenizer` to `directory` atomically; reload with `load_compact`."""
    if getattr(model.config, COMPACT_CONFIG_KEY, None) is None:
        raise SubnetsError(
            f"The model's config has no '{COMPACT_CONFIG_KEY}'; expected a model returned by compact_export."
        )
    save_plain_model(model, tokenizer, directory)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    single = directory / "model.safetensors"
    if single.exists():
        return load_file(single)
    index = directory / "model.safetensors.index.json"
    if not index.exists():
        raise SubnetsError(f"'{directory}' has no model.safetensors or model.safetensors.index.json; expected a saved compact model.")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(directory / shard))
    return weights


def _load_weights(model: PreTrainedModel, weights: dict[str, torch.Tensor], directory: Path) -> None:
    """Load `weights` strictly, except for keys that `tie_weights` fills from a loaded tensor."""
    floating = [w.dtype for w in weights.values() if w.is_floating_point()]
    if floating:
        model.to(dtype=floating[0])
    missing, unexpected = model.load_state_dict(weights, strict=False)
    model.tie_weights()
    state = model.state_dict()
    loaded = {state[name].data_ptr() for name in weights if name in state}
    untied = [name for name in missing if state[name].data_ptr() not in loaded]
    if unexpected or untied:
        raise SubnetsError(
            f"The weights in '{directory}' do not fit the compact architecture recorded in its config.json "
            f"(unexpected: {sorted(unexpected)[:3]}, missing: {sorted(untied)[:3]}); expected a directory written "
            "by save_compact."
        )


def load_compact(directory: str | os.PathLike) -> PreTrainedModel:
    """Rebuild the shrunk architecture recorded in `directory/config.json` and load its weights (in eval mode)."""
    directory = Path(directory)
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise SubnetsError(f"Could not read a model config from '{directory}'; expected a directory written by save_compact.") from e
    structure = getattr(config, COMPACT_CONFIG_KEY, None)
    if structure is None:
        raise SubnetsError(
            f"'{directory}/config.json' has no '{COMPACT_CONFIG_KEY}'; it is a regular model, load it with from_pretrained."
        )
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture or "", None)
    if model_class is None:
        raise SubnetsError(
            f"'{directory}/config.json' names the architecture {architecture!r}; expected a transformers model class."
        )
    model = model_class(config)
    _shrink(model, [list(range(n)) for n in structure["num_heads"]],
            [list(range(n)) for n in structure["intermediate_sizes"]])
    _load_weights(model, _read_weights(directory), directory)
    return model.eval()
