"""`tfamily finetune`, `knn` and `embed`: task heads and sentence embeddings on a pretrained model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import UsageError, add_input_args, input_texts
from .train import TRAIN_FLAGS


# ---------------------------------------------------------------------------------------
# finetune, knn
# ---------------------------------------------------------------------------------------
FINETUNE_DEFAULTS = dict(optimizer="adamw", lr=5e-5, batch_size=32, weight_decay=0.01, beta2=0.999,
                         grad_clip=1.0, log_interval=10)


FINETUNE_HELP = {  # where fine-tuning's defaults differ from pretraining's
    "lr": "peak learning rate (default 5e-5)",
    "batch_size": "sequences per optimizer step (default 32)",
    "warmup": "linear warm-up steps (default: 10 %% of the steps)",
    "weight_decay": "decoupled weight decay on matrices (default 0.01)",
    "optimizer": "adamw or muon (Muon on hidden matrices + AdamW) (default adamw)",
}


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("init", help="the pretrained model: a tfamily checkpoint or a Hugging Face folder")
    p.add_argument("--task", choices=["classify", "tag", "qa"], default="classify",
                   help="classify: a label per text (TSV: label<TAB>text[<TAB>text_b]); "
                        "tag: a tag per word (CoNLL: token<TAB>tag, blank line between sentences); "
                        "qa: an answer span in a context (JSONL: question, context, answers)")
    p.add_argument("--train", required=True, help="training examples")
    p.add_argument("--val", required=True, help="validation examples (scored every epoch and at the end)")
    p.add_argument("--test", help="test examples, scored once at the end")
    p.add_argument("--out", required=True, help="run folder: checkpoint, metrics.jsonl, results.json")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the training set (default 3)")
    p.add_argument("--max-len", type=int, default=128, help="tokens per example, specials included (default 128)")
    p.add_argument("--pooling", choices=["pooler", "first", "mean", "last"],
                   help="classify: how the text becomes one vector (default: the checkpoint's sentence pooling, "
                        "else BERT's pooler when it has one, else first; last for decoders)")
    for name in ("lr", "batch_size", "warmup", "weight_decay", "optimizer", "max_time", "seed", "threads", "device",
                 "label_smoothing"):
        typ, help_text = TRAIN_FLAGS[name]
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name,
                       help=FINETUNE_HELP.get(name, help_text))
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast, for training and for scoring val and test (default: where the hardware "
                        "is fast at it)")
    p.add_argument("--freeze-token-embeddings", action="store_true",
                   help="keep the token embedding table as pretrained: no gradient and no optimizer moments for "
                        "it. With a large vocabulary most of the parameters sit there (multilingual-e5-small: "
                        "96M of 118M), and AdamW would read and write every row at every step")
    p.add_argument("--group-by-length", action="store_true",
                   help="batch training examples of similar length together (each epoch still in a random "
                        "order): less padding, so faster steps when lengths vary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _length(task: str, example) -> int:
    """Characters in an example's text(s): how --group-by-length sorts."""
    if task == "qa":
        return len(example.question) + len(example.context)
    if task == "classify":
        return len(example[0]) + len(example[1] or "")
    return sum(len(word) + 1 for word in example[0])


def _task_data(task: str, path: str, names: list[str] | None = None):
    """(examples, label names) of a classification TSV or a CoNLL file, with ids in ``names`` order."""
    from ..data.labelled import read_conll, read_labelled_tsv
    if task == "qa":
        from ..data.qa import read_qa_jsonl
        return read_qa_jsonl(path), ["start", "end"]
    if task == "classify":
        data = read_labelled_tsv(path)
        names = names or data.label_names
        ids = data.label_ids(names).tolist()
        texts_b = data.texts_b or [None] * len(data)
        return [(t, b, i) for t, b, i in zip(data.texts, texts_b, ids)], names
    data = read_conll(path)
    names = names or data.tag_names
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({t for tags in data.tags for t in tags} - set(index))
    if unknown:
        raise UsageError(f"{path}: tag(s) {', '.join(unknown)} never appear in the training data")
    return [(tokens, [index[t] for t in tags]) for tokens, tags in zip(data.tokens, data.tags)], names


