"""Reading and writing Hugging Face model folders, for any family.

A Hugging Face folder is plain files:

    config.json                       architecture (``model_type`` names the family)
    model.safetensors                 weights, or sharded: model.safetensors.index.json + shards
    pytorch_model.bin                 older weights (a pickle; read with ``weights_only=True`` only)
    tokenizer.json                    the `tokenizers` library's one-file format, or the older
    vocab.json + merges.txt           byte-level BPE pair (GPT-2, RoBERTa, BART)

This module knows nothing about any family's weight names: the family mappings
(``hf_gpt2`` …) turn names and shapes, and ``registry`` ties the two together.

Safety: safetensors files hold only tensors; a pickled ``.bin`` can run code when
unpickled, so it is read with ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers. Files are written to a temporary name and renamed, so a
failed export never leaves half a file over a good one.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..files import atomic_write, atomic_write_text

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"

StateDict = dict[str, torch.Tensor]


class InteropError(ValueError):
    """A Hugging Face folder or state dict does not fit what we expected; the message says how."""


class MissingFileError(InteropError, FileNotFoundError):
    """A file the folder needs is not there; the message names it."""


# ---- reading ---------------------------------------------------------------------------

def read_config(folder: str | os.PathLike) -> dict:
    """config.json as a dict (it must exist and be a JSON object)."""
    path = Path(folder) / CONFIG_FILE
    if not Path(folder).is_dir():
        raise MissingFileError(f"{folder} is not a folder")
    if not path.is_file():
        raise MissingFileError(f"{path} not found: a Hugging Face model folder needs a {CONFIG_FILE}")
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InteropError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InteropError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_text(path: Path) -> str:
    """A UTF-8 text file of the folder; unreadable or not UTF-8 is an InteropError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InteropError(f"{path} is not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    except OSError as e:
        raise InteropError(f"{path} cannot be read ({e.strerror or e})") from None


def load_safetensors(path: Path) -> StateDict:
    """All tensors of one safetensors file, its header checked first (a truncated file, a
    flipped bit, overlapping tensors), every fault an InteropError naming the file."""
    from ..checkpoint import CheckpointError, read_safetensors_header

    try:
        read_safetensors_header(path)
    except CheckpointError as e:
        raise InteropError(str(e)) from None
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        raise InteropError(f"{path}: could not be loaded ({' '.join(str(e).split())[:300]})") from None


def read_weights(folder: str | os.PathLike) -> StateDict:
    """All tensors of the folder, from the first weight format found (safetensors first).

    Order of preference: model.safetensors, sharded safetensors, pytorch_model.bin,
    sharded .bin. Safetensors come first because they cannot carry code.
    """
    folder = Path(folder)
    if (folder / SAFETENSORS_FILE).is_file():
        return load_safetensors(folder / SAFETENSORS_FILE)
    if (folder / SAFETENSORS_INDEX).is_file():
        return _read_sharded(folder, SAFETENSORS_INDEX, load_safetensors)
    if (folder / PICKLE_FILE).is_file():
        return _load_pickle_weights(folder / PICKLE_FILE)
    if (folder / PICKLE_INDEX).is_file():
        return _read_sharded(folder, PICKLE_INDEX, _load_pickle_weights)
    raise MissingFileError(
        f"no weights in {folder}: expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX}, {PICKLE_FILE} or {PICKLE_INDEX}")


def _load_pickle_weights(path: Path) -> StateDict:
    """A pytorch_model.bin, unpickled with ``weights_only=True`` so it cannot run code."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the restricted unpickler raises UnpicklingError, others for corrupt files
        raise InteropError(f"{path} could not be loaded as plain tensors (weights_only=True): {e}") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InteropError(f"{path} does not hold a flat name -> tensor dict")
    return dict(sd)


def _read_sharded(folder: Path, index_name: str, load_one) -> StateDict:
    """Load every shard named in an index file's ``weight_map`` (each shard once). Every shard
    name is checked to be a file inside the folder before any shard is opened."""
    index_path = folder / index_name
    try:
        weight_map = json.loads(_read_text(index_path))["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InteropError(f"{index_path} is not a valid shard index (needs a 'weight_map'): {e}") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InteropError(f"{index_path} is not a valid shard index: 'weight_map' must map tensor names to "
                           "shard file names")
    shards = {shard: _inside(folder, shard, index_path) for shard in sorted(set(weight_map.values()))}
    sd: StateDict = {}
    for shard, path in shards.items():
        part = load_one(path)
        sd.update({name: part[name] for name, file in weight_map.items() if file == shard and name in part})
    missing = sorted(set(weight_map) - set(sd))
    if missing:
        raise InteropError(f"{index_path} lists tensors its shards do not hold: {', '.join(missing[:10])}")
    return sd


def _inside(folder: Path, name: str, referrer: Path) -> Path:
    """A file named by an index, which must be a plain file name inside the folder."""
    if Path(name).name != name or name in ("", ".", ".."):
        raise InteropError(f"{referrer} names shard {name!r}, which is not a plain file name in the folder")
    path = folder / name
    if not path.is_file():
        raise MissingFileError(f"shard {path} (listed in {referrer.name}) not found")
    return path


def read_tokenizer_json(folder: str | os.PathLike) -> str | None:
    """The folder's tokenizer as tokenizer.json text, or None when it has none.

    tokenizer.json is returned as is; a vocab.json + merges.txt pair (GPT-2 folders that
    predate tokenizer.json) is turned into the equivalent byte-level BPE tokenizer, and a
    BERT vocab.txt into a WordPiece tokenizer (lower-casing as tokenizer_config.json says).
    """
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if path.is_file():
        return _read_text(path)
    if (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
        return byte_level_bpe_from_files(folder / VOCAB_FILE, folder / MERGES_FILE,
                                         _declared_special_tokens(folder)).to_str()
    if (folder / "vocab.txt").is_file():
        from ..tokenizers import Tokenizer
        return Tokenizer.from_vocab_txt(folder / "vocab.txt", lowercase=_do_lower_case(folder)).to_str()
    return None


def _do_lower_case(folder: Path) -> bool:
    """tokenizer_config.json's do_lower_case (BERT's default, True, when it is not given)."""
    path = folder / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        config = {}
    return bool(config.get("do_lower_case", True)) if isinstance(config, dict) else True


def byte_level_bpe_from_files(vocab: Path, merges: Path, special_tokens: list[str] = ()):
    """A `tokenizers.Tokenizer` equal to GPT-2's, built from its two vocabulary files.

    GPT-2 splits text with its regex into words, maps every byte to a printable character
    (so no text is ever unknown), then applies BPE merges; no prefix space is added. Tokens
    written like ``<|endoftext|>`` cannot come out of the merges, so they are added as
    special tokens, matched whole before the BPE runs.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    vocab_tokens = tok.get_vocab()
    control = [t for t in vocab_tokens if re.fullmatch(r"<\|[^|\s]+\|>", t)]
    specials = [t for t in dict.fromkeys([*special_tokens, *control]) if t in vocab_tokens]
    if specials:
        tok.add_special_tokens(specials)
    return tok


