"""Attention maps captured from the attention the model runs, and per-head summaries.

    with capture(model) as records:      every ``nn.Attention`` of the model gets a probe
        model(**inputs)                  attend() then takes its explicit formula and hands the
                                         probe the probabilities it computed
    records[i].probs                     (B, H, T, S) softmax(scale q k^T + bias + mask), as run

Nothing is computed twice: the probabilities are those of ``nn.attention.explicit_attention``,
the formula the model itself uses on a CPU in bf16, fed the q, k, v, mask and position scores
of the module's own forward (T5's bias, Transformer-XL's relative scores and memory, GLM's
Part A / Part B mask included). Outside ``capture`` every probe is None and attention runs
``F.scaled_dot_product_attention`` exactly as before.

``attention_view`` runs one text through a checkpoint's model the way its family reads text
(registry: ``family_of(cfg).prompt``) and names every query and key by the tokenizer:

    decoder, encoder   the text (an encoder's with [CLS] / [SEP] when its tokenizer has them)
    Transformer-XL     the text in segments; a later segment's first keys are the memory
    encoder-decoder    the source (encoder self-attention), the target or the greedy output
                       (decoder self-attention) and target-over-source (cross-attention)
    GLM                Part A (the text, blanks as [MASK]) and Part B (each blank's greedy span)

``generation_attention`` shows a generated output the way it was made: it replays the family's
decoding State (``generation.states``: the prefill, then one ``append`` per token, as ``generate``
and the server's engine run it) under ``capture`` and keeps, for each generated token, the query
row that drew it (the position before it) over every key it could see: a decoder's prompt and
output so far, Transformer-XL's recurrence, a GLM's Part A and its span so far, an
encoder-decoder's source (cross-attention) and output so far (decoder self-attention).
"""

from __future__ import annotations

import inspect as pyinspect
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from ..models.family import family_of
from ..nn.attention import Attention

Region = tuple[str, int, int]  # (name, start, end): a labelled run of rows or columns


# ---------------------------------------------------------------------- capture
@dataclass
class Record:
    """One call of one attention module, as it ran."""

    name: str  # module path, e.g. "decoder.blocks.1.cross_attn"
    cross: bool
    probs: torch.Tensor  # (B, H, T, S) float32 on the CPU
    allowed: torch.Tensor  # (B | 1, H | 1, T, S) bool: the scores the mask (and any -inf bias) left in
    values: torch.Tensor | None = None  # (B, H, S, D) float32, with ``keep_values``

    @property
    def layer(self) -> int:
        found = re.search(r"(?:^|\.)blocks\.(\d+)\.", self.name)
        return int(found.group(1)) if found else 0

    @property
    def stack(self) -> str:
        """The stack the module sits in: "encoder", "decoder", or "" for a model of one stack."""
        head = self.name.split(".blocks.")[0].split(".")[-1] if ".blocks." in self.name else ""
        return head if head in ("encoder", "decoder") else ""

    @property
    def kind(self) -> str:
        return "cross" if self.cross else "self"


def _probe(records: list[Record], name: str, module: Attention, keep_values: bool, last_query: bool):
    def probe(probs: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> None:
        if last_query:  # (B, H, 1, S): the row whose output becomes the next-token logits
            probs = probs[..., -1:, :]
            allowed = allowed[..., -1:, :] if allowed.shape[-2] > 1 else allowed
        records.append(Record(name, module.cross, probs.detach().float().cpu(), allowed.detach().cpu(),
                              v.detach().float().cpu() if keep_values else None))
    return probe


@contextmanager
def capture(model: nn.Module, keep_values: bool = False, last_query: bool = False) -> Iterator[list[Record]]:
    """Record the attention probabilities of every ``Attention`` in ``model`` while the block
    runs, one Record per module call in the order they ran. ``keep_values`` also keeps the
    values each row of probabilities weighs; ``last_query`` keeps only each call's last query
    row (decoding reads nothing else: a long prompt's prefill then costs S numbers per head, not
    T x S). Other models (and this one afterwards) are untouched."""
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]
    if not modules:
        cfg = getattr(model, "cfg", None)
        if cfg is not None and family_of(cfg).mixing == "recurrence":
            raise ValueError(f"a model of {family_of(cfg)} has no attention to capture: its tokens meet through "
                             "a recurrent state, which keeps no weights over earlier tokens")
        raise ValueError(f"{type(model).__name__} has no attention modules to capture")
    records: list[Record] = []
    for name, m in modules:
        m.probe = _probe(records, name, m, keep_values, last_query)
    try:
        yield records
    finally:
        for _, m in modules:
            if "probe" in m.__dict__:
                del m.probe  # back to the class's None: the fast path


