"""Training under faults: SIGKILL at random moments (some mid-checkpoint), a disk that fills
while a checkpoint is written, and NaN / inf losses. Each keeps the last good checkpoint, and
a killed-and-resumed run gives the same losses, bit for bit, as one that never stopped."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from fault_helpers import record, trials
from tfamily.checkpoint import CheckpointError, load_trainer_state, read_config, save_checkpoint
from tfamily.models import build_model
from tfamily.objectives import CausalLMObjective
from tfamily.presets import get_preset
from tfamily.training import TrainConfig, Trainer
from tfamily.training.trainer import NonFiniteLoss, read_metrics

TF = [sys.executable, "-m", "tfamily.cli"]
CORPUS = Path(__file__).resolve().parents[2] / "tfamily" / "data" / "corpora" / "shakespeare.txt"
# a tiny model that saves often: a checkpoint every 5 steps, so kills often land in a write
RUN = ["--preset", "gpt-tiny", "--set", "n_layer=2", "--set", "d_model=64", "--set", "n_head=2",
       "--tokenizer", "char", "--batch-size", "8", "--seq-len", "32", "--warmup", "5", "--eval-interval", "5",
       "--eval-batches", "1", "--log-interval", "1", "--threads", "1", "--no-progress", "--optimizer", "adamw"]
ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(CORPUS.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    return path


def train_cmd(corpus: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [*TF, "train", "--data", str(corpus), "--out", str(out), "--steps", str(steps), *RUN, *extra]


def losses_by_step(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def checkpoint_is_whole(ckpt: Path) -> int | None:
    """Load everything a resume reads; return the checkpoint's step (None: no checkpoint yet).
    Any half-written file fails here."""
    if not ckpt.exists():
        return None
    cfg = read_config(ckpt)
    state, tensors = load_trainer_state(ckpt)
    weights = safetensors.torch.load_file(str(ckpt / "model.safetensors"))
    assert weights and tensors and cfg.d_model == 64
    assert all(torch.isfinite(w).all() for w in weights.values())
    return state["step"]


def digest(ckpt: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(ckpt.iterdir())}


def wait_for_training(proc: subprocess.Popen, out: Path, steps_before: int, timeout: float = 60) -> bool:
    """Until this process is inside its training loop: it has printed its "training:" line (by
    then a resume has dropped the records a killed run logged past its checkpoint) and logged a
    step past ``steps_before``."""
    for line in proc.stderr:
        if line.startswith(b"training:"):
            break
    else:
        return False
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        rows = read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
        if any(r["step"] > steps_before for r in rows):
            return True
        time.sleep(0.002)
    return False


def kill_mid_write(proc: subprocess.Popen, out: Path, timeout: float = 30) -> None:
    """SIGKILL the moment a checkpoint's temporary folder appears (a save has begun)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(name.startswith(".checkpoint.tmp-") for name in os.listdir(out)):
            proc.kill()
            return
    proc.kill()


