"""The CLI with a Transformer-XL preset: train on windows of several segments, resume,
evaluate segment by segment with and without memory, generate."""

import json

import pytest

from tfamily.cli import main
from tfamily.config import ModelConfig

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\n") * 40

TINY = ["--preset", "txl-tiny", "--set", "n_layer=1", "--set", "d_model=32", "--set", "n_head=2",
        "--set", "max_seq_len=16", "--set", "mem_len=16", "--batch-size", "4", "--seq-len", "48",
        "--eval-batches", "2", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_xl")
    data = folder / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = folder / "run"
    assert main(["train", "--data", str(data), "--tokenizer", "char", "--out", str(out), "--steps", "8",
                 "--eval-interval", "4", *TINY]) == 0
    return out, data


def test_train_keeps_the_segment_length_and_trains_on_longer_windows(run):
    out, _ = run
    cfg = ModelConfig.from_json((out / "checkpoint" / "config.json").read_text())
    assert cfg.arch == "transformer-xl" and cfg.max_seq_len == 16 and cfg.mem_len == 16  # windows of 48 = 3 segments
    assert main(["train", "--out", str(out), "--resume", "--steps", "10", "--no-progress"]) == 0


def test_eval_scores_segments_with_and_without_memory(run, capsys):
    out, data = run
    assert main(["eval", str(out / "checkpoint"), "--data", str(data), "--json"]) == 0
    with_memory = json.loads(capsys.readouterr().out)
    assert main(["eval", str(out / "checkpoint"), "--data", str(data), "--json", "--mem-len", "0"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert with_memory["mem_len"] == 16 and without["mem_len"] == 0 and with_memory["segment_len"] == 16
    assert with_memory["tokens"] == without["tokens"] == len(TEXT) - 1
    assert with_memory["nll"] != without["nll"]


def test_eval_refuses_a_sliding_window_stride(run, capsys):
    out, data = run
    assert main(["eval", str(out / "checkpoint"), "--data", str(data), "--stride", "8"]) == 2
    assert "--mem-len" in capsys.readouterr().err


def test_generate_runs_past_one_segment(run, capsys):
    out, _ = run
    assert main(["generate", str(out / "checkpoint"), "--prompt", "To be, or not to be, that", "--max-tokens", "20",
                 "--seed", "0", "--json"]) == 0
    assert capsys.readouterr().out.strip()