def _default_pooling(model) -> str:
    from ..evaluation.embeddings import default_pooling
    from ..models.family import family_of
    if family_of(model.cfg).default_pooling == "last":  # a causal decoder: only its last token saw everything
        return "last"
    saved = model.cfg.extra.get("sentence_embedding") if isinstance(model.cfg.extra, dict) else None
    if saved:
        return default_pooling(model)
    return "pooler" if getattr(model, "pooler", None) is not None else family_of(model.cfg).default_pooling


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..interop import load_any
    import math

    import torch

    from ..data.inputs import ExampleBatches
    from ..models import build_model
    from ..models.family import family_of
    from ..evaluation.tasks import score_summary, task_scores
    from ..objectives.classification import SequenceClassificationObjective, TokenClassificationObjective
    from ..training import TrainConfig, Trainer
    from ..training.finetune import fit_keeping_best_epoch

    out = Path(args.out)
    if (out / "checkpoint").exists() and not args.force:
        raise UsageError(f"{out} already holds a checkpoint; choose another --out, or pass --force to start over")
    if args.force:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    pretrained, tokenizer = load_any(args.init, pack=False)  # its weights seed a model that trains
    if family_of(pretrained.cfg).backbone is None:
        raise UsageError(f"fine-tuning heads sit on an encoder or a decoder; {args.init} is a "
                         f"{family_of(pretrained.cfg)}")
    train_examples, names = _task_data(args.task, args.train)
    val_examples, _ = _task_data(args.task, args.val, names)
    test_examples = _task_data(args.task, args.test, names)[0] if args.test else None
    max_len = min(args.max_len, pretrained.cfg.max_seq_len)
    head = {"classify": "sequence_classification", "tag": "token_classification", "qa": "span"}[args.task]
    pooling = args.pooling or (_default_pooling(pretrained) if args.task == "classify" else pretrained.cfg.pooling)
    cfg = pretrained.cfg.replace(head=head, num_labels=len(names), pooling=pooling,
                                 extra={**pretrained.cfg.extra, "labels": names, "task": args.task,
                                        "finetuned_from": str(args.init)})
    torch.manual_seed(args.seed if args.seed is not None else 1337)
    model = build_model(cfg)
    missing, _ = model.load_state_dict(pretrained.state_dict(), strict=False)
    not_loaded = [k for k in missing if k.startswith("backbone.")]
    if not_loaded:
        raise UsageError(f"{args.init}: the backbone weights do not fit ({not_loaded[:3]} ...)")
    fresh = sorted({k.rsplit(".", 1)[0] for k in missing})
    if args.freeze_token_embeddings:
        model.backbone.tok_emb.weight.requires_grad_(False)
    given = {k: getattr(args, k) for k in ("lr", "batch_size", "warmup", "weight_decay", "optimizer", "max_time",
                                           "seed", "threads", "device", "label_smoothing", "bf16")
             if getattr(args, k) is not None}
    batch_size = given.get("batch_size", FINETUNE_DEFAULTS["batch_size"])
    per_epoch = max(1, len(train_examples) // batch_size)
    steps = max(1, math.ceil(args.epochs * per_epoch))
    train_cfg = TrainConfig.from_dict({**FINETUNE_DEFAULTS, "steps": steps, "warmup": max(1, steps // 10),
                                       "eval_interval": per_epoch, "eval_batches": 10**6, "out_dir": str(out),
                                       "progress": not args.no_progress, **given})
    if args.task == "qa":
        from ..objectives.span import SpanObjective
        objective = SpanObjective(tokenizer, max_len)
    else:
        objective_cls = SequenceClassificationObjective if args.task == "classify" else TokenClassificationObjective
        objective = objective_cls(tokenizer, max_len, train_cfg.label_smoothing)
    lengths = [_length(args.task, e) for e in train_examples] if args.group_by_length else None
    train_batches = ExampleBatches(train_examples, batch_size, train_cfg.seed, lengths=lengths)
    trainer = Trainer(model, cfg, objective, train_batches,
                      ExampleBatches(val_examples, 64, shuffle=False), train_cfg, tokenizer_json=tokenizer.to_str(),
                      extra_state={"task": args.task, "init": str(args.init)})
    print(f"fine-tuning {args.init} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"new: {', '.join(fresh)}) to {args.task}"
          + (f" {len(names)} classes" if args.task != "qa" else "") + f" on {len(train_examples):,} examples: "
          f"{steps} steps of {batch_size} ({args.epochs:g} epochs), {train_cfg.optimizer} lr {train_cfg.lr:g}"
          + (f", pooling {pooling}" if args.task == "classify" else "")
          + (", token embeddings frozen" if args.freeze_token_embeddings else ""), file=sys.stderr)

    def scores_of(examples):  # under the trainer's autocast: bf16 scoring where it trained in bf16
        with trainer.autocast():
            return task_scores(args.task, trainer.model, tokenizer, examples, names, max_len)
    t0 = time.perf_counter()
    best = fit_keeping_best_epoch(trainer, per_epoch, lambda: scores_of(val_examples))
    seconds = time.perf_counter() - t0
    results = {"task": args.task, "labels": names, "train_examples": len(train_examples), "steps": trainer.step,
               "train_seconds": round(seconds, 1), "val_by_epoch": best.history}
    model_dir = out / "checkpoint"
    if best.state is not None:  # an earlier epoch scored better on val: it is the model, saved apart
        from ..checkpoint import save_checkpoint
        trainer.model.load_state_dict(best.state)
        model_dir = save_checkpoint(out / "best", trainer.model, cfg, tokenizer.to_str())
        print(f"epoch {best.epoch} scored best on val ({best.score:.4f}); its weights: {model_dir}", file=sys.stderr)
    results["model"], results["best_epoch"] = str(model_dir), best.epoch
    for split, examples in (("val", val_examples), ("test", test_examples)):
        if examples:  # val was scored on these very weights when their epoch ended
            scores = best.scores if split == "val" and best.scores is not None else scores_of(examples)
            print(f"{split}: {scores.format()}")
            results[split] = score_summary(scores)
    from ..files import atomic_write_text
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    print(f"model: {model_dir}   results: {out / 'results.json'}   ({seconds:.0f}s)")
    return 0


def add_knn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the encoder that embeds: a tfamily checkpoint or a Hugging Face folder")
    p.add_argument("--train", required=True, help="labelled texts (TSV: label<TAB>text): the kNN 'model'")
    p.add_argument("--test", help="labelled texts to classify and score (with --val: only at the k chosen there)")
    p.add_argument("--val", help="labelled texts that choose k: each --k is scored on them, then test only with "
                                 "the k that scored best there (leave out --test to score val alone)")
    p.add_argument("--k", type=int, nargs="+", default=[5],
                   help="neighbours that vote (default 5); several values are scored over one embedding pass")
    p.add_argument("--pooling", choices=["mean", "first", "pooler", "last"], help="as for `tfamily embed`")


def cmd_knn(args: argparse.Namespace) -> int:
    from ..interop import load_any
    from ..evaluation.classification import classification_scores
    from ..evaluation.embeddings import embed_texts, knn_predict
    from ..evaluation.tasks import positive_class

    if not (args.test or args.val):
        raise UsageError("give --test, --val, or both")
    model, tokenizer = load_any(args.model)
    train, names = _task_data("classify", args.train)
    test = _task_data("classify", args.test, names)[0] if args.test else None
    val = _task_data("classify", args.val, names)[0] if args.val else None
    t0 = time.perf_counter()
    embed = lambda examples: embed_texts(model, tokenizer, [e[0] for e in examples], pooling=args.pooling)  # noqa: E731
    train_vec = embed(train)

    def scores_at(k, examples, vectors):
        pred = knn_predict(train_vec, [e[2] for e in train], vectors, k=k)
        return classification_scores([names[p] for p in pred], [names[e[2]] for e in examples],
                                     positive=positive_class(names))
    ks = args.k
    if val is not None:
        val_vec = embed(val)
        by_k = {k: scores_at(k, val, val_vec) for k in ks}
        for k, scores in by_k.items():
            print(f"val, k={k}: {scores.format()}")
        ks = [max(ks, key=lambda k: by_k[k].accuracy)]  # the first of equals
    if test is not None:
        test_vec = embed(test)
        for k in ks:
            print(f"{'test, ' if val is not None else ''}kNN (k={k}) over {len(train):,} embedded training texts: "
                  f"{scores_at(k, test, test_vec).format()}")
    print(f"({time.perf_counter() - t0:.0f}s)")
    return 0


# ---------------------------------------------------------------------------------------
# embed
# ---------------------------------------------------------------------------------------
def add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a tfamily checkpoint or a Hugging Face folder (e.g. a sentence encoder)")
    add_input_args(p, "texts to embed",
                   "write the embeddings here: .npy (an N x d array) or .jsonl (default: stdout)")
    p.add_argument("--pooling", choices=["mean", "first", "pooler", "last"],
                   help="how token states become one vector (default: the checkpoint's own, else mean; "
                        "last for causal decoders)")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw length (default: unit vectors)")
    p.add_argument("--batch-size", type=int, default=64)


def cmd_embed(args: argparse.Namespace) -> int:
    from ..evaluation.embeddings import embed_texts
    from ..interop import load_any

    texts = input_texts(args, "texts")
    model, tokenizer = load_any(args.checkpoint)
    vectors = embed_texts(model, tokenizer, texts, pooling=args.pooling, normalize=not args.no_normalize,
                          batch_size=args.batch_size)
    if args.output and args.output.endswith(".npy"):
        import numpy as np
        from ..files import atomic_write

        def write_npy(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object, so np.save adds no second .npy suffix
                np.save(f, vectors.numpy())
        atomic_write(args.output, write_npy)
    else:
        lines = "".join(json.dumps({"text": t, "embedding": [round(x, 6) for x in v]}, ensure_ascii=False) + "\n"
                        for t, v in zip(texts, vectors.tolist()))
        if args.output:
            from ..files import atomic_write_text
            atomic_write_text(args.output, lines)
        else:
            sys.stdout.write(lines)
    if args.output:
        print(f"{len(texts)} embeddings of size {vectors.shape[1]} written to {args.output}", file=sys.stderr)
    return 0
