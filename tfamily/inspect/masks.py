"""Attention masks and position ids of one real training example, as the model receives them.

    example text ─ tokenizer ─ raw batch ─ the family's objective ``prepare`` ─ Batch
                 ─ model(**batch.inputs) under ``attention.capture`` and position hooks
                 ─ what every attention module let each query see (the mask it was handed,
                   with any -inf of its position scores), and the ids every position module read

Nothing here rebuilds a mask or a position: the Batch is the objective's (the one the trainer
gets), the masks are those the model's attention applied, the position ids those its position
modules (learned, sinusoidal, rotary, GLM 2-D, T5's relative buckets) were called with. So a
picture cannot drift from the code: change the objective or the model, and the picture changes.

The example's raw batch is made per training recipe (``family_of(cfg).recipe``), as
``training.recipes`` does from its data:

    text       a token window; causal LM targets (decoders; Transformer-XL over 1.5 segments)
    sentences  a sentence pair [CLS] A [SEP] B [SEP] with its segments; MLM's [MASK]s
    pairs      translation (source, target), or a text corrupted by T5 span corruption / BART denoising
    glm        a text with given spans blanked ([MASK]s; or one [gMASK] suffix: a prefix LM)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..models.family import Family, family_of
from ..nn.positions import (GLMPositions, LearnedPositions, RelativePositionBias, RotaryEmbedding,
                            SinusoidalPositions, relative_bucket)
from ..nn.xl import XLRelativePositions
from ..objectives.base import IGNORE_INDEX, Batch
from .attention import Region, capture, place, streams_of, token_label

ENCODER_DECODER_OBJECTIVES = ("translation", "span_corruption", "denoising")  # as data.objective chooses
GLM_TEXT, GLM_BLANKS = "1 2 3 4 5 6", ("3", "5 6")  # GLM's paper example: 3 and 5 6 blanked
DEFAULT_TEXT = {"text": "to be or not to be that is the question",
                "sentences": "my dog is hairy | he likes playing",
                "pairs": "thank you for inviting me to your party last week .",
                "glm": GLM_TEXT}
TRANSLATION = ("a man rides a bike .", "ein mann fährt fahrrad .")


@dataclass(frozen=True)
class Example:
    """What to draw: a text and, where the objective is random, how to make it show something."""

    text: str | None = None  # None: the recipe's DEFAULT_TEXT
    target: str | None = None  # translation: the target side
    objective: str | None = None  # encoder-decoder: one of ENCODER_DECODER_OBJECTIVES (None: by the model's positions)
    spans: tuple[tuple[int, int], ...] | None = None  # GLM: (start, length) in tokens; None: the objective draws
    blanks: tuple[str, ...] = ()  # GLM, without spans: pieces of the text to blank (first occurrences)
    prefix_lm: bool = False  # GLM: one [gMASK] blank over the second half, i.e. a prefix LM
    seed: int = 0


@dataclass
class Strip:
    """Per-token rows of one input sequence: the tokens, then position ids, segments, targets."""

    title: str
    tokens: list[str]
    rows: list[tuple[str, list[str]]]
    regions: list[Region] = field(default_factory=list)


@dataclass
class Grid:
    """A (rows x cols) matrix to draw: a mask (1 = may attend), bucket numbers or distances."""

    title: str
    values: torch.Tensor  # (R, C) int64; -1 = nothing there (a masked cell of a distance grid)
    rows: list[str]
    cols: list[str]
    kind: str  # "mask" or "int"
    row_regions: list[Region] = field(default_factory=list)
    col_regions: list[Region] = field(default_factory=list)


@dataclass
class MaskPicture:
    name: str  # a file stem, e.g. "glm-tiny-prefix-lm"
    title: str
    notes: list[str]
    batch: Batch
    strips: list[Strip]
    grids: list[Grid]
    positions: dict[str, torch.Tensor]  # position module -> the ids it was called with (first row)


# ---------------------------------------------------------------------- raw batches per recipe
def default_objective(cfg) -> str:
    """An encoder-decoder's pretraining objective when none is named: T5's span corruption with
    T5's relative positions, BART's denoising with learned ones, translation otherwise."""
    return {"t5_relative": "span_corruption", "learned": "denoising"}.get(cfg.position, "translation")


def _need(tokenizer, *roles: str) -> dict[str, int]:
    ids = tokenizer.special_ids
    missing = [r for r in roles if ids.get(r) is None]
    if missing:
        raise ValueError(f"this example needs the tokenizer's {', '.join(missing)} token(s); it has {sorted(ids)}")
    return ids


def text_batch(family: Family, cfg, tokenizer, ex: Example) -> tuple[Batch, list[str]]:
    """A causal-LM window. Families that train past one context (Transformer-XL) get 1.5 contexts,
    so the second segment's keys begin with the first one's memory."""
    from ..objectives import CausalLMObjective
    ids = tokenizer.encode(ex.text)
    if len(ids) < 2:
        raise ValueError("the example text needs at least 2 tokens")
    notes = ["causal LM: the targets are the inputs shifted by one; each token sees itself and the tokens before"]
    if family.windows_past_context:
        n = cfg.max_seq_len + max(1, cfg.max_seq_len // 2)
        ids = (ids * math.ceil((n + 1) / len(ids)))[:n + 1]
        notes.append(f"a window of {n} tokens runs as segments of {cfg.max_seq_len} (max_seq_len); the second "
                     f"segment also attends to the memory: up to {cfg.mem_len} (mem_len) hidden states of the "
                     "tokens before it, kept from the first")
    else:
        ids = ids[:cfg.max_seq_len + 1]
    return CausalLMObjective().prepare(torch.tensor([ids])), notes


def sentence_batch(family: Family, cfg, tokenizer, ex: Example) -> tuple[Batch, list[str]]:
    """A BERT sentence pair ("A | B"), masked by the MLM objective with the first seed from
    ``ex.seed`` on that gives at least one [MASK]."""
    from ..data.sentences import SentencePairs
    from ..objectives.mlm import MaskedLMObjective
    text = ex.text
    if "|" in text:
        a_text, b_text = (s.strip() for s in text.split("|", 1))
    else:
        words = text.split()
        a_text, b_text = " ".join(words[:len(words) // 2]), " ".join(words[len(words) // 2:])
    (a, aw), (b, bw) = tokenizer.encode_with_words(a_text), tokenizer.encode_with_words(b_text)
    if not a or not b:
        raise ValueError("a sentence-pair example needs two non-empty halves: 'first sentence | second sentence'")
    bw = [w + max(aw) + 1 for w in bw]
    objective = MaskedLMObjective.from_tokenizer(tokenizer, nsp_weight=1.0 if cfg.nsp else 0.0)
    arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    for seed in range(ex.seed, ex.seed + 1000):
        raw = SentencePairs([arr(a)], [arr(b)], [arr(aw)], [arr(bw)], np.zeros(1, np.int64),
                            np.asarray([seed], np.uint64))
        batch = objective.prepare(raw)
        if bool((batch.inputs["ids"] == objective.mask_id).any()):
            break
    return batch, [f"masked LM: [CLS] A [SEP] B [SEP], segment 0 then 1; each token chosen with p="
                   f"{objective.mask_prob}, of those 80 % [MASK], 10 % random, 10 % kept (masking seed {seed}); "
                   "the targets are the chosen tokens' originals; every token sees every token"]


def pair_batch(family: Family, cfg, tokenizer, ex: Example) -> tuple[Batch, list[str]]:
    """Translation, T5 span corruption or BART denoising (``ex.objective``)."""
    from ..objectives import DenoisingObjective, Seq2SeqObjective, SeededRows, SpanCorruptionObjective
    from ..tokenizers.sentinels import sentinel_ids
    objective = ex.objective or default_objective(cfg)
    if objective not in ENCODER_DECODER_OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(ENCODER_DECODER_OBJECTIVES)}")
    ids = _need(tokenizer, "pad", "eos")
    start = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else ids.get("bos")
    if start is None:
        raise ValueError("the model has no decoder_start_token_id and the tokenizer no <s> to start the target from")
    common = dict(pad_id=ids["pad"], start_id=start, eos_id=ids["eos"])
    if objective == "translation":
        source, target = ex.text, ex.target
        if target is None:
            if "=>" not in source:
                raise ValueError("a translation example needs a target: give --target, or 'source => target'")
            source, target = (s.strip() for s in source.split("=>", 1))
        pair = (np.asarray(tokenizer.encode(source)), np.asarray(tokenizer.encode(target)))
        return Seq2SeqObjective(**common).prepare([pair]), [
            "translation: the encoder reads the source + </s>; the decoder reads <s> + the target and predicts "
            "it shifted by one, ending with </s>"]
    rows = SeededRows(torch.tensor([tokenizer.encode(ex.text)]), torch.tensor([ex.seed]))
    if objective == "span_corruption":
        sentinels = sentinel_ids(tokenizer)
        if len(sentinels) < 2:
            raise ValueError("span corruption needs T5's sentinel tokens <extra_id_0>, ... in the tokenizer; "
                             "choose another objective (--objective translation or denoising)")
        return SpanCorruptionObjective(sentinels, **common).prepare(rows), [
            f"T5 span corruption (seed {ex.seed}): 15 % of the tokens in spans of mean length 3, each span one "
            "sentinel in the source; the target lists each sentinel and its span; relative-position buckets "
            "instead of position ids (bidirectional in the encoder, only backwards in the decoder)"]
    mask = _need(tokenizer, "mask")["mask"]
    marks = (".", "!", "?", "\u3002", "\uff01", "\uff1f")  # sentence ends, as training.recipes.denoising_data
    ends = [i for i in (tokenizer.token_to_id(p) for p in marks) if i is not None]
    return DenoisingObjective(mask, sentence_ends=ends, **common).prepare(rows), [
        f"BART denoising (seed {ex.seed}): sentences shuffled, then spans of Poisson(3) length (30 % of the "
        "tokens) each replaced by one <mask>; the decoder rebuilds the original text"]


def glm_batch(family: Family, cfg, tokenizer, ex: Example) -> tuple[Batch, list[str]]:
    """GLM blank infilling: ``ex.spans`` blanked by [MASK]s (or, with ``prefix_lm``, one [gMASK]
    suffix), else spans drawn by the objective from ``ex.seed``."""
    from ..objectives import GLMObjective, GLMRaw
    objective = GLMObjective.from_tokenizer(tokenizer, max_len=cfg.max_seq_len)
    tokens = np.asarray(tokenizer.encode(ex.text), dtype=np.int64)
    n = len(tokens)
    if n < 2:
        raise ValueError("a GLM example needs at least 2 tokens")
    rng = np.random.default_rng(ex.seed)
    if ex.prefix_lm:
        if objective.gmask_id is None:
            raise ValueError("a prefix-LM example needs the tokenizer's [gMASK]")
        spans = list(ex.spans or [(n // 2, n - n // 2)])
        batch = objective.collate([objective.build_row(tokens, spans, rng, objective.gmask_id)])
        return batch, ["GLM with one [gMASK] blank at the end, i.e. a prefix LM: Part A (the prefix) is read "
                       "bidirectionally, Part B ([S] + the rest) left to right; 2-D positions: position in Part A, "
                       "and position inside the span"]
    spans = ex.spans if ex.spans is not None else (spans_of(tokenizer, ex.text, ex.blanks) if ex.blanks else None)
    if spans is not None:
        for start, length in spans:
            if start < 0 or length < 1 or start + length > n:
                raise ValueError(f"span ({start}, {length}) does not fit the {n} tokens of the example")
        batch = objective.collate([objective.build_row(tokens, list(spans), rng)])
        how = f"spans {list(spans)} (start, length) blanked"
    else:
        batch = objective.prepare(GLMRaw(torch.tensor([tokens.tolist()]), torch.tensor([ex.seed])))
        how = f"spans drawn by the objective (seed {ex.seed}): {batch.extra['spans'][0]}"
    return batch, [f"GLM blank infilling, {how}: Part A is the text with one [MASK] per span, read "
                   "bidirectionally; Part B is the spans in random order, each after [S], read left to right; "
                   "row 0 of the positions is the place in Part A (a span: its [MASK]'s), row 1 the place in the span"]


def spans_of(tokenizer, text: str, pieces: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, length) in tokens of the first occurrence of each piece of ``text``, found by
    tokenising the text up to the piece's start and end (a space before it stays outside)."""
    spans = []
    for piece in pieces:
        at = text.find(piece)
        if at < 0:
            raise ValueError(f"{piece!r} is not in the example text {text!r}")
        end = len(tokenizer.encode(text[:at + len(piece)]))
        start = len(tokenizer.encode(text[:at]))
        if start >= end:  # the space before it joined the piece's first token (byte-level BPE)
            start = len(tokenizer.encode(text[:at].rstrip()))
        spans.append((start, end - start))
    return spans


