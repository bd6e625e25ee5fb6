"""The seeds' "why the Transformer" claims, measured against recurrent baselines in the same
trainer, data pipeline and decoding code. One command per claim; each writes a plot and a
Markdown table to docs/why/ and prints the table.

    python -m benchmarks.why_transformer parallel     # a. tokens/s against sequence length
    python -m benchmarks.why_transformer wallclock    # b. Shakespeare char LM after 3 minutes
    python -m benchmarks.why_transformer translation  # c. Multi30k en->de BLEU after equal time
    python -m benchmarks.why_transformer distance     # d. recall accuracy against key-query distance
    python -m benchmarks.why_transformer contextual   # e. BiLSTM (ELMo-style) against BERT, fine-tuned
    ... --quick                                        # tiny sizes and budgets: checks the code, not the claim

Fairness: both sides run in the same trainer with the same data, batch, bf16 autocast and
schedule; the recurrent side's learning rate is swept (``--rnn-lrs``) and every tried value is
reported, while the Transformer side uses tfamily's defaults (chosen earlier on the same data).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tfamily.inspect import flops_per_token, param_breakdown
from tfamily.models import build_model
from tfamily.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "why"
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"


def header() -> str:
    return (f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def write(name: str, claim: str, table: list[list], columns: list[str], note: str = "") -> str:
    """The table as Markdown under docs/why/NAME.md (with the claim and the machine), printed too."""
    lines = [f"**Claim:** {claim}", "", f"Measured {header()}.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table]
    if note:
        lines += ["", note]
    text = "\n".join(lines) + "\n"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.md").write_text(text)
    print(text)
    return text


def plot(name: str, series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str,
         logx: bool = False) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- a. parallelism ------------------------------------------------------------------------

def equal_size_pair(vocab: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An LSTM LM and a GPT with about the same non-embedding parameters (2 x 256 LSTM: 1.05M;
    5 x 128 GPT blocks: 0.99M), the same vocabulary and tied heads."""
    lstm = build_model(get_preset("lstm-tiny").config(vocab_size=vocab, max_seq_len=4096))
    gpt = build_model(get_preset("gpt-tiny").config(vocab_size=vocab, n_layer=5, max_seq_len=4096))
    return lstm, gpt


