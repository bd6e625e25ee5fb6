"""Checkpoints: a folder of safetensors weights and JSON, written atomically.

    ckpt/
      config.json            ModelConfig
      model.safetensors      weights (tied tensors stored once)
      tokenizer.json         the tokenizer, when the model has one
      chat_template.jinja    the chat template (Jinja), when the model has one (imported chat models)
      trainer.json           step, elapsed time, TrainConfig, metrics   (training checkpoints)
      trainer.safetensors    optimizer moments, RNG states              (training checkpoints)

Nothing is ever unpickled. A new checkpoint is written into a temporary sibling folder
and swapped in by rename, so an interrupted save leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from .config import ModelConfig

CONFIG, WEIGHTS, TOKENIZER, TRAINER_JSON, TRAINER_TENSORS = (
    "config.json", "model.safetensors", "tokenizer.json", "trainer.json", "trainer.safetensors")
CHAT_TEMPLATE = "chat_template.jinja"  # the file name transformers also uses


class CheckpointError(ValueError):
    pass


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig, tokenizer_json: str | None = None,
                    trainer_state: dict[str, Any] | None = None,
                    trainer_tensors: dict[str, torch.Tensor] | None = None,
                    chat_template: str | None = None) -> Path:
    """Write a checkpoint folder atomically (temp folder + rename).

    ``chat_template`` (Jinja text, as GGUF and HF tokenizer configs carry it) is saved as
    its own file so that it stays readable and diffable, not escaped inside JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_text(tmp / CONFIG, cfg.to_json())
    safetensors.torch.save_model(model, str(tmp / WEIGHTS))
    if tokenizer_json is not None:
        _write_text(tmp / TOKENIZER, tokenizer_json)
    if chat_template is not None:
        _write_text(tmp / CHAT_TEMPLATE, chat_template)
    if trainer_state is not None:
        _write_text(tmp / TRAINER_JSON, json.dumps(trainer_state, indent=2))
    if trainer_tensors is not None:
        tensors = {k: v.detach().contiguous().cpu() for k, v in trainer_tensors.items()}
        safetensors.torch.save_file(tensors, str(tmp / TRAINER_TENSORS))
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def read_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} is not a tfamily checkpoint: {CONFIG} not found")
    return ModelConfig.from_json((path / CONFIG).read_text(encoding="utf-8"))


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """(model in eval mode, ModelConfig, tokenizer JSON text or None) from a checkpoint folder."""
    from .models import build_model

    path = Path(path)
    cfg = read_config(path)
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS}")
    model = build_model(cfg)
    load_weights(model, path)
    model.to(device=device, dtype=dtype)
    tok = (path / TOKENIZER).read_text(encoding="utf-8") if (path / TOKENIZER).is_file() else None
    return model.eval(), cfg, tok


def load_weights(model: nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Copy a checkpoint's weights into ``model`` in place (tied tensors were stored once);
    a missing or unexpected name is an error naming the first few."""
    file = Path(path) / WEIGHTS
    missing, unexpected = safetensors.torch.load_model(model, str(file), strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"{file} does not match this model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")


def read_chat_template(path: str | Path) -> str | None:
    """The checkpoint's chat template (Jinja text), or None when it has none."""
    file = Path(path) / CHAT_TEMPLATE
    return file.read_text(encoding="utf-8") if file.is_file() else None


def load_trainer_state(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    if not (path / TRAINER_JSON).is_file():
        raise CheckpointError(f"{path} has no training state ({TRAINER_JSON}); it cannot be resumed")
    state = json.loads((path / TRAINER_JSON).read_text(encoding="utf-8"))
    tensors = safetensors.torch.load_file(str(path / TRAINER_TENSORS)) if (path / TRAINER_TENSORS).is_file() else {}
    return state, tensors
