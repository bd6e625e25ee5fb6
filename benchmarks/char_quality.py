"""Validation loss reached in a fixed wall-clock budget, char-level, on one text file.

Runs, one after the other on the same machine and text:
  1. `tfamily train --data FILE --tokenizer char --max-time T`   (tfamily's defaults)
  2. the same with configs/nanogpt-cpu-recipe.yaml: the hyperparameters of nanoGPT's CPU
     Shakespeare recipe (fp32, AdamW, 4 x 128, block 64, batch 12, 2000 iterations) in
     tfamily's trainer, stopped at the same budget if it has not finished.
and prints both validation losses (nats per character, same val split).

    python -m benchmarks.char_quality [--data FILE] [--max-time 180]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def train(out: Path, data: str, max_time: float, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "tfamily.cli", "train", "--data", data, "--tokenizer", "char", "--out", str(out),
           "--max-time", str(max_time), "--no-progress", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    return {"val_loss": state["val_losses"][-1][1], "steps": state["step"], "train_seconds": state["elapsed"],
            "wall_seconds": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--max-time", type=float, default=180)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = train(Path(tmp) / "ours", args.data, args.max_time, [])
        recipe = train(Path(tmp) / "recipe", args.data, args.max_time,
                       ["--config", str(ROOT / "configs" / "nanogpt-cpu-recipe.yaml")])
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, data={args.data}, budget {args.max_time:.0f}s")
    print(f"{'run':34s} {'val loss':>9s} {'steps':>7s} {'train s':>8s} {'wall s':>7s}")
    for name, r in (("tfamily defaults", ours), ("nanoGPT CPU-recipe hyperparameters", recipe)):
        print(f"{name:34s} {r['val_loss']:9.4f} {r['steps']:7d} {r['train_seconds']:8.1f} {r['wall_seconds']:7.1f}")


if __name__ == "__main__":
    main()
