"""Nothing already saved is lost: every command that writes refuses an existing target without
--force (exit 2, one line, the target byte-identical), and replaces it with --force."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fault_helpers import record
from tfamily.cli import main
from tfamily.files import OverwriteError, atomic_write, atomic_write_text, refuse_overwrite

ROOT = Path(__file__).resolve().parents[2]
TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n") * 60
TINY = ["--preset", "gpt-tiny", "--set", "n_layer=1", "--set", "d_model=32", "--set", "n_head=2",
        "--batch-size", "4", "--seq-len", "32", "--eval-batches", "1", "--no-progress", "--threads", "1"]


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("overwrite")
    data = folder / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = folder / "run"
    assert main(["train", "--data", str(data), "--tokenizer", "char", "--out", str(out), "--steps", "4",
                 "--eval-interval", "4", *TINY]) == 0
    return out


def refused(argv, target: Path, capsys) -> str:
    before = tree_digest(target)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert tree_digest(target) == before
    return err


def test_every_writing_command_refuses_without_force(run, tmp_path, capsys):
    data = run.parent / "text.txt"
    ckpt = run / "checkpoint"
    cases = 0
    # train into a run that has a checkpoint, and into a folder with files but no checkpoint
    err = refused(["train", "--data", str(data), "--out", str(run), "--steps", "4", *TINY], run, capsys)
    assert "--force" in err and "--resume" in err
    stray = tmp_path / "mine"
    stray.mkdir()
    (stray / "notes.txt").write_text("my own notes")
    err = refused(["train", "--data", str(data), "--out", str(stray), "--steps", "4", *TINY], stray, capsys)
    assert "--force" in err
    cases += 2
    # conversions onto an existing folder
    hf = tmp_path / "hf"
    assert main(["export-hf", str(ckpt), str(hf)]) == 0
    refused(["export-hf", str(ckpt), str(hf)], hf, capsys)
    refused(["import-hf", str(hf), str(stray)], stray, capsys)
    cases += 2
    # outputs of eval / translate-like commands / embed
    out_file = tmp_path / "taken.txt"
    out_file.write_text("precious\n")
    text_file = tmp_path / "lines.txt"
    text_file.write_text("To be\n")
    err = refused(["embed", str(ckpt), "--input", str(text_file), "--output", str(out_file)], out_file, capsys)
    assert str(out_file) in err and "--force" in err
    cases += 1
    # prepare scripts refuse an existing output folder before doing any work
    for script, argv in (("prepare_sentiment.py", ["--out", str(tmp_path / "s"), "--only", "zh"]),
                         ("prepare_ner.py", ["--out", str(tmp_path / "ner")])):
        target = tmp_path / ("s/zh" if "sentiment" in script else "ner")
        target.mkdir(parents=True)
        (target / "train.tsv").write_text("kept\n")
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *argv], capture_output=True, text=True)
        assert proc.returncode != 0 and "--force" in proc.stderr and "Traceback" not in proc.stderr
        assert (target / "train.tsv").read_text() == "kept\n"
        cases += 1
    record("no overwrite without --force", cases,
           "train (checkpoint or other files in --out), export-hf, import-hf, embed --output, prepare_sentiment, "
           "prepare_ner: exit 2 with one line, target byte-identical")


def test_force_replaces(run, tmp_path, capsys):
    data = run.parent / "text.txt"
    stray = tmp_path / "again"
    assert main(["train", "--data", str(data), "--tokenizer", "char", "--out", str(stray), "--steps", "2",
                 "--eval-interval", "2", *TINY]) == 0
    assert main(["train", "--data", str(data), "--tokenizer", "char", "--out", str(stray), "--steps", "3",
                 "--eval-interval", "3", "--log-interval", "1", "--force", *TINY]) == 0
    rows = (stray / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows if '"loss"' in r] == [1, 2, 3]  # a fresh log, not appended to the old one
    out_file = tmp_path / "emb.jsonl"
    out_file.write_text("old\n")
    text_file = tmp_path / "lines.txt"
    text_file.write_text("To be\nor not\n")
    assert main(["embed", str(run / "checkpoint"), "--input", str(text_file), "--output", str(out_file),
                 "--force"]) == 0
    assert len(out_file.read_text().splitlines()) == 2


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary left behind


def test_refuse_overwrite_rules(tmp_path):
    refuse_overwrite(tmp_path / "new", force=False)  # absent: fine
    (tmp_path / "empty").mkdir()
    refuse_overwrite(tmp_path / "empty", force=False)  # an empty folder holds nothing to lose
    (tmp_path / "f").write_text("x")
    with pytest.raises(OverwriteError, match="--force"):
        refuse_overwrite(tmp_path / "f", force=False)
    refuse_overwrite(tmp_path / "f", force=True)