def _declared_special_tokens(folder: Path) -> list[str]:
    """Special-token strings named in special_tokens_map.json / tokenizer_config.json, if any."""
    found: list[str] = []
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
            value = data.get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                found.append(value)
    return found


# ---- writing ---------------------------------------------------------------------------

def write_folder(folder: str | os.PathLike, config: dict, state_dict: Mapping[str, torch.Tensor],
                 tokenizer_json: str | None = None) -> Path:
    """Write config.json, model.safetensors and (if given) tokenizer.json into ``folder``.

    Tensors must not share storage (safetensors stores each once by name, so a tied copy
    would be ambiguous): the family mapping drops tied duplicates before this point.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _plain_tensors(state_dict)
    if tokenizer_json is not None:
        _check_json(tokenizer_json, "tokenizer_json")
    atomic_write(folder / SAFETENSORS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer_json is not None:
        atomic_write_text(folder / TOKENIZER_FILE, tokenizer_json)
    return folder


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Detached, contiguous CPU tensors that each own their storage; aliases are an error."""
    seen: dict[tuple, str] = {}
    out: StateDict = {}
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise InteropError(f"state dict entry {name!r} is a {type(t).__name__}, not a tensor")
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if key in seen and t.numel():
            raise InteropError(f"{name!r} and {seen[key]!r} are the same tensor (tied weights); "
                               "the family mapping must write a tied weight once")
        seen[key] = name
        t = t.detach().to("cpu").contiguous()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # a view into a larger buffer: safetensors wants each tensor on its own
        out[name] = t
    return out


def _check_json(text: str, what: str) -> None:
    try:
        json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        raise InteropError(f"{what} is not valid JSON text: {e}") from None


# ---- checking a state dict against expected names and shapes -------------------------------

