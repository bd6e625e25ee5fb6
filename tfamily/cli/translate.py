"""`tfamily translate`: beam search with an encoder-decoder checkpoint."""

from __future__ import annotations

import argparse
import sys

from .common import UsageError, add_input_args, input_texts


def add_translate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="an encoder-decoder checkpoint folder")
    add_input_args(p, "sentences to translate", "write translations here, one a line (default: stdout)")
    p.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy (default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="hypotheses are ranked by logprob / length^penalty (default 1.0)")
    p.add_argument("--max-len-a", type=float, default=1.5, help="output length limit: a * source tokens + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--show-probs", action="store_true",
                   help="after each translation, a table of each token's probability and its top alternatives")
    p.add_argument("--alternatives", type=int, default=5, help="alternatives per token with --show-probs")


def cmd_translate(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..generation import translate
    from ..generation.show import format_steps

    from ..models.family import family_of

    sentences = input_texts(args, "sentences")

    model, tokenizer = load_for_inference(args.checkpoint)
    if not family_of(model.cfg).can("translate"):
        raise UsageError(f"{args.checkpoint} holds a model of {family_of(model.cfg)}; translate needs an "
                         "encoder-decoder (e.g. a checkpoint trained with --preset transformer-tiny, t5-tiny or "
                         "bart-tiny)")
    alternatives = args.alternatives if args.show_probs else 0
    results = translate(model, tokenizer, sentences, beam_size=args.beam, length_penalty=args.length_penalty,
                        max_len_a=args.max_len_a, max_len_b=args.max_len_b, top_alternatives=alternatives,
                        progress=bool(args.input) and sys.stderr.isatty())
    if args.output:
        from ..files import atomic_write_text
        atomic_write_text(args.output, "".join(r.text + "\n" for r in results))
        print(f"{len(results)} translations written to {args.output}", file=sys.stderr)
        return 0
    for r in results:
        print(r.text)
        if args.show_probs:
            print(format_steps([s for s in r.steps if s.token != tokenizer.eos_id], tokenizer))
    return 0