# ---------------------------------------------------------------------- summaries
def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the attention rows: (..., T, S) -> (...). 0 is a head that looks at
    one key; log(S) one that spreads evenly over S keys."""
    return torch.special.entr(probs.float()).sum(-1).mean(-1)


def mean_distance(probs: torch.Tensor, offset: int | None = None) -> torch.Tensor:
    """Mean distance between a query and the keys it attends to, weighted by attention: (..., T, S)
    -> (...). Query i stands at key slot i + ``offset`` (default S - T: the queries are the last
    T of the keys, as with a cache or Transformer-XL's memory)."""
    t, s = probs.shape[-2:]
    offset = s - t if offset is None else offset
    where = torch.arange(t, dtype=torch.float32)[:, None] + offset  # (T, 1)
    distance = (where - torch.arange(s, dtype=torch.float32)[None, :]).abs()  # (T, S)
    return (probs.float() * distance).sum(-1).mean(-1)


# ---------------------------------------------------------------------- names
def token_label(text: str) -> str:
    """A token as a picture shows it: spaces and line breaks made visible."""
    return text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5") or "\u2205"


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    return [token_label(tokenizer.token_text(int(i))) for i in ids]


@dataclass
class Stream:
    """The tokens of one input sequence (the main one, the source or the target), named."""

    labels: list[str]
    regions: list[Region] = field(default_factory=list)  # e.g. GLM's Part A / Part B


def streams_of(inputs: dict, tokenizer) -> dict[str, Stream]:
    """The named token streams of a model's forward inputs (first row): "" for ``ids``, or
    "encoder" / "decoder" for ``src_ids`` / ``tgt_ids``. A GLM's ``part_a_len`` splits its stream."""
    if "src_ids" in inputs:
        return {"encoder": Stream(token_labels(tokenizer, inputs["src_ids"][0].tolist())),
                "decoder": Stream(token_labels(tokenizer, inputs["tgt_ids"][0].tolist()))}
    labels = token_labels(tokenizer, inputs["ids"][0].tolist())
    regions = []
    if inputs.get("part_a_len") is not None:
        a = int(inputs["part_a_len"][0])
        regions = [("Part A", 0, a)] + ([("Part B", a, len(labels))] if a < len(labels) else [])
    return {"": Stream(labels, regions)}


@dataclass
class Placed:
    """A Record with its queries and keys named: which tokens its rows and columns are."""

    record: Record
    queries: list[str]
    keys: list[str]
    query_regions: list[Region]
    key_regions: list[Region]
    memory: int  # leading keys that are earlier tokens' states (Transformer-XL's memory), 0 elsewhere
    call: int  # how many times this module ran before (a Transformer-XL segment's index)
    calls: int  # how many times this module ran in all

    @property
    def title(self) -> str:
        r = self.record
        where = f"{r.stack} " if r.stack else ""
        segment = f", segment {self.call + 1} of {self.calls}" if self.calls > 1 else ""
        return f"layer {r.layer} {where}{r.kind}-attention{segment}"


def place(records: Sequence[Record], streams: dict[str, Stream]) -> list[Placed]:
    """Name the queries and keys of every record. Self-attention's queries are its own stream's
    next T tokens (a module run once per segment walks along it); a record with more keys than
    queries holds the tokens before them first (``memory``). Cross-attention's queries are the
    decoder's, its keys the encoder's stream."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.name] = counts.get(r.name, 0) + 1
    seen: dict[str, int] = {}
    offset: dict[str, int] = {}
    placed = []
    for r in records:
        t, s = r.probs.shape[-2:]
        own = streams.get(r.stack, streams.get("", next(iter(streams.values()))))
        start = offset.get(r.name, 0)
        queries = own.labels[start:start + t]
        if r.cross:
            source = streams.get("encoder", own)
            keys, memory, key_regions = source.labels[:s], 0, list(source.regions)
        else:
            memory = s - t
            keys = own.labels[max(0, start - memory):start + t]
            keys = ["?"] * (s - len(keys)) + keys  # (a cache from before this capture: unnamed)
            key_regions = ([("memory", 0, memory), ("segment", memory, s)] if memory
                           else _clip(own.regions, start, start + t))
        placed.append(Placed(r, queries, keys, _clip(own.regions, start, start + t), key_regions, memory,
                             seen.get(r.name, 0), counts[r.name]))
        seen[r.name] = seen.get(r.name, 0) + 1
        offset[r.name] = start + t
    return placed


def _clip(regions: list[Region], start: int, end: int) -> list[Region]:
    """Regions of a stream, as seen by the slice [start, end) of it."""
    out = []
    for name, a, b in regions:
        a, b = max(a, start) - start, min(b, end) - start
        if a < b:
            out.append((name, a, b))
    return out


# ---------------------------------------------------------------------- one text through a checkpoint
@dataclass
class AttentionMap:
    title: str
    stack: str  # "encoder", "decoder" or ""
    kind: str  # "self" or "cross"
    layer: int
    probs: torch.Tensor  # (H, T, S)
    queries: list[str]
    keys: list[str]
    query_regions: list[Region]
    key_regions: list[Region]
    entropy: list[float]  # per head, nats
    distance: list[float] | None  # per head, in tokens; None for cross-attention (keys of another sequence)


@dataclass
class AttentionView:
    title: str
    notes: list[str]
    maps: list[AttentionMap]


def maps_of(placed: Sequence[Placed]) -> list[AttentionMap]:
    """AttentionMaps (first batch row) with their per-head summaries."""
    out = []
    for p in placed:
        probs = p.record.probs[0]  # (H, T, S)
        distance = None if p.record.cross else [round(float(d), 4) for d in mean_distance(probs, p.memory)]
        out.append(AttentionMap(p.title, p.record.stack, p.record.kind, p.record.layer, probs, p.queries, p.keys,
                                p.query_regions, p.key_regions, [round(float(e), 4) for e in entropy(probs)],
                                distance))
    return out


def _greedy(model: nn.Module, prompt, max_new_tokens: int, stop: Sequence[int]) -> list[list[int]]:
    """The greedy output of the family's decoding, per part (a GLM's blanks; one part elsewhere),
    stop tokens left out."""
    from ..generation.decode import SamplingParams, decode
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_alternatives=0,
                            stop_token_ids=tuple(stop))
    parts: dict[int, list[int]] = {}
    for steps in decode(model, [prompt], params):
        for step in steps:
            part = parts.setdefault(step.part, [])
            if step.token not in stop:
                part.append(step.token)
    return [parts[k] for k in sorted(parts)]


def model_inputs(model: nn.Module, tokenizer, text: str, target: str | None = None,
                 max_new_tokens: int | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(forward keyword arguments of batch size 1, notes) for ``text`` as the model's family reads it.

    ``max_new_tokens``: how much greedy output to add (None: 16 for an encoder-decoder without a
    ``target`` and for a GLM's blanks, none for a decoder; 0: none at all)."""
    from ..generation import prompts as family_prompts
    from ..models.family import family_of
    from ..nn.positions import glm_row_positions
    cfg = model.cfg
    family = family_of(cfg)
    notes = [f"{family}"]
    generates = family.can("generate")
    long = lambda ids: torch.tensor([ids], dtype=torch.long)  # noqa: E731
    if family.prompt == "source":
        source = family_prompts.encode(cfg, tokenizer, text)
        if target is not None:
            output = tokenizer.encode(target)
            notes.append("target: as given (teacher-forced)")
        else:
            n = 16 if max_new_tokens is None else max_new_tokens
            output = _greedy(model, source, n, family_prompts.stop_ids(cfg, tokenizer))[0] if n else []
            notes.append(f"target: the decoder's greedy output ({len(output)} tokens)")
        if cfg.decoder_start_token_id is None:
            raise ValueError("the model's config has no decoder_start_token_id to begin the target from")
        return {"src_ids": long(source), "tgt_ids": long([cfg.decoder_start_token_id] + output)}, notes
    if target is not None:
        raise ValueError(f"--target is for encoder-decoder models; a model of {family} reads one text")
    if family.prompt == "blanks":
        prompt = family_prompts.encode(cfg, tokenizer, text)  # Part A; a text without a blank gets [gMASK]
        n = 16 if max_new_tokens is None else max_new_tokens
        if not n:
            notes.append("Part A only (no output asked for)")
            return {"ids": long(prompt.ids)}, notes
        spans = _greedy(model, prompt, n, family_prompts.stop_ids(cfg, tokenizer))
        blanks = prompt.blanks or (len(prompt.ids) - 1,)
        start = tokenizer.special_ids["span_start"]
        part_b = [t for span in spans for t in [start] + span]
        positions = glm_row_positions(len(prompt.ids), [(at, len(span) + 1) for at, span in zip(blanks, spans)])
        notes.append(f"Part B: the greedy filling of {len(spans)} blank(s), each started by [S]")
        return {"ids": long(prompt.ids + part_b), "positions": positions[None],
                "part_a_len": torch.tensor([len(prompt.ids)])}, notes
    from ..data.inputs import encode_pieces
    limit = 1 << 30 if family.windows_past_context else cfg.max_seq_len  # Transformer-XL runs segment by segment
    ids, types = encode_pieces(tokenizer, tokenizer.encode(text), None, limit)
    n = 0 if max_new_tokens is None or not generates else max_new_tokens
    if n:
        output = _greedy(model, family_prompts.encode(cfg, tokenizer, text), n,
                         family_prompts.stop_ids(cfg, tokenizer))[0]
        ids = ids + output
        types = types + [types[-1] if types else 0] * len(output)
        notes.append(f"followed by the greedy continuation ({len(output)} tokens)")
    inputs = {"ids": long(ids)}
    takes_segments = "token_type_ids" in pyinspect.signature(model.forward).parameters
    if tokenizer.special_ids.get("sep") is not None and takes_segments:
        inputs["token_type_ids"] = long(types)
    if family.windows_past_context and len(ids) > cfg.max_seq_len:
        notes.append(f"{len(ids)} tokens in segments of {cfg.max_seq_len}; a later segment's first keys "
                     f"are the memory (up to {cfg.mem_len} earlier states per layer)")
    return inputs, notes


