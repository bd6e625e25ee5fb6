"""`tfamily generate`, `chat`, `fewshot` and `infill`: text from a checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import MODEL_SOURCE_HELP, UsageError, add_weights_arg, announce, require_generation


# ---------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------
def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=MODEL_SOURCE_HELP)
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch; default: a newline)")
    p.add_argument("--max-tokens", type=int, default=200, help="new tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--show-probs", action="store_true",
                   help="after the text, a table of each token's probability and its top alternatives")
    p.add_argument("--alternatives", type=int, default=5, help="alternatives per token with --show-probs")
    p.add_argument("--json", action="store_true", help="print the generations (with per-token data) as JSON")
    add_weights_arg(p)


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generation import SamplingParams, generate
    from ..generation.show import format_steps, shade
    from ..interop import open_for_generation

    source = open_for_generation(args.checkpoint, args.weights)
    announce(source.note)
    model, tokenizer = source.model, source.tokenizer
    require_generation("generate", args.checkpoint, model)
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
                            top_alternatives=args.alternatives)
    prompts = args.prompt or ["\n"]  # a line break: a neutral start for a model trained on plain text
    results = generate(model, tokenizer, prompts, params, stop=args.stop)
    if args.json:
        print(json.dumps([{"prompt": r.prompt, "text": r.text, "finish_reason": r.finish_reason,
                           "tokens": [{"token": tokenizer.token_text(s.token), "id": s.token, "prob": s.prob,
                                       "alternatives": [{"token": tokenizer.token_text(t), "id": t, "prob": p}
                                                        for t, p in s.alternatives]} for s in r.steps]}
                          for r in results], ensure_ascii=False, indent=1))
        return 0
    color = sys.stdout.isatty()
    for r in results:
        if args.show_probs:
            print(r.prompt + shade(r.steps, tokenizer, color))
            print()
            print(format_steps(r.steps, tokenizer))
        else:
            print(r.prompt + r.text)
        if len(results) > 1:
            print("-" * 60)
    return 0


# ---------------------------------------------------------------------------------------
# chat
# ---------------------------------------------------------------------------------------
def add_chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=MODEL_SOURCE_HELP + "; its chat template is used when it has one")
    p.add_argument("--system", default=None, help="system prompt that sets up the assistant")
    p.add_argument("--message", action="append", default=[],
                   help="a user turn (repeatable); without it, chat interactively on stdin")
    p.add_argument("--max-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--show-probs", action="store_true", help="after each reply, its per-token probability table")
    add_weights_arg(p)


def _chat_reply(model, tokenizer, template, messages, params, stop, show_probs: bool, out) -> str:
    """Generate one assistant turn, printing it as it streams; returns its text. The stream
    holds back a character whose bytes are split over tokens (Chinese often is, in byte-level
    BPE) and text that may begin a stop string, as the server's stream does."""
    from ..generation import generate
    from ..generation.chat import render_chat
    from ..generation.show import format_steps
    from ..generation.stops import TextStream

    history = list(messages)
    while True:  # drop the oldest exchanges until the prompt and the reply fit the context
        prompt = render_chat(history, template)
        n_prompt = len(tokenizer.encode(prompt))
        first_turn = 1 if history and history[0]["role"] == "system" else 0
        if n_prompt + params.max_new_tokens <= model.cfg.max_seq_len or len(history) - first_turn <= 1:
            break
        del history[first_turn:first_turn + 2]
    if n_prompt >= model.cfg.max_seq_len:
        raise ValueError(f"the conversation's prompt is {n_prompt} tokens, as long as the model's context of "
                         f"{model.cfg.max_seq_len} or longer: shorten the system prompt or the message")
    stream = TextStream(tokenizer, stop, params.stop_token_ids)
    out.write("assistant> ")

    def show(step) -> None:
        text, _, _ = stream.push(step)
        out.write(text)
        out.flush()

    (reply,) = generate(model, tokenizer, [prompt], params, stop, on_step=show)
    out.write(stream.flush()[0] + "\n")
    if show_probs:
        out.write(format_steps([s for s in reply.steps if s.token not in params.stop_token_ids], tokenizer) + "\n")
    return reply.text.strip()