def check_names_and_shapes(found: Mapping[str, torch.Tensor], expected: Mapping[str, tuple],
                           where: str) -> None:
    """Raise one InteropError listing every missing name, unexpected name and wrong shape."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{n}: expected {tuple(expected[n])}, found {tuple(found[n].shape)}"
             for n in sorted(set(found) & set(expected)) if tuple(found[n].shape) != tuple(expected[n])]
    problems = []
    if missing:
        problems.append(f"missing weights: {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected weights: {_some(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches: {_some(wrong)}")
    if problems:
        raise InteropError(f"{where}: " + "; ".join(problems))


def _some(items: list[str], limit: int = 10) -> str:
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str, ignored: re.Pattern) -> StateDict:
    """Names without the model-class prefix (``transformer.``, ``model.``; files saved from the
    bare backbone have none), minus buffers that are not weights (``ignored``)."""
    out: StateDict = {}
    for name, t in sd.items():
        bare = name[len(prefix):] if name.startswith(prefix) else name
        if ignored.fullmatch(bare):
            continue
        if bare in out:
            raise InteropError(f"weight {bare!r} appears both with and without the {prefix!r} prefix")
        out[bare] = t
    return out


def drop_tied_head(hf: StateDict, embed_name: str) -> None:
    """A tied config takes the head from the embedding; a stored copy is redundant (HF ignores it too)."""
    head = hf.pop("lm_head.weight", None)
    emb = hf.get(embed_name)
    if head is not None and emb is not None and (head.shape != emb.shape or not torch.equal(head, emb)):
        warnings.warn(f"tie_word_embeddings is true but lm_head.weight differs from {embed_name}; "
                      f"using {embed_name}, as transformers does")


def model_shapes(cfg) -> dict[str, tuple]:
    """Our state dict's shapes for ``cfg``, from a model built on the meta device (no memory)."""
    from ..models import build_model

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}


def merged_hf_config(hf: Mapping, model_type: str, defaults: Mapping, required: Mapping, wiring: str) -> dict:
    """An HF config.json dict reduced to the keys a family reads (missing ones from ``defaults``),
    after checking the model type and the options that must keep one value (``required``)."""
    from ..config import ConfigError

    found = hf.get("model_type", model_type)
    if found != model_type:
        raise ConfigError(f"model_type is {found!r}, expected {model_type!r}")
    c = {**defaults, **{k: v for k, v in hf.items() if k in defaults}}
    for name, default in defaults.items():  # a value of another type than the default's is named here
        value = c[name]
        if value is None or default is None or name.endswith("_token_id"):  # token ids may be lists (Llama 3)
            continue
        kinds = ((bool,) if isinstance(default, bool) else (int,) if isinstance(default, int)
                 else (int, float) if isinstance(default, float) else (type(default),))
        if not isinstance(value, kinds) or (isinstance(value, bool) and not isinstance(default, bool)):
            raise ConfigError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}; "
                              f"got {type(value).__name__} {value!r}")
    for name, allowed in required.items():
        if c[name] != allowed:
            raise ConfigError(f"{name}={c[name]!r} is not supported (only {allowed!r}): {wiring} has no such option")
    return c


# ---- stacked name maps -------------------------------------------------------------------
# A family's mapping is a list of (our name, HF names): our tensor is the HF tensors stacked
# along rows in that order (q|k|v, k|v), each with an equal share of the rows.

def stacked_shapes(cfg, pairs: list[tuple[str, tuple[str, ...]]], family: str) -> tuple[dict, dict]:
    """(our shapes, HF shapes) for the mapping, checking it covers our state dict exactly (a
    mismatch is a bug in the family's mapping, not in the user's file)."""
    ours = model_shapes(cfg)
    mapped = {name for name, _ in pairs}
    if mapped != set(ours):
        raise InteropError(f"{family} mapping and model disagree: unmapped {sorted(set(ours) - mapped)}, "
                           f"unknown {sorted(mapped - set(ours))}")
    theirs = {}
    for name, hf_names in pairs:
        rows = ours[name][0] // len(hf_names)
        for n in hf_names:
            theirs[n] = (rows, *ours[name][1:])
    return ours, theirs


def stacked_from_hf(hf: Mapping[str, torch.Tensor], cfg, pairs: list, family: str) -> StateDict:
    """Our state dict from HF tensors (names and shapes checked first, all problems in one error)."""
    _, theirs = stacked_shapes(cfg, pairs, family)
    check_names_and_shapes(hf, theirs, f"{family} weights do not match config.json")
    return {ours: torch.cat([hf[n] for n in names], dim=0).contiguous() for ours, names in pairs}


def stacked_to_hf(sd: Mapping[str, torch.Tensor], cfg, pairs: list, family: str,
                  skip: frozenset[str] = frozenset()) -> StateDict:
    """HF tensors from our state dict, split back along rows; ``skip`` our names not written
    (a tied head, stored once as the embedding)."""
    ours, _ = stacked_shapes(cfg, pairs, family)
    check_names_and_shapes(sd, ours, "model state dict does not match its config")
    out: StateDict = {}
    for name, hf_names in pairs:
        if name in skip:
            continue
        for hf_name, part in zip(hf_names, sd[name].chunk(len(hf_names), dim=0)):
            out[hf_name] = part.detach().contiguous()
    return out
