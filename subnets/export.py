"""Compact export: physically remove pruned attention head units and FFN neurons from a transformer.

A structured subnetwork is described per block by a boolean vector over head units (True = kept) and one over FFN
neurons. A head unit is one key/value head with the query heads that share it (grouped-query attention; one head
otherwise). The "masked model" zeroes the removed units' weights (their rows of Q/K/V, or of the fused projection's
parts, and their attention-output columns; a neuron's rows of FFN in and gate and its FFN-out column). Because a
removed unit's output column is zero, it contributes nothing, so deleting its rows and columns gives the same
outputs with smaller matrices. Which rows and columns form a unit comes from the family table (through
`subnets.masking.layout.encoder_layers`), as do the attention-module attributes the forward reads (head counts,
split sizes), which the export sets to the kept sizes; no model is traced.

transformers cannot run an attention block with zero heads, so a layer that loses every head unit keeps one
stand-in unit whose output columns are zero (likewise one zeroed neuron for a layer that loses every neuron):
the outputs stay exact and the cost is one unit / one neuron.

The compact architecture differs per layer, which no family's config can express (`from_pretrained` raises a
size-mismatch error). `save_compact` records the per-layer structure in `config.json` under `compact_structure`
and `load_compact` rebuilds the shrunk architecture before loading the weights.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Mapping

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from .errors import SubnetsError
from .masking.layout import EncoderLayer, UnitMasks, UnitSlice, encoder_layers
from .targets import canonical_parameter_name, model_family
from .weights import require_plain, save_plain_model

COMPACT_CONFIG_KEY = "compact_structure"
LOADER_NAME = "subnets.export.load_compact"
CONFIG_NOTE = ("the per-layer sizes differ from the config's, which cannot express them; from_pretrained cannot "
               "rebuild this model: load it with subnets.export.load_compact")


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
    masks: Mapping[str, torch.Tensor], slices: tuple[UnitSlice, ...], unit: str, layer: int
) -> torch.Tensor:
    """Kept units of one layer from the weight masks of the matrix slices that share them.

    Every unit must be entirely kept or entirely pruned in each slice, and all slices must agree.
    """
    kept: torch.Tensor | None = None
    agreed_with = ""
    for piece in slices:
        target = piece.target
        if target.name not in masks:
            continue
        mask = _binary(target.name, masks[target.name])
        if tuple(mask.shape) != target.shape:
            raise SubnetsError(
                f"Mask '{target.name}' has shape {tuple(mask.shape)}; expected the weight shape {target.shape}."
            )
        blocks = piece.blocks(mask)
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
    return kept.cpu() if kept is not None else torch.ones(slices[0].units, dtype=torch.bool)


def structured_masks_from_weight_masks(
    model: torch.nn.Module, masks: Mapping[str, torch.Tensor]
) -> tuple[UnitMasks, UnitMasks]:
    """Per block, the kept head units [units] and FFN neurons [intermediate] of a structured weight mask.

    `masks` is keyed by parameter name (as in the mask store); matrices without a mask count as fully kept.
    Raises SubnetsError if a mask removes part of a head or neuron, if the matrices of one unit disagree, or
    if a mask outside the six encoder matrices removes anything (only heads and neurons can be exported).
    """
    layers = encoder_layers(model)
    encoder_names = {s.target.name for layer in layers for s in layer.heads + layer.neurons}
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
        heads[index] = _units_from_slices(masks, layer.heads, "head", index)
        neurons[index] = _units_from_slices(masks, layer.neurons, "neuron", index)
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
def _zero_units(modules: Mapping[str, torch.nn.Module], layer: EncoderLayer, heads: torch.Tensor,
                neurons: torch.Tensor) -> None:
    for slices, kept in ((layer.heads, heads), (layer.neurons, neurons)):
        for piece in slices:
            weight = modules[piece.target.module_name].weight
            lines = kept.to(weight.device).repeat_interleave(piece.width)
            removed = ~(lines.unsqueeze(1) if piece.axis == 0 else lines.unsqueeze(0))
            weight.narrow(piece.axis, piece.start, piece.units * piece.width).masked_fill_(removed, 0)


def apply_structured_masks(
    model: torch.nn.Module, head_masks: Mapping[int, torch.Tensor], neuron_masks: Mapping[int, torch.Tensor]
) -> None:
    """Zero, in place, the weights of the removed head units (Q/K/V rows, attention-output columns) and neurons
    (FFN-in and gate rows, FFN-out columns). Layers missing from a dict keep all their units."""
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


def _select(module: torch.nn.Module, axis: int, index: torch.Tensor) -> None:
    """Keep only channels `index` along `axis` of a Linear or Conv1D weight (and of its bias on the output axis)."""
    out_axis = 1 if isinstance(module, Conv1D) else 0
    weight = module.weight
    module.weight = torch.nn.Parameter(weight.index_select(axis, index.to(weight.device)).clone(),
                                       requires_grad=weight.requires_grad)
    if axis == out_axis and module.bias is not None:
        module.bias = torch.nn.Parameter(module.bias.index_select(0, index.to(weight.device)).clone(),
                                         requires_grad=module.bias.requires_grad)
    if isinstance(module, Conv1D):  # weight [in, out]
        module.nx, module.nf = module.weight.shape
    else:
        module.out_features, module.in_features = module.weight.shape


def _set_sizes(model: PreTrainedModel, attention: torch.nn.Module, layer: EncoderLayer, units: int) -> None:
    """Set the attention module's size attributes (family table) to the kept sizes."""
    sizes = {"heads": units * layer.group_size, "kv_heads": units, "width": units * layer.group_size * layer.head_size}
    for attribute, quantity in model_family(model).size_attributes.items():
        owner = attention
        if attribute.startswith("config."):
            if attention.config is model.config:  # this block gets a config of its own
                attention.config = copy.copy(model.config)
            owner, attribute = attention.config, attribute.removeprefix("config.")
        setattr(owner, attribute, sizes[quantity])