BATCHES: dict[str, Callable[..., tuple[Batch, list[str]]]] = {  # by training recipe (family.recipe)
    "text": text_batch, "sentences": sentence_batch, "pairs": pair_batch, "glm": glm_batch}


# ---------------------------------------------------------------------- position ids, as read
POSITION_MODULES = (LearnedPositions, SinusoidalPositions, GLMPositions, RotaryEmbedding, RelativePositionBias)


@dataclass
class PositionCall:
    name: str  # module path, e.g. "backbone.pos_emb", "enc_rel"
    module: nn.Module
    args: list[torch.Tensor]  # the position tensors it was called with
    before: int  # attention records made before it: the next one is of the stack it feeds


@contextmanager
def position_calls(model: nn.Module, records: list) -> Iterator[list[PositionCall]]:
    """Record the inputs of every position module (not the two tables inside GLM's 2-D one)."""
    calls: list[PositionCall] = []
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, POSITION_MODULES)]
    outer = [n for n, m in found if isinstance(m, GLMPositions)]
    handles = []
    for name, module in found:
        if any(name.startswith(o + ".") for o in outer):
            continue
        hook = lambda mod, args, name=name: calls.append(  # noqa: E731
            PositionCall(name, mod, [a.detach().cpu() for a in args if isinstance(a, torch.Tensor)], len(records)))
        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------- the picture