@torch.inference_mode()
def attention_view(model: nn.Module, tokenizer, text: str, target: str | None = None,
                   max_new_tokens: int | None = None) -> AttentionView:
    """Every layer's and head's attention over ``text`` (see ``model_inputs``), captured from one
    forward pass of the model in eval mode."""
    model.eval()
    inputs, notes = model_inputs(model, tokenizer, text, target, max_new_tokens)
    device = next(model.parameters()).device
    with capture(model) as records:
        model(**{k: v.to(device) for k, v in inputs.items()})
    return AttentionView(text, notes, maps_of(place(records, streams_of(inputs, tokenizer))))


# ---------------------------------------------------------------------- a generated output, step by step
@dataclass
class StepMap:
    """One kind of attention at one generation step: every layer's and head's weights over a run
    of keys (token indices ``keys[0] .. keys[1] - 1`` of ``GenerationAttention.tokens``)."""

    kind: str  # "self" (the decoder's own tokens) or "cross" (an encoder-decoder's source)
    keys: tuple[int, int]  # [start, end) in GenerationAttention.tokens
    probs: torch.Tensor  # (L, H, end - start) float32; each (layer, head) row sums to 1


@dataclass
class StepAttention:
    index: int  # which generated token (0: the first)
    query: int  # the token (index in GenerationAttention.tokens) whose position's output drew it
    token: int  # the generated token itself (index in GenerationAttention.tokens)
    maps: list[StepMap]


