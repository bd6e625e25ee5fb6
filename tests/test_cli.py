"""The CLI as a user runs it: train on a named text file, resume, generate, inspect, convert."""

import json
from pathlib import Path

import pytest
import torch

from tfamily.cli import load_run_config, main
from tfamily.config import ModelConfig
from tfamily.presets import get_preset
from tfamily.training import TrainConfig

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\n") * 40 + "春眠不觉晓，处处闻啼鸟。\n" * 20

TINY = ["--preset", "gpt-tiny", "--set", "n_layer=1", "--set", "d_model=32", "--set", "n_head=2",
        "--batch-size", "4", "--seq-len", "32", "--eval-batches", "2", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = folder / "run"
    assert main(["train", "--data", str(data), "--tokenizer", "char", "--out", str(out), "--steps", "12",
                 "--eval-interval", "6", *TINY]) == 0
    return out


def test_train_writes_a_complete_run(run):
    ck = run / "checkpoint"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "trainer.json", "trainer.safetensors"):
        assert (ck / name).is_file(), name
    assert (run / "loss.png").is_file() and (run / "data" / "meta.json").is_file()
    state = json.loads((ck / "trainer.json").read_text())
    assert state["step"] == 12
    cfg = ModelConfig.from_json((ck / "config.json").read_text())
    assert cfg.n_layer == 1 and cfg.d_model == 32 and cfg.vocab_size > len(set(TEXT))  # chars + specials


def test_resume_continues_and_refuses_to_overwrite(run, capsys):
    assert main(["train", "--out", str(run), "--steps", "12", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--data", "other.txt"]) == 2
    assert "--data cannot change it" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--steps", "15", "--no-progress"]) == 0
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 15


def test_lora_fine_tune_from_a_checkpoint(run, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("def f(x):\n    return x + 1\n" * 200, encoding="utf-8")
    out = tmp_path / "lora"
    before = json.loads(_eval(run / "checkpoint", other, capsys))["nll"]
    assert main(["train", "--init", str(run / "checkpoint"), "--lora", "4", "--lora-targets", "qkv,out,fc_in,fc_out", "--data", str(other), "--out", str(out),
                 "--steps", "60", "--lr", "2e-2", "--eval-interval", "60", "--batch-size", "4", "--seq-len", "32",
                 "--no-progress", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "LoRA rank 4 on qkv, out, fc_in, fc_out:" in err and "trainable parameters" in err
    after = json.loads(_eval(out / "checkpoint", other, capsys))["nll"]
    assert after < before - 0.1  # the adapters learned some of the new text (a 1-layer, 32-wide model)
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "--lora", "4", "--data", str(other), "--out", str(tmp_path / "x")]) == 2


def _eval(ckpt, text, capsys) -> str:
    assert main(["eval", str(ckpt), "--data", str(text), "--json"]) == 0
    return capsys.readouterr().out


def test_generate_show_probs_prints_a_table(run, capsys):
    assert main(["generate", str(run / "checkpoint"), "--prompt", "To be", "--max-tokens", "8",
                 "--show-probs", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("To be")
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 8  # one row per generated token
    assert "top alternatives" in out and "mean log-probability" in out


def test_generate_json_and_chinese_prompt(run, capsys):
    assert main(["generate", str(run / "checkpoint"), "--prompt", "春眠", "--max-tokens", "5", "--json",
                 "--temperature", "0"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["tokens"]) == 5
    for tok in result["tokens"]:
        assert 0 < tok["prob"] <= 1
        assert tok["alternatives"][0]["prob"] >= tok["alternatives"][-1]["prob"]
        assert tok["prob"] == pytest.approx(tok["alternatives"][0]["prob"])  # greedy takes the top one


def test_eval_reports_perplexity(run, capsys, tmp_path):
    text = tmp_path / "held_out.txt"
    text.write_text(TEXT[:500], encoding="utf-8")
    assert main(["eval", str(run / "checkpoint"), "--data", str(text), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens"] == 499  # char tokenizer: one token per character, all but the first scored
    assert r["perplexity"] == pytest.approx(2.718281828 ** r["nll"], rel=1e-6)
    assert r["bits_per_byte"] > 0


def test_inspect_counts_exactly(run, capsys):
    assert main(["inspect", str(run / "checkpoint"), "--batch", "2", "--seq-len", "32"]) == 0
    from tfamily.checkpoint import load_model
    from tfamily.inspect.summary import human_count
    model, _, _ = load_model(run / "checkpoint")
    total = sum(p.numel() for p in model.parameters())
    out = capsys.readouterr().out
    assert "total" in out and "FLOPs" in out and "activations" in out
    assert main(["inspect", "gpt2-small"]) == 0
    assert "124.4M" in capsys.readouterr().out
    total_line = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert human_count(total) in total_line  # the report's total is the checkpoint model's own count


def test_presets_lists_every_preset_with_its_source(capsys):
    from tfamily.presets import PRESETS
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PRESETS) and out.count("source:") == len(PRESETS)


def test_hf_round_trip_through_the_cli(run, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    assert main(["export-hf", str(run / "checkpoint"), str(hf)]) == 0
    ref = transformers.GPT2LMHeadModel.from_pretrained(hf).eval()
    assert main(["import-hf", str(hf), str(tmp_path / "back")]) == 0
    from tfamily.checkpoint import load_model
    model, _, tok = load_model(tmp_path / "back")
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-5, rtol=1e-5)
    assert tok is not None
    # converting again onto an existing folder never replaces it silently
    before = (tmp_path / "back" / "model.safetensors").read_bytes()
    assert main(["import-hf", str(hf), str(tmp_path / "back")]) == 2
    assert main(["export-hf", str(run / "checkpoint"), str(hf)]) == 2
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == before
    assert main(["import-hf", str(hf), str(tmp_path / "back"), "--force"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/no/such/file.txt"], "not found"),
    (["train", "--data", "shakespeare", "--preset", "gpt5"], "unknown preset"),
    (["train", "--data", "shakespeare", "--set", "n_layerz=2"], "n_layerz"),
    (["train", "--data", "shakespeare", "--lr", "-1"], "lr must be positive"),
    (["generate", "/no/such/checkpoint"], "not a tfamily checkpoint"),
    (["inspect", "nothing-like-this"], "neither a checkpoint folder nor a preset"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path):
    argv = [*argv, "--out", str(tmp_path / "x")] if argv[0] == "train" else argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_run_config_is_valid():
    configs = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert configs, "no run configs found"
    for path in configs:
        run = load_run_config(str(path))
        model = dict(run["model"])
        preset = model.pop("preset")
        get_preset(preset).config(**{"vocab_size": 100, **model})
        TrainConfig.from_dict({k: v for k, v in run["train"].items()})
        assert set(run["data"]) <= {"path", "tokenizer", "vocab_size", "val_fraction", "src", "tgt", "pairs",
                                    "val_src", "val_tgt", "segmenter", "whole_word", "objective",
                                    "source_prefix"}


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_generate_with_smaller_weights(run, capsys, weights):
    assert main(["generate", str(run / "checkpoint"), "--prompt", "To be", "--max-tokens", "6", "--json",
                 "--temperature", "0", "--weights", weights]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["tokens"]) == 6 and all(0 < t["prob"] <= 1 for t in result["tokens"])