def _targets_row(tokenizer, targets: torch.Tensor) -> list[str]:
    return [token_label(tokenizer.token_text(int(t))) if int(t) != IGNORE_INDEX else "\u00b7" for t in targets]


@torch.inference_mode()
def mask_picture(model: nn.Module, tokenizer, example: Example = Example(), name: str = "") -> MaskPicture:
    """The Batch of one example as the model's family trains on it, run through ``model``, with
    the masks its attention applied and the position ids its position modules read."""
    cfg = model.cfg
    family = family_of(cfg)
    if example.text is None:
        example = _with_defaults(family, cfg, example)
    batch, notes = BATCHES[family.recipe](family, cfg, tokenizer, example)
    model.eval()
    device = next(model.parameters()).device
    with capture(model) as records, position_calls(model, records) as calls:
        model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.inputs.items()})
    streams = streams_of(batch.inputs, tokenizer)
    placed = place(records, streams)
    relative_scores = any(isinstance(m, XLRelativePositions) for m in model.modules())
    stack_of = lambda call: records[call.before].stack if call.before < len(records) else ""  # noqa: E731

    # strips: per stream, its tokens and every per-token row the model and the loss read
    rows: dict[str, list[tuple[str, list[str]]]] = {s: [] for s in streams}
    positions: dict[str, torch.Tensor] = {}
    grids: list[Grid] = []
    for call in calls:
        stack = stack_of(call)
        stack = stack if stack in streams else next(iter(streams))
        stream = streams[stack]
        if isinstance(call.module, RelativePositionBias):
            q, k = call.args
            m = call.module
            buckets = relative_bucket(k[None, :] - q[:, None], m.bidirectional, m.buckets, m.max_distance)
            positions[call.name] = buckets
            grids.append(Grid(f"{call.name}: relative-position bucket of each (query, key), "
                              f"{'both directions' if m.bidirectional else 'backwards only'}, "
                              f"{m.buckets} buckets up to distance {m.max_distance}",
                              buckets, stream.labels[:len(q)], stream.labels[:len(k)], "int"))
            continue
        ids = call.args[0][0]  # first row: (T,) or GLM's (2, T)
        positions[call.name] = ids
        if ids.dim() == 2:
            rows[stack].append((f"{call.name} [0] place in Part A", [str(int(v)) for v in ids[0]]))
            rows[stack].append((f"{call.name} [1] place in span", [str(int(v)) for v in ids[1]]))
        else:
            rows[stack].append((f"{call.name} position id", [str(int(v)) for v in ids]))
    if "token_type_ids" in batch.inputs:
        rows[""].append(("token_type_ids (segment)", [str(int(v)) for v in batch.inputs["token_type_ids"][0]]))
    target_stream = "decoder" if "decoder" in streams else ""
    rows[target_stream].append(("target (loss)", _targets_row(tokenizer, batch.targets[0])))
    for p in placed:  # a stream run in segments (Transformer-XL): mark them
        stream = streams.get(p.record.stack, streams[next(iter(streams))])
        if p.calls > 1 and not stream.regions:
            ends = [0]
            for o in placed:
                if o.record.name == p.record.name:
                    ends.append(ends[-1] + o.record.probs.shape[-2])
            stream.regions = [(f"segment {i + 1}", a, b) for i, (a, b) in enumerate(zip(ends, ends[1:]))]
    titles = {"": "input", "encoder": "encoder input (source)", "decoder": "decoder input (target side)"}
    strips = [Strip(titles[s], streams[s].labels, rows[s], streams[s].regions) for s in streams]

    # grids: the mask of the first layer of each stack and kind, every call (segments)
    first: dict[tuple[str, str], int] = {}
    for p in placed:
        key = (p.record.stack, p.record.kind)
        first.setdefault(key, p.record.layer)
        if p.record.layer != first[key]:
            continue
        same = all(bool((o.record.allowed[0, 0] == p.record.allowed[0, 0]).all()) for o in placed
                   if (o.record.stack, o.record.kind, o.call) == (*key, p.call)
                   and o.record.allowed.shape == p.record.allowed.shape)
        where = f"{p.record.stack} " if p.record.stack else ""
        segment = f", segment {p.call + 1} of {p.calls}" if p.calls > 1 else ""
        grids.append(Grid(f"{where}{p.record.kind}-attention mask{segment} (1 = may attend; "
                          f"{'the same in every layer' if same else 'layer ' + str(p.record.layer)})",
                          p.record.allowed[0, 0].long(), p.queries, p.keys, "mask", p.query_regions, p.key_regions))
        if relative_scores and not p.record.cross and p.call == p.calls - 1:
            t, s = p.record.allowed.shape[-2:]
            distance = torch.arange(t)[:, None] + (s - t) - torch.arange(s)[None, :]
            distance = distance.masked_fill(~p.record.allowed[0, 0], -1)
            grids.append(Grid(f"{where}query-key distance{segment}: no position ids; attention scores each "
                              "distance (Transformer-XL's relative positions)", distance, p.queries, p.keys, "int",
                              p.query_regions, p.key_regions))
    title = f"{name or family.name}: {family.title}"
    return MaskPicture(name or family.name, title, notes, batch, strips, grids, positions)