@dataclass
class GenerationAttention:
    """What the model read to generate an output, and how each generated token's step attended.

    ``tokens``: the prompt as the family reads it (a decoder's text, an encoder-decoder's source,
    a GLM's Part A with its blanks), the token the decoder starts from when it has one (<s>, a GLM
    span's [S]), then the generated tokens; ``parts`` says which of "prompt", "start" and
    "completion" each one is."""

    tokens: list[int]
    parts: list[str]
    steps: list[StepAttention]


@torch.inference_mode()
def generation_attention(model: nn.Module, prompt, completion: Sequence[int],
                         steps: Sequence[int] | None = None) -> GenerationAttention:
    """The attention of each step that drew a token of ``completion`` after ``prompt`` (token
    ids, or a ``generation.states.Prompt``, as the family's State takes them), captured while
    the family's decoding State runs them again: ``start`` (the prompt's prefill) draws token 0,
    ``append(completion[k - 1])`` draws token k. ``steps``: which tokens (default all); decoding
    stops after the last one asked for. A GLM's completion is read as its first blank's filling
    (an output does not show the [E] that ends a blank), as ``/tfamily/distribution`` reads it.

    Same numbers as one forward pass over the whole text under ``capture`` (what ``tfamily viz
    attention`` shows), within float error: a KV cache only stores what that pass recomputes."""
    from ..generation.states import Prompt, ids_of, start
    from ..models.family import family_of
    family = family_of(model.cfg)
    if not family.can("generate"):
        raise ValueError(f"a model of {family} does not generate text")
    completion = [int(t) for t in completion]
    if not completion:
        raise ValueError("completion: at least one generated token is needed")
    wanted = sorted(set(range(len(completion)) if steps is None else (int(s) for s in steps)))
    if not wanted or wanted[0] < 0 or wanted[-1] >= len(completion):
        raise ValueError(f"steps: each must be in [0, {len(completion)}) (the generated tokens)")
    if isinstance(prompt, Prompt) and len(prompt.blanks) > 1:
        prompt = Prompt(prompt.ids, prompt.blanks[:1])  # the first blank's filling (see above)
    prompt_ids = ids_of(prompt)
    # the decoder's own stream: an encoder-decoder's and a GLM's start from a token of their own
    lead = [model.cfg.decoder_start_token_id] if family.prompt in ("source", "blanks") else []
    tokens = prompt_ids + lead + completion
    parts = ["prompt"] * len(prompt_ids) + ["start"] * len(lead) + ["completion"] * len(completion)
    first = len(prompt_ids) + len(lead)  # tokens index of completion[0]
    decoder_from = len(prompt_ids) if family.prompt == "source" else 0  # where the decoder's stream begins

    model.eval()
    device = next(model.parameters()).device
    ends = []  # records[ends[k - 1]:ends[k]]: the forward pass that drew completion[k]
    with capture(model, last_query=True) as records:
        state = start(model, [prompt], wanted[-1] + 1)
        ends.append(len(records))
        for token in completion[:wanted[-1]]:
            state.append(torch.tensor([token], dtype=torch.long, device=device))
            ends.append(len(records))

    out = []
    for k in wanted:
        query = first + k - 1  # the position before completion[k]: the prompt's last token, [S] or <s> at k = 0
        last: dict[str, Record] = {}  # module -> its last call in this pass (XL's prompt runs in segments)
        for r in records[ends[k - 1] if k else 0:ends[k]]:
            if r.stack != "encoder":  # the encoder read the source once; it draws no token
                last[r.name] = r
        maps = []
        for kind in ("cross", "self"):
            layers = sorted((r for r in last.values() if r.kind == kind), key=lambda r: r.layer)
            if not layers:
                continue
            probs = torch.stack([r.probs[0, :, -1, :] for r in layers])  # (L, H, S)
            s = probs.shape[-1]
            keys = (0, s) if kind == "cross" else (query + 1 - s, query + 1)  # self: the S tokens up to the query
            if keys[0] < (0 if kind == "cross" else decoder_from) or keys[1] > len(tokens):
                raise RuntimeError(f"step {k}: {s} {kind}-attention keys do not fit the {len(tokens)} tokens")
            maps.append(StepMap(kind, keys, probs))
        out.append(StepAttention(k, query, first + k, maps))
    return GenerationAttention(tokens, parts, out)
