"""`tfamily eval`: perplexity, Transformer-XL segments, translation BLEU / chrF and task scores."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import UsageError, _refuse_overwrite
from .finetune import _task_data


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder")
    p.add_argument("--data", help="language models: a UTF-8 text file or a bundled corpus name (perplexity); "
                                  "fine-tuned classifiers / taggers: labelled examples (TSV / CoNLL)")
    p.add_argument("--src", help="translation models: source sentences, one a line (.gz is fine)")
    p.add_argument("--ref", help="translation models: reference translations, aligned with --src (BLEU, chrF)")
    p.add_argument("--beam", type=int, default=5, help="translation: beam size (default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="translation: length penalty (default 1.0)")
    p.add_argument("--output", help="translation: also write the hypotheses here, one a line")
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    p.add_argument("--stride", type=int, default=None, help="window step in tokens (default: half the context)")
    p.add_argument("--max-chars", type=int, default=None, help="score only the first N characters")
    p.add_argument("--mem-len", type=int, default=None,
                   help="transformer-xl: recurrence in tokens carried between segments (the paper's memory "
                        "length; default: the model's; 0 = none)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_eval(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..evaluation import perplexity

    if args.output:  # before the work, so a refusal costs nothing
        _refuse_overwrite(args.output, args.force)

    from ..models.family import family_of
    from ..training.recipes import resolve_corpus

    model, tokenizer = load_for_inference(args.checkpoint)
    scoring = family_of(model.cfg).evaluation
    if scoring == "bleu":
        return _eval_translation(args, model, tokenizer)
    if model.cfg.head in ("sequence_classification", "token_classification", "span"):
        return _eval_task(args, model, tokenizer)
    if scoring is None:
        raise UsageError(f"perplexity needs a causal model, and {args.checkpoint} holds a model of "
                         f"{family_of(model.cfg)}; score an encoder through a fine-tuned checkpoint (tfamily finetune) "
                         "or its embeddings (tfamily knn)")
    if not args.data:
        raise UsageError("--data is required: the text to measure perplexity on")
    path = resolve_corpus(args.data)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text: {e}") from None
    if args.max_chars:
        text = text[: args.max_chars]
    if scoring == "segments":  # Transformer-XL: segment by segment, carrying the recurrence (Dai et al. 2019)
        return _eval_segments(args, model, tokenizer.encode(text), path, len(text.encode("utf-8")))
    r = perplexity(model, tokenizer.encode(text), stride=args.stride, text_bytes=len(text.encode("utf-8")))
    if args.json:
        print(json.dumps({"tokens": r.tokens, "nll": r.nll, "perplexity": r.perplexity, "bits_per_byte": r.bits_per_byte}))
    else:
        print(f"{path}: {r.tokens:,} tokens scored, loss {r.nll:.4f} nats/token, perplexity {r.perplexity:.3f}, "
              f"{r.bits_per_byte:.4f} bits/byte")
    return 0


def _eval_segments(args: argparse.Namespace, model, ids: list[int], path: Path, text_bytes: int) -> int:
    """Transformer-XL perplexity: segments of the model's max_seq_len, the recurrence carried along."""
    from ..evaluation import segment_perplexity
    if args.stride is not None:
        raise UsageError("--stride slides a fixed-context window; a transformer-xl checkpoint scores consecutive "
                         "segments with a recurrence instead (--mem-len)")
    if args.mem_len is not None and args.mem_len < 0:
        raise UsageError(f"--mem-len must be >= 0, got {args.mem_len}")
    mem_len = model.cfg.mem_len if args.mem_len is None else args.mem_len
    r = segment_perplexity(model, ids, mem_len=mem_len, text_bytes=text_bytes)
    if args.json:
        print(json.dumps({"tokens": r.tokens, "nll": r.nll, "perplexity": r.perplexity,
                          "bits_per_byte": r.bits_per_byte, "segment_len": model.cfg.max_seq_len, "mem_len": mem_len}))
    else:
        print(f"{path}: {r.tokens:,} tokens scored in segments of {model.cfg.max_seq_len} with a recurrence of {mem_len}, "
              f"loss {r.nll:.4f} nats/token, perplexity {r.perplexity:.3f}, {r.bits_per_byte:.4f} bits/byte")
    return 0


def _eval_task(args: argparse.Namespace, model, tokenizer) -> int:
    """Accuracy / F1 or entity F1 of a fine-tuned checkpoint on a labelled file (--data)."""
    if not args.data:
        raise UsageError("--data is required: labelled examples (a TSV for classifiers, CoNLL for taggers)")
    from ..evaluation.tasks import score_summary, task_scores
    task = {"sequence_classification": "classify", "token_classification": "tag", "span": "qa"}[model.cfg.head]
    names = model.cfg.extra.get("labels") or [str(i) for i in range(model.cfg.num_labels)]
    examples, _ = _task_data(task, args.data, names)
    scores = task_scores(task, model, tokenizer, examples, names, model.cfg.max_seq_len)
    print(json.dumps(score_summary(scores)) if args.json else f"{args.data}: {scores.format()}")
    return 0


def _eval_translation(args: argparse.Namespace, model, tokenizer) -> int:
    """Translate --src, score against --ref with sacreBLEU (detokenised: as a user reads it)."""
    from ..data.parallel import read_lines
    from ..evaluation import bleu
    from ..generation import translate

    if not (args.src and args.ref):
        raise UsageError("a translation model is evaluated with --src SOURCES --ref REFERENCES (BLEU and chrF)")
    sources, refs = read_lines(args.src), read_lines(args.ref)
    if len(sources) != len(refs):
        raise UsageError(f"--src has {len(sources)} lines but --ref has {len(refs)}")
    t0 = time.perf_counter()
    hyps = [t.text for t in translate(model, tokenizer, sources, beam_size=args.beam,
                                      length_penalty=args.length_penalty, progress=sys.stderr.isatty())]
    seconds = time.perf_counter() - t0
    if args.output:
        from ..files import atomic_write_text
        atomic_write_text(args.output, "".join(h + "\n" for h in hyps))
    r = bleu(hyps, refs)
    if args.json:
        print(json.dumps({"bleu": r.bleu, "chrf": r.chrf, "bleu_signature": r.bleu_signature,
                          "chrf_signature": r.chrf_signature, "sentences": r.sentences, "beam": args.beam,
                          "seconds": round(seconds, 1)}))
    else:
        print(r.format())
        print(f"  beam {args.beam}, length penalty {args.length_penalty:g}; {len(hyps)} sentences in {seconds:.1f}s")
    return 0