def _with_defaults(family: Family, cfg, ex: Example) -> Example:
    """The recipe's default text (for GLM's paper example its spans; for translation a pair)."""
    from dataclasses import replace
    if family.recipe == "pairs" and (ex.objective or default_objective(cfg)) == "translation":
        return replace(ex, text=TRANSLATION[0], target=ex.target or TRANSLATION[1])
    blanks = GLM_BLANKS if family.recipe == "glm" and ex.spans is None and not ex.prefix_lm else ex.blanks
    return replace(ex, text=DEFAULT_TEXT[family.recipe], blanks=blanks)


# ---------------------------------------------------------------------- presets: a model and a tokenizer
def preset_tokenizer(family: Family, objective: str | None = None, text: str | None = None):
    """A small tokenizer of the kind `tfamily train` makes for this family's recipe, trained on
    the example text, with the specials its objective needs."""
    from ..tokenizers import Tokenizer
    from ..tokenizers.sentinels import add_sentinels
    from ..tokenizers.special import GLM_SPECIAL_TOKENS, SPECIAL_TOKENS, WORDPIECE_SPECIAL_TOKENS
    texts = [text or DEFAULT_TEXT[family.recipe], *TRANSLATION]
    if family.recipe == "sentences":
        return Tokenizer.train("wordpiece", texts, vocab_size=200)
    if family.recipe == "glm":
        spans = {r: GLM_SPECIAL_TOKENS[r] for r in ("span_start", "span_end", "gmask")}
        specials = {**WORDPIECE_SPECIAL_TOKENS, **spans}  # as training.recipes.prepare_glm for wordpiece
        return Tokenizer.train("wordpiece", texts, vocab_size=200, special_tokens=specials)
    if family.recipe == "pairs":
        tok = Tokenizer.train("bpe", texts, vocab_size=400, special_tokens={**SPECIAL_TOKENS, "mask": "<mask>"})
        return add_sentinels(tok, 10) if objective == "span_corruption" else tok
    return Tokenizer.train("char", texts)


