"""The run's plot: `tfamily train` writes loss.png next to metrics.jsonl with the train and
validation loss, the throughput (tokens/s) and the learning rate, whatever the family; the
series the plot draws are read from metrics.jsonl by ``metric_series``."""

from __future__ import annotations

import pytest

from tfamily.cli import main
from tfamily.training.trainer import SERIES, metric_series, plot_losses, read_metrics

TEXT = ("The cat sat on the mat.\nIt was a sunny day.\nThe cat liked the sun.\n"
        "Dogs bark at night.\nThe moon was bright.\nA dog slept by the door.\n") * 40
SMALL = ["--set", "d_model=32", "--set", "n_head=2", "--set", "d_ff=64", "--set", "n_layer=1", "--seq-len", "32",
         "--batch-size", "4", "--eval-batches", "1", "--no-progress", "--threads", "1", "--log-interval", "1"]
RUNS = {"gpt-tiny": ["--tokenizer", "char"], "bert-tiny": ["--vocab-size", "120"]}


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    data = folder / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = folder / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--preset", request.param, "--steps", "6",
                 "--eval-interval", "3", "--warmup", "3", *SMALL, *RUNS[request.param]]) == 0
    return out


def test_the_plot_is_written_with_every_series(run):
    png = run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    series = metric_series(read_metrics(run / "metrics.jsonl"))
    assert set(series) == set(SERIES) == {"loss", "val_loss", "tokens_per_s", "lr"}
    assert [step for step, _ in series["loss"]] == list(range(1, 7))  # every step logged (log_interval 1)
    assert [step for step, _ in series["val_loss"]] == [3, 6]
    assert all(v > 0 for _, v in series["tokens_per_s"]) and len(series["tokens_per_s"]) == 6
    lrs = [v for _, v in series["lr"]]
    assert len(lrs) == 6 and lrs[0] < lrs[2]  # the warm-up is visible
    assert all(v > 0 for _, v in series["loss"] + series["val_loss"])


def test_series_skip_records_without_a_number(tmp_path):
    rows = [{"step": 1, "loss": 2.5, "lr": 1e-3, "tokens_per_s": 100.0},
            {"step": 2, "skipped": "non-finite loss or gradient", "bad_loss": "nan", "skipped_steps": 1},
            {"step": 2, "val_loss": 2.4, "elapsed": 0.1}]
    series = metric_series(rows)
    assert series == {"loss": [(1, 2.5)], "val_loss": [(2, 2.4)], "tokens_per_s": [(1, 100.0)], "lr": [(1, 1e-3)]}
    assert plot_losses(tmp_path / "missing.jsonl", tmp_path / "x.png") is None
