"""Checkpoints: a folder of safetensors weights and JSON, written atomically.

    ckpt/
      config.json            ModelConfig
      model.safetensors      weights (tied tensors stored once)
      tokenizer.json         the tokenizer, when the model has one
      chat_template.jinja    the chat template (Jinja), when the model has one (imported chat models)
      trainer.json           step, elapsed time, TrainConfig, metrics   (training checkpoints)
      trainer.safetensors    optimizer moments, RNG states              (training checkpoints)

Nothing is ever unpickled. A new checkpoint is written into a temporary sibling folder
(every file fsynced), then exchanged with the previous one in a single atomic rename
(Linux renameat2 RENAME_EXCHANGE): at every instant ``path`` is either the whole previous
checkpoint or the whole new one, so a process killed mid-save, or a disk that fills, leaves the
previous checkpoint intact. Where the exchange is not available the swap is two renames, and
a reader that finds only the moved-aside previous folder puts it back (``recover``).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import safetensors.torch
import torch
from torch import nn

from .config import ModelConfig
from .files import fsync_path

CONFIG, WEIGHTS, TOKENIZER, TRAINER_JSON, TRAINER_TENSORS = (
    "config.json", "model.safetensors", "tokenizer.json", "trainer.json", "trainer.safetensors")
CHAT_TEMPLATE = "chat_template.jinja"  # the file name transformers also uses


class CheckpointError(ValueError):
    pass


class CheckpointWriteError(CheckpointError, OSError):
    """A save failed (disk full, file too large, no permission); the previous checkpoint is intact."""


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _siblings(path: Path, kind: str) -> list[Path]:
    """Leftovers of earlier saves of ``path``: ``.{name}.tmp-*`` (a killed write) or ``.{name}.old-*``."""
    return sorted(path.parent.glob(f".{path.name}.{kind}-*"))


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (renameat2 RENAME_EXCHANGE); False where the OS cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel, or a file system without it
        return False
    raise OSError(err, os.strerror(err), str(a))


def recover(path: str | Path) -> None:
    """Put back a checkpoint that a save interrupted between its two fallback renames."""
    path = Path(path)
    if not path.exists():
        olds = _siblings(path, "old")
        if olds:
            os.replace(olds[-1], path)


def _swap_in(tmp: Path, path: Path) -> None:
    """Make the finished folder ``tmp`` the checkpoint at ``path``, atomically where possible."""
    if not path.exists():
        os.replace(tmp, path)
    elif _exchange(tmp, path):  # tmp now holds the previous checkpoint
        shutil.rmtree(tmp)
    else:
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    fsync_path(path.parent)


def save_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig, tokenizer_json: str | None = None,
                    trainer_state: dict[str, Any] | None = None,
                    trainer_tensors: dict[str, torch.Tensor] | None = None,
                    chat_template: str | None = None) -> Path:
    """Write a checkpoint folder atomically (temp folder, then one exchange).

    ``chat_template`` (Jinja text, as GGUF and HF tokenizer configs carry it) is saved as
    its own file so that it stays readable and diffable, not escaped inside JSON. A write that
    fails (disk full, file too large) raises CheckpointError and leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    for stale in _siblings(path, "tmp") + _siblings(path, "old"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        _write_text(tmp / CONFIG, cfg.to_json())
        safetensors.torch.save_model(model, str(tmp / WEIGHTS))
        fsync_path(tmp / WEIGHTS)
        if tokenizer_json is not None:
            _write_text(tmp / TOKENIZER, tokenizer_json)
        if chat_template is not None:
            _write_text(tmp / CHAT_TEMPLATE, chat_template)
        if trainer_state is not None:
            _write_text(tmp / TRAINER_JSON, json.dumps(trainer_state, indent=2))
        if trainer_tensors is not None:
            tensors = {k: v.detach().contiguous().cpu() for k, v in trainer_tensors.items()}
            safetensors.torch.save_file(tensors, str(tmp / TRAINER_TENSORS))
            fsync_path(tmp / TRAINER_TENSORS)
        fsync_path(tmp)
    except (OSError, safetensors.SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = "the previous checkpoint is intact" if path.exists() else "nothing was written"
        raise CheckpointWriteError(f"{path}: could not write the checkpoint ({_reason(e)}); {kept}") from None
    _swap_in(tmp, path)
    return path


def _reason(e: BaseException) -> str:
    """A short cause for a failed write: the OS error's words (disk full, file too large)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    text = str(e)
    for code, words in ((errno.ENOSPC, "no space left on device"), (errno.EFBIG, "file too large"),
                        (errno.EDQUOT, "disk quota exceeded")):
        if f"code: {code}," in text or os.strerror(code).lower() in text.lower():
            return words
    return text.splitlines()[0][:200] if text else type(e).__name__


# ---- reading ---------------------------------------------------------------------------
# Every file is checked where it is read, and a fault becomes one CheckpointError that names
# the file and what is wrong with it (the CLI prints it as one line): a truncated or
# bit-flipped safetensors file, a config.json that is not JSON or has a wrong field, weights
# whose shapes or dtypes the config cannot take, a tokenizer.json the library cannot load.

# dtype names a safetensors header may carry -> (bytes per element, floating point)
SAFETENSORS_DTYPES = {
    "BOOL": (1, False), "U8": (1, False), "I8": (1, False), "F8_E5M2": (1, True), "F8_E4M3": (1, True),
    "I16": (2, False), "U16": (2, False), "F16": (2, True), "BF16": (2, True), "I32": (4, False),
    "U32": (4, False), "F32": (4, True), "I64": (8, False), "U64": (8, False), "F64": (8, True),
}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit on the JSON header


def _read_text(file: Path, what: str) -> str:
    """A UTF-8 text file's contents; an unreadable or non-UTF-8 file is a CheckpointError naming it."""
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{file}: not a {what} (not UTF-8 text: byte {e.start} is {e.object[e.start]:#04x})") \
            from None
    except OSError as e:
        raise CheckpointError(f"{file}: cannot be read ({e.strerror or e})") from None


def read_safetensors_header(file: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from a safetensors file's header, read without loading
    any tensor, after checking that the header is well formed and that the file holds exactly
    the bytes the header describes (a truncated or padded file, a flipped bit in the length or
    the header, overlapping tensors: each a CheckpointError that names the file)."""
    file = Path(file)
    broken = f"{file}: truncated or corrupt safetensors file"
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            prefix = f.read(8)
            n = int.from_bytes(prefix, "little")
            raw = f.read(n) if len(prefix) == 8 and n <= min(size - 8, MAX_HEADER_BYTES) else b""
    except OSError as e:
        raise CheckpointError(f"{file}: cannot be read ({e.strerror or e})") from None
    if len(prefix) < 8:
        raise CheckpointError(f"{broken} ({size:,} bytes: too short for the 8-byte header length)")
    if n > size - 8 or n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{broken} (its length field says the header is {n:,} bytes; "
                              f"the file has {size - 8:,} bytes after it)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: corrupt safetensors header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: corrupt safetensors header (not a JSON object)")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (isinstance(dtype, str) and isinstance(shape, list)
                  and all(type(d) is int and d >= 0 for d in shape)
                  and type(begin) is int and type(end) is int and 0 <= begin <= end)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{file}: corrupt safetensors header (the entry of {name!r} is not "
                                  f"{{dtype, shape, data_offsets}}: {json.dumps(entry)[:80]})")
        if dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {dtype!r}, which tfamily cannot load "
                                  f"(known: {', '.join(SAFETENSORS_DTYPES)})")
        nbytes = SAFETENSORS_DTYPES[dtype][0]
        for d in shape:
            nbytes *= d
        if end - begin != nbytes:
            raise CheckpointError(f"{file}: corrupt safetensors header ({name!r} is {dtype} {tuple(shape)}, "
                                  f"{nbytes:,} bytes, but its data_offsets span {end - begin:,})")
        tensors[name] = (dtype, tuple(shape))
        spans.append((begin, end, name))
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise CheckpointError(f"{file}: corrupt safetensors header ({name!r} starts at byte {begin:,} of the "
                                  f"data, expected {covered:,}: tensors overlap or leave a gap)")
        covered = end
    data = size - 8 - n
    if data < covered:
        raise CheckpointError(f"{broken} (header says {covered:,} bytes of tensor data, file has {data:,})")
    if data > covered:
        raise CheckpointError(f"{file}: corrupt safetensors file (header says {covered:,} bytes of tensor data, "
                              f"file has {data:,}: {data - covered:,} bytes that no tensor accounts for)")
    return tensors


def read_config(path: str | Path) -> ModelConfig:
    """The checkpoint's ModelConfig; a config.json that is not JSON, or has an unknown field,
    a wrong type or a bad value, is a CheckpointError naming the file and the field."""
    from .config import ConfigError

    path = Path(path)
    recover(path)
    file = path / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{path} is not a tfamily checkpoint: {CONFIG} not found")
    try:
        return ModelConfig.from_json(_read_text(file, "config.json file"))
    except ConfigError as e:
        raise CheckpointError(f"{file}: {e}") from None


def _aliases(model: nn.Module) -> dict[str, set[str]]:
    """Each state-dict name -> every name of the same tensor (a tied head shares the embedding,
    and the file stores it once, under one of its names)."""
    names: dict[int, set[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), set()).add(name)
    return {name: group for group in names.values() for name in group}


def _config_fields_in(model: nn.Module, built: tuple, stored: tuple) -> str:
    """The config fields whose value sizes the model's tensor but not the stored one, as
    'd_model=64' (a guess at which field of config.json disagrees; '' when none stands out)."""
    cfg = getattr(model, "cfg", None)
    names = ("d_model", "vocab_size", "d_ff", "max_seq_len", "n_head", "d_head", "n_kv_head", "type_vocab_size",
             "num_labels")
    fields = [f"{n}={getattr(cfg, n)}" for n in names if cfg is not None and isinstance(getattr(cfg, n, None), int)
              and getattr(cfg, n) in built and getattr(cfg, n) not in stored]
    return ", ".join(fields[:2])


def check_weights(model: nn.Module, path: str | Path) -> None:
    """Check the checkpoint's model.safetensors against ``model`` (which may be on the meta
    device) from the file's header alone: the file is whole, every tensor is there under a
    known name, with the model's shape and a floating-point dtype where the model has one
    (F64, F16 and BF16 are converted on loading; integer weights are refused)."""
    path = Path(path)
    file = path / WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS}")
    stored = read_safetensors_header(file)
    expected = model.state_dict()
    aliases = _aliases(model)
    missing = sorted(n for n in expected if not aliases.get(n, {n}) & set(stored))
    unexpected = sorted(n for n in stored if n not in expected)
    if missing or unexpected:
        raise CheckpointError(f"{file} does not match {path / CONFIG}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    wrong = [(n, stored[n][1], tuple(t.shape)) for n, t in expected.items() if n in stored
             and stored[n][1] != tuple(t.shape)]
    if wrong:
        name, found, built = wrong[0]
        fields = _config_fields_in(model, built, found)
        more = f"; {len(wrong) - 1} more tensor(s) differ" if len(wrong) > 1 else ""
        raise CheckpointError(f"{path / CONFIG}: {fields + ' ' if fields else ''}disagrees with the weights "
                              f"({name} is {found} in {file}, the config makes it {built}{more})")
    bad = [(n, stored[n][0], t.dtype) for n, t in expected.items() if n in stored
           and SAFETENSORS_DTYPES[stored[n][0]][1] != t.is_floating_point()]
    if bad:
        name, dtype, want = bad[0]
        kind = "floating-point (F32; F64, F16 and BF16 are converted)" if want.is_floating_point else str(want)
        raise CheckpointError(f"{file}: {name} is stored as {dtype}, but the model needs {kind} weights"
                              + (f"; {len(bad) - 1} more tensor(s) too" if len(bad) > 1 else ""))


def check_checkpoint(path: str | Path) -> ModelConfig:
    """Read config.json and check model.safetensors against it, without loading a tensor (a
    model built on the meta device gives the names and shapes); returns the config. For
    commands that will load the weights later, after work a broken file would waste."""
    from .models import build_model

    cfg = read_config(path)
    with torch.device("meta"):
        model = build_model(cfg)
    check_weights(model, path)
    return cfg


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
    tok = read_tokenizer(path, cfg)
    return model.eval(), cfg, tok


def read_tokenizer(path: str | Path, cfg: ModelConfig | None = None) -> str | None:
    """The checkpoint's tokenizer.json text, or None when it has none, after checking that the
    tokenizers library can load it and (given ``cfg``) that its ids fit the embedding."""
    from .tokenizers.tokenizer import check_tokenizer_json

    file = Path(path) / TOKENIZER
    if not file.is_file():
        return None
    text = _read_text(file, "tokenizer.json file")
    try:
        rows = check_tokenizer_json(text, file)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if cfg is not None and rows > cfg.vocab_size:
        raise CheckpointError(f"{file} has ids up to {rows - 1}, but {Path(path) / CONFIG} says vocab_size="
                              f"{cfg.vocab_size}: this tokenizer belongs to another model")
    return text


def load_weights(model: nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Copy a checkpoint's weights into ``model`` in place (tied tensors were stored once),
    converting floating-point dtypes to the model's. The file is checked first
    (``check_weights``): a fault is a CheckpointError that names the file and the tensor."""
    file = Path(path) / WEIGHTS
    check_weights(model, path)
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(file), strict=False, device=str(device))
    except (safetensors.SafetensorError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{file}: could not be loaded ({' '.join(str(e).split())[:300]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{file} does not match this model: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")


def read_chat_template(path: str | Path) -> str | None:
    """The checkpoint's chat template (Jinja text), or None when it has none."""
    file = Path(path) / CHAT_TEMPLATE
    return _read_text(file, "chat template") if file.is_file() else None


def load_trainer_state(path: str | Path, check_train_config: Callable[[dict], None] | None = None,
                       ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(trainer.json as a dict, trainer.safetensors' tensors) of a training checkpoint, each
    file checked: a fault is a CheckpointError that names the file. ``check_train_config``
    (the trainer's ``TrainConfig.check_fields``) checks the saved training settings' fields."""
    path = Path(path)
    recover(path)
    file = path / TRAINER_JSON
    if not file.is_file():
        raise CheckpointError(f"{path} has no training state ({TRAINER_JSON}); it cannot be resumed")
    try:
        state = json.loads(_read_text(file, "trainer.json file"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: must hold a JSON object, got {type(state).__name__}")
    for key, types, what in (("step", int, "a step count"), ("elapsed", (int, float), "seconds"),
                             ("train_config", dict, "an object"), ("optimizer_groups", list, "a list")):
        if not isinstance(state.get(key), types) or isinstance(state.get(key), bool):
            raise CheckpointError(f"{file}: field {key!r} must be {what}, got {json.dumps(state.get(key))[:60]}")
    from .config import ConfigError
    try:
        if check_train_config is not None:
            check_train_config(state["train_config"])
    except ConfigError as e:
        raise CheckpointError(f"{file}: train_config: {e}") from None
    tensors_file = path / TRAINER_TENSORS
    tensors: dict[str, torch.Tensor] = {}
    if tensors_file.is_file():
        read_safetensors_header(tensors_file)
        try:
            tensors = safetensors.torch.load_file(str(tensors_file))
        except (safetensors.SafetensorError, OSError) as e:
            raise CheckpointError(f"{tensors_file}: could not be loaded ({' '.join(str(e).split())[:300]})") \
                from None
    return state, tensors


# ---- loading for inference (the CLI's commands and the server) --------------------------------

def checkpoint_tokenizer(path: str | Path, cfg: ModelConfig):
    """The checkpoint's Tokenizer, checked against its config (ids within the embedding)."""
    from .tokenizers import Tokenizer
    text = read_tokenizer(path, cfg)
    if text is None:
        raise CheckpointError(f"{path} has no tokenizer.json; reading and writing text needs one")
    return Tokenizer.from_str(text, where=Path(path) / TOKENIZER)


def load_for_inference(path: str | Path, weights: str = "fp32", pack: bool = True,
                       device: str | torch.device = "cpu"):
    """(model in eval mode, Tokenizer) ready to run: weights as ``weights`` (fp32, bf16, int8)
    and, with ``pack``, its linear layers packed for oneDNN (``nn.quant.convert_weights``:
    faster, but no gradients). Every fault is a CheckpointError naming the file."""
    from .nn.quant import convert_weights
    from .tokenizers import Tokenizer
    model, cfg, tok_json = load_model(path, device=device)
    if tok_json is None:
        raise CheckpointError(f"{path} has no tokenizer.json; reading and writing text needs one")
    try:
        model = convert_weights(model, weights, pack=pack)
    except ValueError as e:
        raise CheckpointError(f"--weights {weights}: {e}") from None
    return model, Tokenizer.from_str(tok_json, where=Path(path) / TOKENIZER)