def preset_model(preset: str, tokenizer) -> nn.Module:
    """The preset's wiring at test width (``presets.tiny_version``), its context kept, random weights."""
    from ..models import build_model
    from ..presets import get_preset, tiny_version
    full = get_preset(preset).config()
    cfg = tiny_version(full).replace(max_seq_len=full.max_seq_len)
    fields = {k: v for k, v in family_of(cfg).data_fields(tokenizer, cfg.max_seq_len).items() if k != "max_seq_len"}
    cfg = cfg.replace(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, **fields)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def examples_for(family: Family, cfg, base: Example = Example()) -> list[tuple[str, Example]]:
    """(name suffix, example) to draw for a model of this family: GLM both ways ([MASK] blanks,
    and [gMASK]: a prefix LM); an encoder-decoder its objective; others one."""
    from dataclasses import replace
    if family.recipe == "glm":
        return [("blanks", base), ("prefix-lm", replace(base, prefix_lm=True, spans=None, blanks=()))]
    if family.recipe == "pairs":
        objective = base.objective or default_objective(cfg)
        return [(objective.replace("_", "-"), replace(base, objective=objective))]
    return [("", base)]


GALLERY = ("gpt-tiny", "llama-tiny", "bert-tiny", "glm-tiny", "t5-tiny", "bart-tiny", "transformer-tiny", "txl-tiny")


