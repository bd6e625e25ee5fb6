"""`tfamily train` on a GLM preset, resume, and `tfamily infill` on what it wrote."""

import json

from tfamily.cli import main
from tfamily.config import ModelConfig
from tfamily.tokenizers import Tokenizer

TEXT = "the quick brown fox jumps over the lazy dog. " * 60
TINY = ["--preset", "glm-tiny", "--set", "n_layer=1", "--set", "d_model=32", "--set", "n_head=2", "--batch-size", "4",
        "--seq-len", "24", "--eval-batches", "2", "--no-progress", "--threads", "1"]


def test_train_resume_and_infill(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "6", "--eval-interval", "3", *TINY]) == 0
    ck = out / "checkpoint"
    cfg = ModelConfig.from_json((ck / "config.json").read_text())
    tok = Tokenizer.load(ck / "tokenizer.json")
    assert cfg.arch == "glm" and cfg.decoder_start_token_id == tok.special_ids["span_start"]
    assert cfg.max_seq_len >= 25 + 2 * 4  # a 25-token window grows by [MASK] + [S] per span
    assert {"mask", "span_start", "span_end", "gmask"} <= set(tok.special_ids)
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert losses and all(l == l for l in losses)  # noqa: E741 (finite)

    assert main(["train", "--out", str(out), "--resume", "--steps", "8", "--no-progress"]) == 0
    assert json.loads((ck / "trainer.json").read_text())["step"] == 8
    capsys.readouterr()

    assert main(["infill", str(ck), "the quick [MASK] fox", "--max-tokens", "5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["text"].startswith("the quick ") and record["text"].endswith(" fox")
    assert 1 <= len(record["blanks"][0]["tokens"]) <= 5

    assert main(["infill", str(ck), "the quick [gMASK]", "--max-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("the quick ")


def test_infill_refuses_a_model_that_is_not_a_glm(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "gpt"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "1", "--preset", "gpt-tiny",
                 "--set", "n_layer=1", "--set", "d_model=32", "--set", "n_head=2", "--batch-size", "2",
                 "--seq-len", "16", "--eval-batches", "1", "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["infill", str(out / "checkpoint"), "a [MASK] b"]) == 2
    assert "needs a GLM" in capsys.readouterr().err