def train_step_seconds(model: torch.nn.Module, batch: int, length: int, reps: int) -> float:
    """Best seconds of one training step (forward, loss, backward, fused AdamW) under bf16 autocast."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    ids = torch.randint(0, model.cfg.vocab_size, (batch, length + 1))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids[:, :-1]).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    return best


def parallel(args) -> None:
    lengths = [64, 128, 256] if args.quick else [64, 128, 256, 512, 1024, 2048]
    tokens = 2048 if args.quick else 16384  # per step, at every length
    reps = 1 if args.quick else 3
    lstm, gpt = equal_size_pair(256)
    rows, series = [], {"LSTM": ([], []), "Transformer (GPT)": ([], [])}
    for n in lengths:
        batch = max(1, tokens // n)
        measured = {}
        for label, model in (("LSTM", lstm), ("Transformer (GPT)", gpt)):
            seconds = train_step_seconds(model.train(), batch, n, reps)
            measured[label] = batch * n / seconds
            series[label][0].append(n)
            series[label][1].append(measured[label])
        rows.append([n, batch, f"{measured['LSTM']:,.0f}", f"{measured['Transformer (GPT)']:,.0f}",
                     f"{measured['Transformer (GPT)'] / measured['LSTM']:.2f}x",
                     f"{3 * flops_per_token(lstm.cfg, n)['forward'] / 1e6:.1f}",
                     f"{3 * flops_per_token(gpt.cfg, n)['forward'] / 1e6:.1f}"])
    params = {k: param_breakdown(m)["non_embedding"] for k, m in (("LSTM", lstm), ("GPT", gpt))}
    plot("parallel", series, "sequence length (tokens)", "training tokens / s", "Training throughput", logx=True)
    write("parallel", "attention works on all positions in parallel, so a Transformer trains faster than an "
          "RNN, which must step through the positions one after another",
          rows, ["length", "batch", "LSTM tok/s", "GPT tok/s", "GPT / LSTM", "LSTM MFLOP/tok (train)",
                 "GPT MFLOP/tok (train)"],
          f"Non-embedding parameters: LSTM {params['LSTM']:,}, GPT {params['GPT']:,}; {tokens} tokens per step at "
          f"every length; forward + backward + fused AdamW under bf16 autocast, best of {reps} steps after one warm-up.")


# ---- b, c, e. trained with the CLI ---------------------------------------------------------

def train(out: Path, extra: list[str]) -> dict:
    """`tfamily train ... --out OUT` in a fresh process; its last validation loss, steps and time."""
    cmd = [sys.executable, "-m", "tfamily.cli", "train", "--out", str(out), "--no-progress", "--force", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    return {"val": state["val_losses"][-1][1] if state["val_losses"] else float("nan"), "steps": state["step"],
            "train_s": state["elapsed"], "wall_s": time.perf_counter() - t0, "out": out}


def curve(out: Path) -> tuple[list[float], list[float]]:
    """(seconds, val loss) of a run from its metrics.jsonl."""
    xs, ys = [], []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("val_loss") is not None:
            xs.append(row["elapsed"])
            ys.append(row["val_loss"])
    return xs, ys


def wallclock(args) -> None:
    budget = 20 if args.quick else args.max_time
    base = ["--data", "shakespeare", "--tokenizer", "char", "--max-time", str(budget),
            "--steps", "1000000"]  # the clock ends every run (and shapes its cosine), not a step count
    runs = {"GPT (gpt-tiny, defaults)": train(args.work / "gpt", base + ["--preset", "gpt-tiny"])}
    for lr in args.rnn_lrs:
        runs[f"LSTM (lstm-tiny, lr {lr:g})"] = train(args.work / f"lstm-{lr:g}", base + ["--preset", "lstm-tiny",
                                                                                          "--lr", str(lr)])
    rows = [[name, f"{r['val']:.3f}", r["steps"], f"{r['train_s']:.0f}"] for name, r in runs.items()]
    plot("wallclock", {name: curve(r["out"]) for name, r in runs.items()}, "training seconds",
         "validation loss (nats / char)", f"Shakespeare, char-level, {budget:.0f} s each")
    write("wallclock", "in the same time, a Transformer learns more than an RNN", rows,
          ["run", "val loss (nats/char)", "steps", "train s"],
          "Same bundled Shakespeare, char tokenizer, held-out split, batch 16 x 64, bf16 autocast, cosine over "
          "the time budget. lstm-tiny: 2 x 256 LSTM (1.05M non-embedding parameters); gpt-tiny: 4 x 128 "
          "(0.79M). The LSTM trains with AdamW (Muon applies only to attention and MLP matrices).")


def translation(args) -> None:
    budget = 30 if args.quick else args.max_time
    d = MULTI30K
    pairs = ["--src", str(d / "train.en.gz"), "--tgt", str(d / "train.de.gz"),
             "--val-src", str(d / "val.en.gz"), "--val-tgt", str(d / "val.de.gz"), "--max-time", str(budget),
             "--steps", "1000000"]
    runs = {"Transformer (configs/transformer-multi30k.yaml)":
            train(args.work / "transformer", pairs + ["--config", str(ROOT / "configs" / "transformer-multi30k.yaml")])}
    for lr in args.rnn_lrs:
        runs[f"RNN + additive attention (rnn-seq2seq-tiny, lr {lr:g})"] = train(
            args.work / f"rnn-{lr:g}", pairs + ["--config", str(ROOT / "configs" / "transformer-multi30k.yaml"),
                                                "--preset", "rnn-seq2seq-tiny", "--lr", str(lr)])
    rows = []
    for name, r in runs.items():
        bleu = evaluate_bleu(r["out"], 200 if args.quick else None)
        rows.append([name, f"{r['val']:.3f}", r["steps"], f"{r['train_s']:.0f}", bleu])
    plot("translation", {name: curve(r["out"]) for name, r in runs.items()}, "training seconds",
         "validation loss (nats / token)", f"Multi30k en-de, {budget:.0f} s each")
    write("translation", "attention without recurrence translates better for the same training time", rows,
          ["run", "val loss", "steps", "train s", "val BLEU (beam 5)"],
          "Same data, tokenizer recipe, token-budget batches and schedule (the Transformer recipe's config, with "
          "the preset and learning rate replaced for the RNN). BLEU: sacreBLEU on Multi30k val (1,014 sentences).")


def evaluate_bleu(out: Path, limit: int | None) -> str:
    """sacreBLEU of beam 5 on Multi30k val (its first ``limit`` sentences)."""
    src, ref = MULTI30K / "val.en.gz", MULTI30K / "val.de.gz"
    if limit:
        import gzip
        for name in ("src", "ref"):
            path = {"src": src, "ref": ref}[name]
            lines = gzip.open(path, "rt", encoding="utf-8").read().splitlines()[:limit]
            (out / f"val.{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        src, ref = out / "val.src.txt", out / "val.ref.txt"
    cmd = [sys.executable, "-m", "tfamily.cli", "eval", str(out / "checkpoint"), "--src", str(src), "--ref", str(ref),
           "--json"]
    result = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return f"{json.loads(result.stdout.strip().splitlines()[-1])['bleu']:.1f}"


# ---- d. distance -----------------------------------------------------------------------------

@dataclass
class RecallTask:
    """Sequences of filler tokens holding ``pairs`` (key, value) pairs with distinct keys; they
    end with one of the keys again, and the model must say its value. The distance is how far
    back the asked pair sits; the other pairs sit anywhere before the query, so a model must
    keep every pair it has seen (an RNN, in its fixed-size state) until it learns which is asked.

        vocabulary: 0 filler tokens 0..F-1, keys F..F+K-1, values F+K..F+K+V-1
        row (pairs = 2):  f K' v' f f K v f f ... f f K  ->  v
    """
    fillers: int = 16
    keys: int = 16
    values: int = 16
    pairs: int = 1

    @property
    def vocab(self) -> int:
        return self.fillers + self.keys + self.values

    def batch(self, n: int, length: int, distances: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (n, length), answers (n,): the pair's key sits ``distances`` (n,) tokens before the
        last (2 .. length - 1: its value must fit between them)."""
        if int(distances.min()) < 2 or int(distances.max()) > length - 1:
            raise ValueError(f"distances must lie in 2..{length - 1} for rows of {length} tokens")
        if not 1 <= self.pairs <= self.keys or 2 * self.pairs > length - 1:
            raise ValueError(f"{self.pairs} pairs need 1..{self.keys} distinct keys and {2 * self.pairs} of the "
                             f"{length - 1} positions before the query")
        ids = torch.randint(0, self.fillers, (n, length), generator=gen)
        keys = self.fillers + torch.rand(n, self.keys, generator=gen).argsort(-1)[:, :self.pairs]  # distinct
        values = self.fillers + self.keys + torch.randint(0, self.values, (n, self.pairs), generator=gen)
        rows = torch.arange(n)
        at = length - 1 - distances  # the asked pair (keys[:, 0]) at its distance
        ids[rows, at], ids[rows, at + 1], ids[rows, -1] = keys[:, 0], values[:, 0], keys[:, 0]
        for row in range(n) if self.pairs > 1 else ():  # the others in free two-token slots before the query
            a = int(at[row])
            slots = [p for p in range(a % 2, length - 2, 2) if p != a]  # aligned with the asked pair: no overlaps
            if len(slots) < self.pairs - 1:
                raise ValueError(f"no room for {self.pairs} pairs in a row of {length} tokens")
            for k, pick in enumerate(torch.randperm(len(slots), generator=gen)[:self.pairs - 1].tolist(), start=1):
                ids[row, slots[pick]], ids[row, slots[pick] + 1] = keys[row, k], values[row, k]
        return ids, values[:, 0]


