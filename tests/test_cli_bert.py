"""BERT through the CLI: pretrain on a text file, embed, fine-tune a classifier, kNN."""

import json

import pytest

from tfamily.cli import main

DOCS = ["The cat sat on the mat.\nIt was a sunny day.\nThe cat liked the sun.\n",
        "Dogs bark at night.\nThe moon was bright.\nA dog slept by the door.\n",
        "We cooked soup.\nThe soup was hot.\nEveryone ate well.\n"]

TINY = ["--preset", "bert-tiny", "--set", "d_model=32", "--set", "n_head=2", "--set", "d_ff=64",
        "--set", "n_layer=1", "--seq-len", "32", "--batch-size", "8", "--eval-batches", "2",
        "--no-progress", "--threads", "1", "--vocab-size", "120"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    text = folder / "docs.txt"
    text.write_text("\n".join(DOCS * 30), encoding="utf-8")
    out = folder / "run"
    assert main(["train", "--data", str(text), "--out", str(out), "--steps", "6", "--eval-interval", "3", *TINY]) == 0
    return out


def test_pretraining_writes_an_mlm_checkpoint(pretrained):
    cfg = json.loads((pretrained / "checkpoint" / "config.json").read_text())
    assert cfg["arch"] == "encoder" and cfg["head"] == "lm" and cfg["nsp"]
    tok = json.loads((pretrained / "checkpoint" / "tokenizer.json").read_text())
    assert tok["model"]["type"] == "WordPiece"
    assert (pretrained / "data" / "train.sentences.safetensors").is_file()
    rows = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [3, 6]


def test_resume_continues(pretrained):
    assert main(["train", "--out", str(pretrained), "--resume", "--steps", "8", "--no-progress"]) == 0
    assert json.loads((pretrained / "checkpoint" / "trainer.json").read_text())["step"] == 8


def test_embed_writes_unit_vectors(pretrained, tmp_path, capsys):
    assert main(["embed", str(pretrained / "checkpoint"), "The cat sat.", "A dog slept."]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and len(rows[0]["embedding"]) == 32
    assert abs(sum(x * x for x in rows[0]["embedding"]) - 1) < 1e-4
