"""The trainer under torchrun: 2 CPU processes with gloo give the losses of 1 process with
the whole batch (DDP and FSDP, a GPT and a translation model), and a run saved by 2
processes resumes in 1 exactly."""

import json
import os
import signal
import subprocess
import sys

import pytest

import numpy as np
GPT = ["--data", "shakespeare", "--set", "n_layer=2", "--set", "d_model=32", "--set", "n_head=2",
       "--batch-size", "8", "--seq-len", "32", "--eval-batches", "2", "--no-bf16"]
COMMON = ["--no-progress", "--threads", "1", "--log-interval", "1"]


def train(out, args, procs=1, extra=()):
    """Run `tfamily train` in 1 process or under torchrun with ``procs``; returns its train losses."""
    launcher = [sys.executable, "-m", "tfamily.cli"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
        "-m", "tfamily.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a session of its own, so a timeout kills the workers too, not only the launcher
    proc = subprocess.Popen([*launcher, "train", "--out", str(out), *args, *COMMON, *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    return losses(out)


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_ddp_two_processes_match_one(tmp_path, optimizer):
    one = train(tmp_path / "one", [*GPT, "--steps", "5", "--optimizer", optimizer])
    two = train(tmp_path / "two", [*GPT, "--steps", "5", "--optimizer", optimizer], procs=2)
    assert two == pytest.approx(one, abs=2e-5)


def test_fsdp_two_processes_match_one(tmp_path):
    one = train(tmp_path / "one", [*GPT, "--steps", "5", "--optimizer", "adamw"])
    two = train(tmp_path / "two", [*GPT, "--steps", "5", "--optimizer", "adamw", "--parallel", "fsdp"], procs=2)
    assert two == pytest.approx(one, abs=2e-5)


def test_translation_ddp_matches_one_process(tmp_path):
    """Token-count batches split unevenly over ranks; losses are weighted by tokens, so 2
    processes still give the 1-process loss of the whole batch."""
    rng = np.random.default_rng(0)
    words = "a man woman dog cat rides walks sits on in the park bike street red small big".split()
    src_lines = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(300)]  # varied lengths
    src, tgt = tmp_path / "s.en", tmp_path / "t.de"
    src.write_text("".join(line + "\n" for line in src_lines), encoding="utf-8")
    tgt.write_text("".join(line[::-1] + "\n" for line in src_lines), encoding="utf-8")
    args = ["--preset", "transformer-tiny", "--src", str(src), "--tgt", str(tgt), "--vocab-size", "400",
            "--set", "d_model=32", "--set", "n_head=2", "--set", "d_ff=64", "--batch-tokens", "600",
            "--steps", "4", "--eval-batches", "2", "--optimizer", "adamw", "--no-bf16"]
    one = train(tmp_path / "one", args)
    two = train(tmp_path / "two", args, procs=2)
    assert two == pytest.approx(one, abs=2e-5)


def test_resume_from_two_processes_in_one(tmp_path):
    """4 steps in 2 processes, then 4 more in 1, give the losses of 8 steps in 1 (a constant
    learning rate after warm-up, so the first run's shorter budget does not change the schedule)."""
    args = [*GPT, "--optimizer", "muon", "--schedule", "constant", "--warmup", "2", "--eval-interval", "4"]
    straight = train(tmp_path / "straight", [*args, "--steps", "8"])
    train(tmp_path / "run", [*args, "--steps", "4"], procs=2)
    resumed = train(tmp_path / "run", ["--resume", "--steps", "8"])
    assert len(resumed) == 8 and resumed == pytest.approx(straight, abs=2e-5)
