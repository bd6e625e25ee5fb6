import json
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tfamily.checkpoint import load_model, save_checkpoint
from tfamily.models import build_model
from tfamily.objectives import CausalLMObjective
from tfamily.presets import get_preset
from tfamily.training import TrainConfig, Trainer, warmup_cosine


class Counting:
    """Windows of an arithmetic sequence mod V; batch(step) is a pure function of (seed, step)."""

    def __init__(self, seed, batch=8, t=16, vocab=40):
        self.seed, self.b, self.t, self.v = seed, batch, t, vocab

    def batch(self, step):
        g = torch.Generator().manual_seed(self.seed * 100_003 + step)
        start = torch.randint(0, self.v, (self.b, 1), generator=g)
        return (start + torch.arange(self.t + 1)) % self.v


class Fixed:
    def __init__(self, x):
        self.x = x

    def batch(self, step):
        return self.x


def make(tmp_path, name="run", dropout=0.0, data=None, **kw):
    torch.manual_seed(0)
    cfg = get_preset("gpt-tiny").config(vocab_size=40, n_layer=2, d_model=64, max_seq_len=32, dropout=dropout)
    tc = TrainConfig(**{**dict(out_dir=str(tmp_path / name), steps=20, batch_size=8, seq_len=16, lr=3e-3, warmup=3,
                               eval_interval=5, eval_batches=2, log_interval=1, progress=False, bf16=False), **kw})
    return Trainer(build_model(cfg), cfg, CausalLMObjective(), data or Counting(1), Counting(2), tc)


def test_overfits_one_batch(tmp_path):
    x = torch.randint(0, 40, (4, 17))
    t = make(tmp_path, data=Fixed(x), steps=120, warmup=5, eval_interval=1000, weight_decay=0.0)
    t.fit()
    assert t.losses[0] > 3.0 and t.losses[-1] < 0.05


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_exact(tmp_path, optimizer):
    straight = make(tmp_path, "a", dropout=0.1, optimizer=optimizer)
    straight.fit()
    first = make(tmp_path, "b", dropout=0.1, optimizer=optimizer)
    first.fit(until=8)
    assert first.step == 8
    resumed = make(tmp_path, "b", dropout=0.1, optimizer=optimizer)
    resumed.resume(tmp_path / "b" / "checkpoint")
    resumed.fit()
    assert first.losses == straight.losses[:8]
    assert resumed.losses == straight.losses[8:]  # bit-identical, dropout included
    assert resumed.val_losses[-1] == straight.val_losses[-1]


def test_outputs_metrics_plot_and_checkpoint(tmp_path):
    t = make(tmp_path)
    result = t.fit()
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 21))
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 10, 15, 20]
    assert all(r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert (out / "loss.png").stat().st_size > 1000
    assert result["val_loss"] < math.log(40)  # learned something
    model, cfg, _ = load_model(out / "checkpoint")
    torch.testing.assert_close(model.state_dict()["lm_head.weight"], t.model.state_dict()["lm_head.weight"])
    state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert state["step"] == 20 and state["train_config"]["lr"] == 3e-3


def test_max_time_stops_early(tmp_path):
    t = make(tmp_path, steps=100_000, max_time=1.0, eval_interval=100_000)
    result = t.fit()
    assert 0 < result["step"] < 100_000
    assert 1.0 <= result["elapsed"] < 10


def _gradients_at_each_step(trainer) -> list[list[torch.Tensor]]:
    """The model's gradients as each optimizer step begins, in ``named_parameters`` order."""
    seen = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.grad.clone() for p in trainer.model.parameters()]))
    try:
        trainer.fit()
    finally:
        hook.remove()
    return seen


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    """Four micro-batches hand the optimizer the gradient of the whole batch. (Compared as
    the first step's gradients: AdamW divides by sqrt(v), which blows rounding noise in
    near-zero gradients up into parameter differences of 1e-4 within three steps, and later
    gradients are taken at those slightly different parameters.)"""
    a = make(tmp_path, "a", steps=3, grad_accum=1, eval_interval=100, grad_clip=None, optimizer="adamw")
    b = make(tmp_path, "b", steps=3, grad_accum=4, eval_interval=100, grad_clip=None, optimizer="adamw")
    steps_a, steps_b = _gradients_at_each_step(a), _gradients_at_each_step(b)
    assert len(steps_a) == len(steps_b) == 3
    for (n, _), g, h in zip(a.model.named_parameters(), steps_a[0], steps_b[0]):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-4, msg=n)
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, atol=1e-3, rtol=0, msg=n)  # well within one step (lr 3e-3)


def test_bf16_autocast_trains(tmp_path):
    t = make(tmp_path, bf16=True, steps=30)
    t.fit()
    assert sum(t.losses[-5:]) / 5 < t.losses[0] - 0.5


def test_schedule_warmup_then_cosine_to_final_lr():
    assert warmup_cosine(0, 0.0, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 0.0, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 0.0, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert warmup_cosine(50, 0.5, 1.0, 0.1, 10) == pytest.approx(0.55)
    assert warmup_cosine(99, 1.0, 1.0, 0.1, 10) == pytest.approx(0.1)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    t = make(tmp_path, steps=5)
    t.fit()
    ck = tmp_path / "run" / "checkpoint"
    before = (ck / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr("safetensors.torch.save_model", boom)
    with pytest.raises(OSError):
        save_checkpoint(ck, t.model, t.model_cfg)
    assert (ck / "model.safetensors").read_bytes() == before


def test_bad_train_config_names_the_field():
    from tfamily.config import ConfigError
    with pytest.raises(ConfigError, match="grad_accum"):
        TrainConfig(batch_size=10, grad_accum=3)
    with pytest.raises(ConfigError, match="max_time"):
        TrainConfig(max_time=-1)
    with pytest.raises(ConfigError, match="unknown training field"):
        TrainConfig.from_dict({"stepz": 3})


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(tmp_path):
    t = make(tmp_path, optimizer="muon", steps=10)
    adamw, muon = t.optimizers
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    for name, p in t.model.named_parameters():
        in_block_linear = ".blocks." in name and name.endswith("weight") and p.dim() == 2
        assert (id(p) in muon_params) == in_block_linear, name
    t.fit()
    assert sum(t.losses[-3:]) / 3 < t.losses[0] - 1.0


def test_resuming_with_another_optimizer_is_refused(tmp_path):
    make(tmp_path, steps=3, optimizer="adamw").fit()
    other = make(tmp_path, optimizer="muon")
    with pytest.raises(ValueError, match="another --optimizer"):
        other.resume(tmp_path / "run" / "checkpoint")


def test_compiled_training_matches_eager(tmp_path):
    eager = make(tmp_path, "eager", steps=3, eval_interval=100, optimizer="adamw")
    compiled = make(tmp_path, "compiled", steps=3, eval_interval=100, optimizer="adamw", compile=True)
    eager.fit(), compiled.fit()
    assert compiled.losses == pytest.approx(eager.losses, abs=1e-4)