def test_sigkill_at_random_moments_then_resume_gives_the_same_losses(corpus, tmp_path):
    n_kills = trials(4, 20)
    steps = trials(100, 400)
    ref = tmp_path / "ref"
    subprocess.run(train_cmd(corpus, ref, steps), env=ENV, check=True, capture_output=True)
    want = losses_by_step(ref)
    assert sorted(want) == list(range(1, steps + 1))

    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = mid_write = 0
    seen_steps = []
    for attempt in range(n_kills * 4):  # bounded: a kill that lands before training counts no less
        if kills >= n_kills:
            break
        ckpt = out / "checkpoint"
        resume = ckpt.exists()
        cmd = train_cmd(corpus, out, steps, *(["--resume"] if resume else ["--force"]))
        if resume:  # --resume takes the run's settings from its checkpoint, not the data flags
            cmd = [*TF, "train", "--out", str(out), "--resume", "--no-progress", "--threads", "1"]
        before = checkpoint_is_whole(ckpt) or 0
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_for_training(proc, out, before):
            proc.wait(timeout=60)
            break  # the run finished before it could be killed
        if kills % 2:  # every other kill aims at a checkpoint write
            kill_mid_write(proc, out)
        else:
            time.sleep(rng.uniform(0.0, 0.15))
            proc.kill()
        proc.wait(timeout=30)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
        kills += 1
        mid_write += (out / f".checkpoint.tmp-{proc.pid}").exists()  # this process was killed inside a save
        step = checkpoint_is_whole(ckpt)  # never half-written: every load succeeds
        assert step is None or step >= before  # a killed write left the previous one (or the new one) whole
        seen_steps.append(step)
    # finish the run (from the start if every kill landed before the first checkpoint)
    if (out / "checkpoint").exists():
        cmd = [*TF, "train", "--out", str(out), "--resume", "--no-progress", "--threads", "1"]
    else:
        cmd = train_cmd(corpus, out, steps, "--force")
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    got = losses_by_step(out)
    assert got == want, "a killed and resumed run must give the uninterrupted run's losses bit for bit"
    assert kills >= min(n_kills, 3), f"only {kills} kills landed"
    if n_kills >= 20:
        assert mid_write >= 3, f"only {mid_write} kills landed inside a checkpoint write"
    record("training: SIGKILL at random moments, resumed with --resume", kills,
           f"{mid_write} kills inside a checkpoint write; every checkpoint left behind loaded whole "
           f"(steps {seen_steps}); the {steps}-step losses equal the uninterrupted run's bit for bit")


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(corpus, tmp_path, how):
    """A small tmpfs filled up (real ENOSPC), or RLIMIT_FSIZE (EFBIG) where mounting is not allowed."""
    root = tmp_path / "disk"
    mounted = how == "tmpfs" and _mount_tmpfs(root, "24m")
    if how == "tmpfs" and not mounted:
        how = "rlimit (tmpfs could not be mounted here)"
        root.rmdir()
    root.mkdir(exist_ok=True)
    try:
        out = root / "run"
        subprocess.run(train_cmd(corpus, out, 10), env=ENV, check=True, capture_output=True)
        ckpt = out / "checkpoint"
        before = digest(ckpt)
        size = (ckpt / "model.safetensors").stat().st_size
        cmd = [*TF, "train", "--out", str(out), "--resume", "--no-progress", "--threads", "1", "--steps", "20"]
        if mounted:  # leave room for the metrics lines but not for another checkpoint
            free = shutil.disk_usage(root).free
            (root / "filler").write_bytes(b"\0" * max(0, free - size // 2))
            proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
        else:
            proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120,
                                  preexec_fn=_limit_file_size(size // 2))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert "could not write the checkpoint" in lines[-1] and "previous checkpoint is intact" in lines[-1]
        assert ("no space left" if mounted else "file too large") in lines[-1]
        assert digest(ckpt) == before and checkpoint_is_whole(ckpt) == 10
        assert not [n for n in os.listdir(out) if n.startswith(".checkpoint.")]  # the failed write is cleaned up
        record(f"training: disk fills during a checkpoint write ({how})", 1,
               f"exit 2, one line: \u201c{lines[-1][-120:]}\u201d; previous checkpoint byte-identical")
    finally:
        if mounted:
            subprocess.run(["umount", str(root)], check=False)


# ---- NaN / inf losses, in process ---------------------------------------------------------

class Counting:
    """Row i of batch s counts up from s + i (mod 40): a deterministic, learnable stream."""

    def batch(self, step: int) -> torch.Tensor:
        base = torch.arange(17) + step
        return torch.stack([(base + i) % 40 for i in range(8)])


class PoisonedLoss(CausalLMObjective):
    """The causal-LM loss, multiplied by NaN (or inf) on the chosen steps."""

    def __init__(self, bad_steps: set[int], value: float, trainer_ref: list):
        super().__init__()
        self.bad_steps, self.value, self.trainer_ref = bad_steps, value, trainer_ref

    def loss(self, output, batch):
        loss = super().loss(output, batch)
        t = self.trainer_ref[0]
        if t.model.training and t.step in self.bad_steps:
            return loss * self.value
        return loss


def make(tmp_path, bad_steps, value=float("nan"), **kw):
    torch.manual_seed(0)
    cfg = get_preset("gpt-tiny").config(vocab_size=40, n_layer=2, d_model=64, max_seq_len=32)
    tc = TrainConfig(**{**dict(out_dir=str(tmp_path / "run"), steps=20, batch_size=8, seq_len=16, lr=3e-3, warmup=3,
                               eval_interval=5, eval_batches=1, log_interval=1, progress=False, bf16=False), **kw})
    ref: list = []
    t = Trainer(build_model(cfg), cfg, PoisonedLoss(set(bad_steps), value, ref), Counting(), Counting(), tc)
    ref.append(t)
    return t


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_step_is_skipped_and_counted(tmp_path, value):
    t = make(tmp_path, bad_steps={7, 12}, value=value)
    t.fit()
    assert t.step == 20 and t.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    skipped = [r["step"] for r in rows if "skipped" in r]
    assert skipped == [8, 13]  # logged with the step number after the update that was not made
    assert rows[-1].get("skipped_steps") == 2 or any(r.get("skipped_steps") == 2 for r in rows if "loss" in r)
    state, _ = load_trainer_state(tmp_path / "run" / "checkpoint")
    assert state["skipped_steps"] == 2
    record(f"training: {value} loss on 2 steps", 1, "both steps skipped (no update), counted in metrics.jsonl "
                                                  "and trainer.json; the run finished with finite weights")


def test_persistent_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    t = make(tmp_path, bad_steps=set(range(11, 100)), max_bad_steps=3)
    with pytest.raises(NonFiniteLoss, match=r"stopped at step 14: .* 3 steps in a row") as e:
        t.fit()
    assert "last good checkpoint" in str(e.value)
    state, _ = load_trainer_state(tmp_path / "run" / "checkpoint")
    assert state["step"] == 10  # the checkpoint before the NaNs, not a later one
    record("training: NaN loss on every step from step 11 (max_bad_steps 3)", 1,
           f"stopped with \u201c{str(e.value)[:90]}\u2026\u201d; the step-10 checkpoint kept")


def test_weights_that_went_non_finite_are_never_saved(tmp_path):
    t = make(tmp_path, bad_steps=set())
    t.fit(until=5)
    ckpt = tmp_path / "run" / "checkpoint"
    before = digest(ckpt)
    with torch.no_grad():
        next(t.model.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match="not saving step 5"):
        t.save()
    assert digest(ckpt) == before
    record("training: a weight turned NaN, then a save", 1, "refused with a message; the checkpoint unchanged")


def test_cli_reports_a_nan_stop_in_one_line(corpus, tmp_path):
    """Through the CLI: lr so large that the loss overflows at once; exit 2 and one line, no traceback."""
    out = tmp_path / "run"
    proc = subprocess.run(train_cmd(corpus, out, 30, "--lr", "1e30", "--grad-clip", "1e38", "--max-bad-steps", "2",
                                    "--no-bf16"), env=ENV, capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:  # some lr blew up only the weights, not the loss: still no NaN checkpoint
        assert checkpoint_is_whole(out / "checkpoint") is not None
        pytest.fail("expected the run to stop on a non-finite loss")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "training stopped at step" in proc.stderr.strip().splitlines()[-1] or \
        "not saving step" in proc.stderr.strip().splitlines()[-1]


def test_a_stale_half_written_folder_is_ignored_and_cleaned(tmp_path):
    """What a SIGKILL mid-save leaves (a .checkpoint.tmp-PID folder) never shadows the real one."""
    torch.manual_seed(0)
    cfg = get_preset("gpt-tiny").config(vocab_size=40, n_layer=1, d_model=32, max_seq_len=16)
    model = build_model(cfg)
    ckpt = save_checkpoint(tmp_path / "checkpoint", model, cfg)
    stale = tmp_path / ".checkpoint.tmp-99999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x10\x00")  # a torn file
    assert read_config(ckpt).d_model == 32
    save_checkpoint(ckpt, model, cfg)
    assert not stale.exists()
    # the fallback swap's window: the old folder moved aside, the new one not yet in place
    os.replace(ckpt, tmp_path / ".checkpoint.old-4242")
    assert read_config(ckpt).d_model == 32  # put back by the reader
    with pytest.raises(CheckpointError):
        read_config(tmp_path / "nothing-here")


def test_metrics_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    t = make(tmp_path, bad_steps=set())
    t.fit(until=7)  # checkpoint at 5 plus the final save at 7
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:  # what a killed run leaves: later steps, a torn line
        f.write(json.dumps({"step": 8, "loss": 1.0}) + "\n" + '{"step": 9, "lo')
    resumed = make(tmp_path, bad_steps=set())
    resumed.resume(tmp_path / "run" / "checkpoint")
    rows = read_metrics(metrics)
    assert max(r["step"] for r in rows) == 7 and metrics.read_text().endswith("\n")
    assert math.isfinite(rows[-1].get("val_loss", rows[-1].get("loss", 0)))