@torch.no_grad()
def _shrink(model: PreTrainedModel, kept_heads: list[list[int]], kept_neurons: list[list[int]]) -> None:
    """Delete, in place, every head unit and neuron not listed (each list non-empty), and set the sizes."""
    modules = dict(model.named_modules())
    for layer, heads, neurons in zip(encoder_layers(model), kept_heads, kept_neurons):
        channels: dict[tuple[str, int], list[torch.Tensor]] = {}
        for slices, kept in ((layer.heads + layer.coupled, heads), (layer.neurons, neurons)):
            for piece in slices:
                mask = torch.zeros(piece.units, dtype=torch.bool)
                mask[kept] = True
                channels.setdefault((piece.target.module_name, piece.axis), []).append(piece.channels(mask))
        for (name, axis), pieces in channels.items():
            _select(modules[name], axis, torch.cat(pieces))
        _set_sizes(model, modules[layer.attention_name], layer, len(heads))


def _kept_or_stand_in(mask: torch.Tensor) -> list[int]:
    """Indices of kept units; unit 0 (already zeroed) stands in when none is kept."""
    kept = mask.nonzero().flatten().tolist()
    return kept or [0]


def compact_export(
    model: PreTrainedModel, head_masks: Mapping[int, torch.Tensor], neuron_masks: Mapping[int, torch.Tensor]
) -> PreTrainedModel:
    """A physically smaller copy of `model` without the removed heads and neurons, with the masked model's outputs.

    `model` itself is left untouched. The copy's config records the structure under `compact_structure`
    (original indices of kept head units per layer, query heads per unit, kept neuron counts, the sizes actually
    built, and a note that the config's own sizes do not describe the model).
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
        "query_heads_per_unit": layers[0].group_size,
        "kept_neurons": [int(m.sum()) for m in neurons],
        "num_heads": [len(k) for k in kept_heads],
        "intermediate_sizes": [len(k) for k in kept_neurons],
        "config_sizes": CONFIG_NOTE,
    })
    return compact


# ---------------------------------------------------------------------------------------------------------------
# saving and loading


def save_compact(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, directory: str | os.PathLike,
                 source: str | None = None) -> None:
    """Write `model` (from `compact_export`) and `tokenizer` to `directory` atomically, with a model card
    (README.md: how to load it, what was removed; `source` names what it was pruned from); reload with
    `load_compact`."""
    structure = getattr(model.config, COMPACT_CONFIG_KEY, None)
    if structure is None:
        raise SubnetsError(
            f"The model's config has no '{COMPACT_CONFIG_KEY}'; expected a model returned by compact_export."
        )
    card = model_card(model, structure, source)
    save_plain_model(model, tokenizer, directory, extra_files=lambda tmp: (tmp / MODEL_CARD).write_text(card))


MODEL_CARD = "README.md"


def model_card(model: PreTrainedModel, structure: Mapping, source: str | None) -> str:
    """The compact folder's README.md: a Hugging Face model card with the loader note and the kept structure."""
    rows = "\n".join(f"| {i} | {len(heads)} | {neurons} |" for i, (heads, neurons) in
                     enumerate(zip(structure["kept_heads"], structure["kept_neurons"])))
    origin = f"Pruned from `{source}`" if source else "Pruned"
    return f"""---
library_name: transformers
tags: [subnets, pruned, structured-pruning]
---
# Compact {model.config.model_type} model (heads and FFN neurons removed)

{origin} with the subnets compact export: the removed attention heads and FFN neurons are
physically deleted, so the model is smaller and faster with the masked model's outputs.
{model.num_parameters():,} parameters.

## Loading

The layers keep different numbers of heads and neurons, which a `config.json` cannot express, so
`AutoModelForSequenceClassification.from_pretrained` raises a size-mismatch error here (never pass
`ignore_mismatched_sizes=True`: it would re-initialise the pruned matrices at random). Load it with:

```python
from subnets.export import load_compact
from transformers import AutoTokenizer

model = load_compact("THIS_FOLDER")
tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER", trust_remote_code=False)
```

## Kept structure (`compact_structure` in config.json)

| layer | head units kept | FFN neurons kept |
|---|---|---|
{rows}
"""


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