def preset_pictures(preset: str, base: Example = Example()) -> list[MaskPicture]:
    """The pictures of one preset: a tokenizer for its recipe, its tiny-width model, its examples."""
    from ..presets import get_preset
    cfg = get_preset(preset).config()
    family = family_of(cfg)
    pictures, built = [], {}
    for suffix, ex in examples_for(family, cfg, base):
        if (ex.objective, ex.text) not in built:
            tok = preset_tokenizer(family, ex.objective, ex.text)
            built[ex.objective, ex.text] = tok, preset_model(preset, tok)
        tok, model = built[ex.objective, ex.text]
        pictures.append(mask_picture(model, tok, ex, f"{preset}-{suffix}" if suffix else preset))
    return pictures


def checkpoint_pictures(model: nn.Module, tokenizer, base: Example = Example(), name: str = "checkpoint"
                        ) -> list[MaskPicture]:
    family = family_of(model.cfg)
    return [mask_picture(model, tokenizer, ex, f"{name}-{suffix}" if suffix else name)
            for suffix, ex in examples_for(family, model.cfg, base)]


__all__ = ["Example", "MaskPicture", "Strip", "Grid", "mask_picture", "preset_pictures", "checkpoint_pictures",
           "examples_for", "default_objective", "GALLERY", "BATCHES", "ENCODER_DECODER_OBJECTIVES"]
