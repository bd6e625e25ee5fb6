"""Import and export of Hugging Face folders, dispatched by family.

Each family is four functions (config and state dict, each way) registered under the
``model_type`` its config.json carries. Import reads ``model_type`` to pick the family;
export asks each family in turn whether it can express the model's config (the first
whose ``config_to_hf`` accepts it wins), or uses the one named by ``model_type=``.
Adding a family is one ``register(HFFamily(...))`` line; this file stays the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from . import hf_bart, hf_bert, hf_gpt2, hf_llama, hf_t5
from .io import InteropError, StateDict, read_config, read_tokenizer_json, read_weights, write_folder


@dataclass(frozen=True)
class HFFamily:
    model_type: str  # the config.json "model_type" this family reads and writes
    config_from_hf: Callable[[Mapping], ModelConfig]
    config_to_hf: Callable[[ModelConfig], dict]
    state_dict_from_hf: Callable[[Mapping[str, torch.Tensor], ModelConfig], StateDict]
    state_dict_to_hf: Callable[[Mapping[str, torch.Tensor], ModelConfig], StateDict]


FAMILIES: dict[str, HFFamily] = {}


def register(family: HFFamily) -> None:
    FAMILIES[family.model_type] = family


register(HFFamily(hf_gpt2.MODEL_TYPE, hf_gpt2.config_from_hf, hf_gpt2.config_to_hf,
                  hf_gpt2.state_dict_from_hf, hf_gpt2.state_dict_to_hf))
register(HFFamily(hf_bert.MODEL_TYPE, hf_bert.config_from_hf, hf_bert.config_to_hf,
                  hf_bert.state_dict_from_hf, hf_bert.state_dict_to_hf))
register(HFFamily(hf_t5.MODEL_TYPE, hf_t5.config_from_hf, hf_t5.config_to_hf,
                  hf_t5.state_dict_from_hf, hf_t5.state_dict_to_hf))
register(HFFamily(hf_bart.MODEL_TYPE, hf_bart.config_from_hf, hf_bart.config_to_hf,
                  hf_bart.state_dict_from_hf, hf_bart.state_dict_to_hf))
register(HFFamily(hf_llama.MODEL_TYPE, hf_llama.config_from_hf, hf_llama.config_to_hf,
                  hf_llama.state_dict_from_hf, hf_llama.state_dict_to_hf))
register(HFFamily(hf_llama.QWEN2.model_type, partial(hf_llama.config_from_hf, flavour=hf_llama.QWEN2),
                  partial(hf_llama.config_to_hf, flavour=hf_llama.QWEN2),
                  hf_llama.state_dict_from_hf, hf_llama.state_dict_to_hf))


def family_for(model_type: str | None) -> HFFamily:
    if model_type not in FAMILIES:
        raise InteropError(f"model_type {model_type!r} is not supported; "
                           f"tfamily imports: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def import_hf(folder: str | os.PathLike, dtype: torch.dtype | None = None) -> tuple[nn.Module, str | None]:
    """(model in eval mode, tokenizer.json text or None) from a Hugging Face folder.

    The model is built in fp32 from config.json with the weights installed directly (converted
    from the file's dtype, no random initialisation first); pass ``dtype`` to cast it afterwards.
    """
    from ..models import model_from_state_dict

    hf_config = read_config(folder)
    config_file = Path(folder) / "config.json"
    try:
        family = family_for(hf_config.get("model_type"))
    except InteropError as e:
        raise InteropError(f"{config_file}: {e}") from None
    try:
        cfg = family.config_from_hf(hf_config)
    except (ConfigError, InteropError) as e:
        raise ConfigError(f"{config_file}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:  # a field of the wrong type: float("abc"), int(None)
        raise ConfigError(f"{config_file}: a field has a wrong value or type ({type(e).__name__}: {e})") from None
    weights = read_weights(folder)
    try:
        state = family.state_dict_from_hf(weights, cfg)
    except (InteropError, KeyError) as e:
        raise InteropError(f"{folder}: {e}") from None
    integer = sorted(k for k, v in state.items() if not v.is_floating_point() and v.dtype != torch.bool)
    if integer:  # every weight of every family is floating point; integer weights are not ours to guess at
        raise InteropError(f"{folder}: weights stored as integers, which tfamily cannot load as parameters: "
                           f"{', '.join(integer[:5])} ({state[integer[0]].dtype})")
    try:
        model = model_from_state_dict(cfg, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as e:
        raise InteropError(f"{folder}: the weights do not fit config.json ({' '.join(str(e).split())[:300]})") \
            from None
    pooling = sentence_embedding_config(folder)
    if pooling:
        model.cfg.extra["sentence_embedding"] = pooling
    if dtype is not None:
        model.to(dtype)
    return model.eval(), read_tokenizer_json(folder)


def sentence_embedding_config(folder: str | os.PathLike) -> dict | None:
    """How a sentence-transformers folder pools its embeddings ({"pooling": "mean" | "first",
    "normalize": bool}) from its 1_Pooling/config.json and modules.json, or None."""
    import json

    folder = Path(folder)
    pooling_file = folder / "1_Pooling" / "config.json"
    if not pooling_file.is_file():
        return None
    try:
        pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8")) \
            if (folder / "modules.json").is_file() else []
    except (OSError, ValueError):
        return None
    mode = "mean" if pooling.get("pooling_mode_mean_tokens") else "first" if pooling.get("pooling_mode_cls_token") else None
    if mode is None:
        return None
    normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize") for m in modules)
    return {"pooling": mode, "normalize": normalize}


def export_hf(model: nn.Module, folder: str | os.PathLike, tokenizer_json: str | None = None,
              model_type: str | None = None) -> Path:
    """Write ``model`` (and a tokenizer.json text) as a Hugging Face folder; returns its path.

    Weights keep the model's dtype; config.json records it as ``dtype``.
    """
    cfg: ModelConfig = model.cfg
    family, hf_config = _family_that_fits(cfg, model_type)
    hf_config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    state = family.state_dict_to_hf(model.state_dict(), cfg)
    return write_folder(folder, hf_config, state, tokenizer_json)


def _family_that_fits(cfg: ModelConfig, model_type: str | None) -> tuple[HFFamily, dict]:
    """The named family, or the first whose config_to_hf accepts ``cfg`` (with its reasons if none)."""
    candidates = [family_for(model_type)] if model_type is not None else list(FAMILIES.values())
    reasons = []
    for family in candidates:
        try:
            return family, family.config_to_hf(cfg)
        except ConfigError as e:
            reasons.append(f"{family.model_type}: {e}")
    raise ConfigError("no Hugging Face format can express this model: " + "; ".join(reasons))


def load_any(path: str | Path, pack: bool = True):
    """(model, Tokenizer) from a tfamily checkpoint or, converted on the fly (``import_hf``), a Hugging Face
    folder (its config.json names a ``model_type``). ``pack=False`` for a model that will be
    trained (see ``load_for_inference``)."""
    from ..checkpoint import CheckpointError, load_for_inference
    config = Path(path) / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            is_hf = isinstance(data, dict) and "model_type" in data
        except (OSError, ValueError):  # unreadable or not JSON: read_config says what is wrong with it
            is_hf = False
        if is_hf:
            from ..tokenizers import Tokenizer
            model, tok_json = import_hf(path)
            if tok_json is None:
                raise CheckpointError(f"{path} has no tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt)")
            tok_file = Path(path) / "tokenizer.json"
            return model, Tokenizer.from_str(tok_json, where=tok_file if tok_file.is_file() else path)
    return load_for_inference(path, pack=pack)