def cmd_chat(args: argparse.Namespace) -> int:
    from ..generation import SamplingParams
    from ..generation.chat import chat_stops
    from ..interop import open_for_generation

    source = open_for_generation(args.checkpoint, args.weights)
    announce(source.note)
    model, tokenizer, template = source.model, source.tokenizer, source.chat_template
    require_generation("chat", args.checkpoint, model)
    stop, eot = chat_stops(tokenizer, template, model.cfg)  # as the server's chat completions stop
    budget = min(args.max_tokens, max(1, model.cfg.max_seq_len // 2))
    params = SamplingParams(max_new_tokens=budget, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed, stop_token_ids=eot)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = not args.message
    turns = iter(args.message) if args.message else None
    out = sys.stdout
    while True:
        if interactive:
            try:
                line = input("you> " if sys.stdin.isatty() else "")
            except EOFError:
                return 0
            if not line.strip():
                continue
        else:
            line = next(turns, None)
            if line is None:
                return 0
            out.write(f"you> {line}\n")
        messages.append({"role": "user", "content": line})
        reply = _chat_reply(model, tokenizer, template, messages, params, stop, args.show_probs, out)
        messages.append({"role": "assistant", "content": reply})


# ---------------------------------------------------------------------------------------
# fewshot
# ---------------------------------------------------------------------------------------
def add_fewshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder")
    p.add_argument("--instruction", default="", help="what the task is, in words (first line of the prompt)")
    p.add_argument("--example", action="append", default=[], metavar="'INPUT => OUTPUT'",
                   help="a worked example (repeatable)")
    p.add_argument("--examples", metavar="FILE", help='a JSONL file of {"input": ..., "output": ...} examples')
    p.add_argument("--query", required=True, help="the input to answer")
    p.add_argument("--max-tokens", type=int, default=32, help="longest answer in tokens (default 32)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--show-prompt", action="store_true", help="print the prompt that was built")


def cmd_fewshot(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..generation import SamplingParams, generate
    from ..generation.fewshot import fewshot_prompt, fewshot_stop, parse_example

    examples = [parse_example(e) for e in args.example]
    if args.examples:
        path = Path(args.examples)
        if not path.is_file():
            raise UsageError(f"--examples: file {path} not found")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    examples.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UsageError(f"--examples {path}:{n}: not JSON ({e})") from None
    prompt = fewshot_prompt(args.query, examples, args.instruction)
    if args.show_prompt:
        print(prompt, file=sys.stderr)
    model, tokenizer = load_for_inference(args.checkpoint)
    require_generation("fewshot", args.checkpoint, model)
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    (result,) = generate(model, tokenizer, [prompt], params, stop=fewshot_stop())
    print(result.text.strip())
    return 0


# ---------------------------------------------------------------------------------------
# infill
# ---------------------------------------------------------------------------------------
def add_infill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a GLM checkpoint folder")
    p.add_argument("text", nargs="+", help='texts with blanks, e.g. "1 2 [MASK] 4 [MASK] [MASK]"; a final [gMASK] '
                                           "generates a continuation")
    p.add_argument("--max-tokens", type=int, default=32, help="longest filling of one blank, in tokens (default 32)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--show-probs", action="store_true",
                   help="after the text, a table per blank of each token's probability and its top alternatives")
    p.add_argument("--alternatives", type=int, default=5, help="alternatives per token (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON line per text: filled text, blanks, per-token data")


def cmd_infill(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..generation import SamplingParams
    from ..generation.infill import infill
    from ..generation.show import format_steps

    from ..models.family import family_of

    model, tokenizer = load_for_inference(args.checkpoint)
    if not family_of(model.cfg).can("infill"):
        raise UsageError(f"{args.checkpoint} holds a model of {family_of(model.cfg)}; infilling needs a GLM "
                         "(e.g. --preset glm-tiny)")
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, seed=args.seed, top_alternatives=args.alternatives)
    token = lambda i, p: {"id": i, "token": tokenizer.token_text(i), "prob": p}  # noqa: E731
    for text in args.text:
        r = infill(model, tokenizer, text, params)
        if args.json:
            blanks = [{"kind": b.kind, "text": b.text, "finish_reason": b.finish_reason,
                       "tokens": [{**token(s.token, s.prob), "alternatives": [token(i, p) for i, p in s.alternatives]}
                                  for s in b.steps]} for b in r.blanks]
            print(json.dumps({"text": r.text, "blanks": blanks}, ensure_ascii=False))
            continue
        print(r.text)
        if args.show_probs:
            for b in r.blanks:
                print(f"blank {b.index + 1} ({b.kind} at Part A position {b.position}): {b.text!r}, "
                      f"ended by {'[E]' if b.finish_reason == 'stop' else 'the token limit'}")
                print(format_steps(b.steps, tokenizer))
    return 0