def recall_models(task: RecallTask, segment: int) -> dict[str, torch.nn.Module]:
    """Three small models of about the same size (2 layers of 128): an LSTM, a GPT with rotary
    positions (no learned table for lengths it never saw), and a Transformer-XL reading
    ``segment``-token segments with a memory that covers the longest row."""
    v = task.vocab
    return {
        "LSTM": build_model(get_preset("lstm-tiny").config(vocab_size=v, d_model=128, max_seq_len=4096)),
        "Transformer (rotary GPT)": build_model(get_preset("llama-tiny").config(vocab_size=v, n_layer=2, d_model=128,
                                                                                n_head=4, n_kv_head=4, d_ff=512,
                                                                                max_seq_len=1024)),
        "Transformer-XL": build_model(get_preset("txl-tiny").config(vocab_size=v, n_layer=2, max_seq_len=segment,
                                                                    mem_len=1024)),
    }


def answer_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, last_only=True).logits[:, -1].float()


def distance(args) -> None:
    task, gen = RecallTask(pairs=args.pairs), torch.Generator().manual_seed(0)
    doc = "distance" if args.pairs == 1 else f"distance-{args.pairs}-pairs"
    lengths = [16, 64] if args.quick else [16, 64, 256, 1024]
    budget = 10 if args.quick else args.max_time
    tokens = 1024 if args.quick else 8192  # per training step, whatever the row length
    rows, series = [], {}
    runs = []  # (name, model, lr): the LSTM once per learning rate tried, each from the same init
    for name, model in recall_models(task, 32 if args.quick else 128).items():
        if "LSTM" in name:
            runs += [(f"{name}, lr {lr:g}", copy.deepcopy(model), lr) for lr in args.rnn_lrs]
        else:
            runs.append((name, model, 1e-3))
    for name, model, lr in runs:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
        start, steps = time.perf_counter(), 0
        model.train()
        while time.perf_counter() - start < budget:  # rows of every test length, the pair anywhere in them
            n = lengths[steps % len(lengths)]
            batch = max(1, tokens // n)
            ids, answer = task.batch(batch, n, torch.randint(2, n, (batch,), generator=gen), gen)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(answer_logits(model, ids), answer)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
        model.eval()
        accs = []
        for n in lengths:  # the pair at the start of the row: as far from the query as the row allows
            ids, answer = task.batch(128, n, torch.full((128,), n - 1), gen)
            with torch.no_grad():
                accs.append((answer_logits(model, ids).argmax(-1) == answer).float().mean().item())
        series[name] = ([n - 1 for n in lengths], accs)
        rows.append([name, steps, *[f"{100 * a:.0f} %" for a in accs]])
    plot(doc, series, "distance from the pair to the query (tokens)", "recall accuracy",
         "Recall at a distance", logx=True)
    write(doc, "attention reaches any distance in one step; an RNN must carry the pair through every "
          "step in between", rows, ["model", "train steps", *[f"distance {n - 1}" for n in lengths]],
          f"Each model trained {budget:.0f} s on rows of {', '.join(map(str, lengths))} tokens in turn ({tokens} "
          f"tokens a step, the pair anywhere), tested on 128 rows per length with the pair at the far end; chance is "
          f"{100 / task.values:.0f} % ({task.values} values, {task.keys} keys, {task.fillers} fillers; "
          f"{task.pairs} pair{'s' if task.pairs > 1 else ''} a row, one asked). AdamW, "
          f"the LSTM at each learning rate of --rnn-lrs, the Transformers at 1e-3, gradients clipped at 1.")


# ---- e. contextual embeddings --------------------------------------------------------------------

def contextual(args) -> None:
    data = Path(args.sentiment) / args.language
    budget = 20 if args.quick else args.max_time
    if not (data / "train.tsv").is_file():
        sys.exit(f"{data}/train.tsv not found: run python scripts/prepare_sentiment.py first")
    text = args.work / "pretrain.txt"
    args.work.mkdir(parents=True, exist_ok=True)
    text.write_text("\n".join(line.split("\t", 1)[1] for line in (data / "train.tsv").read_text().splitlines()))
    rows = []
    for name, _, preset in CONTEXTUAL_ENCODERS:
        tried = []  # the same sweeps for both encoders; the best val decides
        for pre_lr in args.pretrain_lrs:
            out = args.work / f"{preset}-lr{pre_lr:g}"
            pre = train(out, ["--data", str(text), "--preset", preset, "--tokenizer", "wordpiece",
                              "--lr", f"{pre_lr:g}", "--max-time", str(budget), "--steps", "1000000"])
            for lr in args.finetune_lrs:
                fine = finetune_dir(args.work, preset, pre_lr, lr)
                subprocess.run([sys.executable, "-m", "tfamily.cli", "finetune", str(out / "checkpoint"),
                                "--train", str(data / "train.tsv"), "--val", str(data / "val.tsv"), "--test",
                                str(data / "test.tsv"), "--out", str(fine), "--epochs", "1" if args.quick else "3",
                                "--lr", f"{lr:g}", "--no-progress", "--force"], check=True, cwd=ROOT)
                results = json.loads((fine / "results.json").read_text())
                tried.append([pre_lr, pre["val"], pre["steps"], lr, results["val"]["accuracy"],
                              results["test"]["accuracy"]])
        best = max(range(len(tried)), key=lambda i: tried[i][4])
        for i, (pre_lr, pre_val, steps, lr, val, test) in enumerate(tried):
            rows.append([name + (" **(best val)**" if i == best else ""), f"{pre_lr:g}", f"{pre_val:.3f}", steps,
                         f"{lr:g}", f"{100 * val:.1f}", f"{100 * test:.1f}"])
    plot_contextual(args.work, args.pretrain_lrs, args.finetune_lrs, budget)
    lrs = lambda xs: ", ".join(f"{x:g}" for x in xs)  # noqa: E731
    write("contextual", "ELMo's BiLSTM gave contextual embeddings before BERT; BERT's bidirectional attention "
          "does it better", rows,
          ["encoder", "pretrain lr", "pretrain val loss", "pretrain steps", "fine-tune lr", "val acc %", "test acc %"],
          f"Both pretrained {budget:.0f} s on the {args.language} training texts (their own objective: masked LM + "
          f"NSP, or forward + backward LM) at each learning rate of --pretrain-lrs ({lrs(args.pretrain_lrs)}), then "
          f"fine-tuned {1 if args.quick else 3} epochs with the same command at each of --finetune-lrs "
          f"({lrs(args.finetune_lrs)}); compare the best-val row of each. The pretraining losses belong to different "
          "objectives and cannot be compared with each other.")


CONTEXTUAL_ENCODERS = (("BERT (bert-mini)", "BERT", "bert-mini"),
                       ("BiLSTM, ELMo-style (bilstm-tiny)", "BiLSTM", "bilstm-tiny"))  # (row, plot label, preset)


def finetune_dir(work: Path, preset: str, pretrain_lr: float, lr: float) -> Path:
    """The run folder of ``preset`` pretrained at ``pretrain_lr`` and fine-tuned at ``lr``."""
    return work / f"{preset}-lr{pretrain_lr:g}-ft-{lr:g}"


def plot_contextual(work: Path, pretrain_lrs: list[float], finetune_lrs: list[float], budget: float) -> Path:
    """docs/why/contextual.png: validation accuracy after each fine-tuning epoch, one line per
    encoder, pretraining lr and fine-tuning lr, read from the runs' results.json."""
    series = {}
    for _, label, preset in CONTEXTUAL_ENCODERS:
        for pre_lr in pretrain_lrs:
            for lr in finetune_lrs:
                results = json.loads((finetune_dir(work, preset, pre_lr, lr) / "results.json").read_text())
                epochs = results["val_by_epoch"]
                series[f"{label}, pretrain {pre_lr:g}, fine-tune {lr:g}"] = (
                    [e["epoch"] for e in epochs], [100 * e["score"] for e in epochs])
    return plot("contextual", series, "fine-tuning epoch", "val accuracy %",
                f"Fine-tuning after {budget:.0f} s of pretraining")


# ---- command line --------------------------------------------------------------------------------

EXPERIMENTS = {"parallel": parallel, "wallclock": wallclock, "translation": translation, "distance": distance,
               "contextual": contextual}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=list(EXPERIMENTS))
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets (checks the code, not the claim)")
    p.add_argument("--max-time", type=float, default=180, help="training seconds per run (default 180)")
    p.add_argument("--rnn-lrs", default="6e-3,2e-3", help="learning rates tried for the recurrent side")
    p.add_argument("--pretrain-lrs", default="6e-3,1e-3",
                   help="contextual: pretraining learning rates tried for both encoders (default 6e-3,1e-3)")
    p.add_argument("--finetune-lrs", default="3e-4,1e-3",
                   help="contextual: fine-tuning learning rates tried for both encoders (default 3e-4,1e-3)")
    p.add_argument("--pairs", type=int, default=1,
                   help="distance: key-value pairs per row, one of them asked (default 1; more writes "
                        "docs/why/distance-N-pairs)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "why", help="run folders (default runs/why)")
    p.add_argument("--sentiment", default=str(ROOT / "data" / "sentiment"), help="contextual: the sentiment splits")
    p.add_argument("--language", default="en", choices=["en", "zh"], help="contextual: which sentiment set")
    args = p.parse_args(argv)
    for lrs in ("rnn_lrs", "finetune_lrs", "pretrain_lrs"):  # "6e-3,1e-3" -> [0.006, 0.001]
        setattr(args, lrs, [float(x) for x in getattr(args, lrs).split(",")])
    global OUT
    if args.quick:  # a check of the code: its tables and plots stay out of docs/
        OUT = args.work / "quick"
    EXPERIMENTS[args.experiment](args)


if __name__ == "__main__":
    main()
