"""`tfamily viz attention`, `viz masks` and `viz embeddings`: PNG and HTML pictures of what a model does."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError


def add_viz_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="picture", required=True, metavar="picture")
    a = sub.add_parser("attention", help="every layer's and head's attention over a text (PNG + HTML)",
                       description="Run TEXT through a checkpoint, capturing the attention probabilities its "
                                   "layers compute, and draw them per layer and head with each head's entropy "
                                   "and mean attention distance.")
    a.add_argument("checkpoint", help="a checkpoint folder")
    a.add_argument("text", help="the text (an encoder-decoder's source; a GLM's text with [MASK] blanks)")
    a.add_argument("--target", help="encoder-decoder: the target to read teacher-forced (default: its greedy output)")
    a.add_argument("--max-new-tokens", type=int, default=None,
                   help="greedy output to add: an encoder-decoder's target and a GLM's blanks (default 16), "
                        "a decoder's continuation (default 0)")
    a.add_argument("--out", default="viz", help="output folder (default viz/)")
    a.set_defaults(viz=cmd_viz_attention)

    m = sub.add_parser("masks", help="attention masks and position ids of real training examples (PNG + HTML)",
                       description="Make one example per family with its training objective, run the Batch through "
                                   "the model and draw the masks its attention applied and the position ids it "
                                   "read. Without a checkpoint or --preset: one example of each family.")
    m.add_argument("checkpoint", nargs="?", help="a checkpoint folder (its tokenizer and model)")
    m.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="a preset (at test width, random weights; repeatable); see `tfamily presets`")
    m.add_argument("--text", help="the example text (BERT: 'first sentence | second sentence'; "
                                  "translation: 'source => target' or --target)")
    m.add_argument("--target", help="translation: the target side")
    m.add_argument("--objective", choices=["translation", "span_corruption", "denoising"],
                   help="encoder-decoder: the objective that makes the Batch (default: span_corruption with T5 "
                        "relative positions, denoising with learned ones, else translation)")
    m.add_argument("--spans", help="GLM: blanked spans as START:LENGTH in tokens, comma-separated (e.g. 2:1,4:2)")
    m.add_argument("--seed", type=int, default=0, help="seed of the objective's random choices (default 0)")
    m.add_argument("--out", default="viz", help="output folder (default viz/)")
    m.set_defaults(viz=cmd_viz_masks)

    e = sub.add_parser("embeddings", help="sentence embeddings of labelled texts in 2-D, coloured by label (PNG + HTML)",
                       description="Embed the texts of a labelled TSV as `tfamily embed` does (the checkpoint's "
                                   "pooling, unit length), project them to two dimensions (PCA, or t-SNE) and draw "
                                   "them coloured by label: a PNG, and an HTML page that shows each point's text.")
    e.add_argument("checkpoint", help="a tfamily checkpoint or a Hugging Face folder (as for `tfamily embed`)")
    e.add_argument("--data", required=True, metavar="FILE.tsv",
                   help="labelled texts, label<TAB>text a line (the format `finetune` reads; of a pair, the first text)")
    e.add_argument("--limit", type=int, default=2000,
                   help="at most this many texts: a seeded random sample, kept in file order (default 2000)")
    e.add_argument("--method", choices=["pca", "tsne"], default="pca",
                   help="pca (default: linear, exact) or tsne (scikit-learn: neighbourhoods, clusters)")
    e.add_argument("--pooling", choices=["mean", "first", "pooler", "last"],
                   help="as for `tfamily embed` (default: the checkpoint's own, else mean)")
    e.add_argument("--seed", type=int, default=0, help="seed of the sample and of t-SNE (default 0)")
    e.add_argument("--out", default="viz", help="output folder (default viz/)")
    e.set_defaults(viz=cmd_viz_embeddings)


def cmd_viz(args: argparse.Namespace) -> int:
    return args.viz(args)


def _out(folder: str) -> Path:
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {folder} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_viz_attention(args: argparse.Namespace) -> int:
    from ..checkpoint import load_for_inference
    from ..inspect.attention import attention_view
    from ..inspect.pictures import attention_page, save_attention_png, write_page
    if not Path(args.checkpoint).is_dir():
        raise UsageError(f"{args.checkpoint} is not a checkpoint folder")
    if args.max_new_tokens is not None and args.max_new_tokens < 0:
        raise UsageError("--max-new-tokens must be >= 0")
    model, tokenizer = load_for_inference(args.checkpoint, pack=False)
    view = attention_view(model, tokenizer, args.text, args.target, args.max_new_tokens)
    out = _out(args.out)
    png = save_attention_png(view, out / "attention.png")
    page = write_page(out / "attention.html", attention_page(view))
    print(f"{len(view.maps)} attention maps ({'; '.join(view.notes)})")
    print(png)
    print(page)
    return 0


def _spans(text: str | None) -> tuple[tuple[int, int], ...] | None:
    if not text:
        return None
    try:
        spans = tuple((int(a), int(b)) for a, b in (s.split(":") for s in text.split(",") if s.strip()))
    except ValueError:
        raise UsageError(f"--spans {text!r}: give START:LENGTH pairs, comma-separated (e.g. 2:1,4:2)") from None
    if not spans:
        raise UsageError("--spans: no span given")
    return spans


def cmd_viz_masks(args: argparse.Namespace) -> int:
    from ..inspect.masks import GALLERY, Example, checkpoint_pictures, preset_pictures
    from ..inspect.pictures import masks_page, save_mask_png, write_page
    from ..presets import PRESETS
    if args.checkpoint and args.preset:
        raise UsageError("give a checkpoint or --preset, not both")
    example = Example(text=args.text, target=args.target, objective=args.objective, spans=_spans(args.spans),
                      seed=args.seed)
    if args.checkpoint:
        from ..checkpoint import load_for_inference
        if not Path(args.checkpoint).is_dir():
            raise UsageError(f"{args.checkpoint} is not a checkpoint folder")
        model, tokenizer = load_for_inference(args.checkpoint, pack=False)
        pictures = checkpoint_pictures(model, tokenizer, example, Path(args.checkpoint).name or "checkpoint")
    else:
        unknown = [p for p in args.preset if p not in PRESETS]
        if unknown:
            raise UsageError(f"unknown preset {unknown[0]!r}; presets: {', '.join(sorted(PRESETS))}")
        pictures = [pic for preset in (args.preset or GALLERY) for pic in preset_pictures(preset, example)]
    out = _out(args.out)
    for pic in pictures:
        print(save_mask_png(pic, out / f"masks-{pic.name}.png"))
    print(write_page(out / "masks.html", masks_page(pictures)))
    return 0


def cmd_viz_embeddings(args: argparse.Namespace) -> int:
    from ..data.labelled import read_labelled_tsv
    from ..inspect.embeddings import embedding_map, sample
    from ..inspect.pictures import embeddings_page, save_embeddings_png, write_page
    from ..interop import load_any
    if not Path(args.checkpoint).is_dir():
        raise UsageError(f"{args.checkpoint} is not a checkpoint folder")
    if not Path(args.data).is_file():
        raise UsageError(f"--data {args.data}: no such file")
    if args.limit < 2:
        raise UsageError("--limit must be at least 2 (a map of one point shows nothing)")
    data = read_labelled_tsv(args.data)
    rows = sample(len(data), args.limit, args.seed)
    texts, labels = [data.texts[i] for i in rows], [data.labels[i] for i in rows]
    model, tokenizer = load_any(args.checkpoint)  # as `tfamily embed` loads it
    where = Path(args.checkpoint).resolve()
    name = where.parent.name if where.name == "checkpoint" else where.name  # runs/<name>/checkpoint
    title = f"{Path(args.data).name} through {name}"
    emb = embedding_map(model, tokenizer, texts, labels, args.method, args.pooling, title, args.seed)
    out = _out(args.out)
    png = save_embeddings_png(emb, out / "embeddings.png")
    page = write_page(out / "embeddings.html", embeddings_page(emb))
    sampled = f" (a sample of the file's {len(data)})" if len(rows) < len(data) else ""
    print(f"{'; '.join(emb.notes)}{sampled}")
    print(png)
    print(page)
    return 0
