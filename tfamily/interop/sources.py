"""What the generating commands (`generate`, `chat`, `serve`) open: a tfamily checkpoint folder,
a llama.cpp GGUF file, or the name of a GGUF model that registry packages ship in slices.

    source = open_for_generation("SmolLM2-135M-Instruct.Q4_1.gguf")   # the file's own quantised weights
    source = open_for_generation("runs/x/checkpoint", weights="int8")

A GGUF file is read straight into memory (nothing is written) and, on a CPU, keeps its
quantised tensors as the file has them by default (``weights="gguf"``, ``import_gguf``):
measured on SmolLM2-135M (Q4_1) and Qwen2.5-Coder-0.5B (Q4_K / Q5_0 / Q6_K / Q8_0), this
decodes 3.2-3.5x and 3.4x as fast as ``transformers`` in fp32 at batch 1 (``GGUF_SPEED``), and
picks the dequantised fp32 model's top token 97.1-97.3 % and 96.1-97.7 % of the time at a KL
of 0.0018 and 0.0015 nats a token (benchmarks/RESULTS.md, issue 19).
The default's rule is that bound: a quantised path is the default only while its KL against
the float model stays under ``GGUF_DEFAULT_MAX_KL`` on real text. ``weights="fp32"`` gives
the exact float model the file approximates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .gguf import GGUF_MAGIC, import_gguf
from .io import MissingFileError
from .packaged import SLICED_MODELS, packaged_gguf

GGUF_DEFAULT_MAX_KL = 0.01  # nats a token against the dequantised fp32 model; measured 0.0015-0.0018
GGUF_SPEED = "3.2-3.5x transformers fp32"  # the start-up line's figures (benchmarks/RESULTS.md, issue 19)
GGUF_KL = "0.002"


@dataclass
class Source:
    """A model ready to generate, with what it was opened from."""
    model: nn.Module  # eval mode, weights in ``weights``
    tokenizer: object  # tfamily.tokenizers.Tokenizer
    chat_template: str | None  # Jinja text, or None: the plain default layout
    weights: str  # the weight format in use: fp32, bf16, int8, int4 or gguf
    name: str  # a short name for the model (the server's model id)
    note: str | None = None  # what a user should be told at start-up (a default they did not pick)


def gguf_file(source: str | os.PathLike) -> Path | None:
    """The GGUF file ``source`` names (a path to one, or a packaged model's name: joined into
    the cache once, see ``packaged_gguf``), or None when it names something else."""
    path = Path(source)
    if path.is_file():
        with open(path, "rb") as f:
            return path if f.read(4) == GGUF_MAGIC or path.suffix.lower() == ".gguf" else None
    if not path.exists() and str(source) in SLICED_MODELS:
        return packaged_gguf(str(source))
    if not path.exists() and path.suffix.lower() == ".gguf":
        raise MissingFileError(f"{path} not found")
    return None


def default_weights(is_gguf: bool, device: str) -> str:
    """fp32 for a checkpoint; for a GGUF file its own codes where their kernel runs (a CPU)."""
    return "gguf" if is_gguf and str(device).startswith("cpu") else "fp32"


def open_for_generation(source: str | os.PathLike, weights: str | None = None,
                        device: str = "cpu") -> Source:
    """The model, tokenizer and chat template of ``source``, its weights as ``weights`` (None:
    ``default_weights``). Faults are CheckpointError or InteropError (ValueErrors) naming the path."""
    from ..checkpoint import CheckpointError, load_for_inference, read_chat_template
    file = gguf_file(source)
    chosen = weights or default_weights(file is not None, device)
    if file is None:
        if chosen == "gguf":
            raise CheckpointError(f"--weights gguf keeps a GGUF file's own quantised tensors, and {source} is a "
                                  "checkpoint folder: use --weights int4 (or int8) to quantise it")
        model, tokenizer = load_for_inference(source, chosen, device=device)
        name = Path(source).resolve().name
        if name == "checkpoint":  # runs/<name>/checkpoint: the run's name says more
            name = Path(source).resolve().parent.name
        return Source(model, tokenizer, read_chat_template(source), chosen, name)
    return _open_gguf(file, chosen, device, defaulted=weights is None)


def _open_gguf(file: Path, weights: str, device: str, defaulted: bool) -> Source:
    from ..nn.quant import convert_weights
    from ..tokenizers import Tokenizer
    if weights == "gguf" and not str(device).startswith("cpu"):
        raise ValueError(f"--weights gguf multiplies with CPU kernels (tfamily's GGUF kernel, torch's int4 and int8); "
                         f"on {device} use fp32 or bf16")
    model, tok_json, template = import_gguf(file, weights="gguf" if weights == "gguf" else "float")
    if weights != "gguf":
        model = convert_weights(model.to(device), weights)
    note = gguf_note(file, model) if defaulted else None
    return Source(model, Tokenizer.from_str(tok_json, where=file), template, weights, file.stem, note)


def gguf_note(file: Path, model: nn.Module) -> str:
    """The start-up line of a GGUF file opened with the default weights: what multiplies now."""
    from ..nn.quant import GGUFLinear, Int4Linear, Int8Linear
    blocks = [m for m in model.modules() if isinstance(m, GGUFLinear)]
    kinds = sorted({kind for m in blocks for kind in m.kinds})
    four = sum(isinstance(m, Int4Linear) for m in model.modules())
    eight = sum(isinstance(m, Int8Linear) for m in model.modules())
    parts = [f"{len(blocks)} from the file's own blocks ({', '.join(kinds)})" if blocks else "",
             f"{four} from its 4-bit codes by torch's int4 kernel" if four else "", f"{eight} from int8" if eight else ""]
    return (f"{file.name}: linear layers multiply {', '.join(p for p in parts if p)} "
            f"(--weights gguf, the default for a GGUF file on a CPU: {GGUF_SPEED} at batch 1 on the packaged "
            f"models, KL {GGUF_KL} against the float model); --weights fp32 for the exact float model")
