"""Translation through the CLI: train an encoder-decoder on a TSV, translate, score with BLEU."""

import json

import pytest

from tfamily.cli import main

WORDS = {"a": "ein", "man": "Mann", "dog": "Hund", "runs": "läuft", "sleeps": "schläft", "big": "großer",
         "small": "kleiner", "the": "der"}


def sentence_pairs():
    pairs = []
    for det in ("a", "the"):
        for adj in ("big", "small", ""):
            for noun in ("man", "dog"):
                for verb in ("runs", "sleeps"):
                    en = " ".join(w for w in (det, adj, noun, verb) if w) + "."
                    de = " ".join(WORDS[w] for w in (det, adj, noun, verb) if w) + "."
                    pairs.append((en, de))
    return pairs


TINY = ["--preset", "transformer-tiny", "--set", "d_model=32", "--set", "n_head=2", "--set", "d_ff=64",
        "--set", "n_layer=1", "--set", "n_encoder_layer=1", "--batch-tokens", "256", "--eval-batches", "2",
        "--no-progress", "--threads", "1", "--vocab-size", "300"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mt")
    tsv = folder / "pairs.tsv"
    tsv.write_text("".join(f"{en}\t{de}\n" for en, de in sentence_pairs() * 5), encoding="utf-8")
    out = folder / "run"
    assert main(["train", "--pairs", str(tsv), "--out", str(out), "--steps", "6", "--eval-interval", "3",
                 "--label-smoothing", "0.1", *TINY]) == 0
    return out


def test_train_writes_pairs_and_a_seq2seq_checkpoint(run):
    assert (run / "data" / "train.pairs.safetensors").is_file() and (run / "data" / "val.pairs.safetensors").is_file()
    cfg = json.loads((run / "checkpoint" / "config.json").read_text())
    assert cfg["arch"] == "encoder-decoder" and cfg["decoder_start_token_id"] is not None
    state = json.loads((run / "checkpoint" / "trainer.json").read_text())
    assert state["step"] == 6 and state["train_config"]["label_smoothing"] == 0.1


def test_resume_continues(run):
    assert main(["train", "--out", str(run), "--resume", "--steps", "8", "--no-progress"]) == 0
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 8


def test_translate_sentences_file_and_probs(run, tmp_path, capsys):
    ck = str(run / "checkpoint")
    assert main(["translate", ck, "a man runs.", "the dog sleeps.", "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    src = tmp_path / "in.txt"
    src.write_text("a man runs.\nthe dog sleeps.\n", encoding="utf-8")
    assert main(["translate", ck, "--input", str(src), "--output", str(tmp_path / "out.txt"), "--beam", "2"]) == 0
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == lines  # batched = one by one
    assert main(["translate", ck, "a dog runs.", "--beam", "1", "--show-probs"]) == 0
    assert "top alternatives" in capsys.readouterr().out


def test_eval_prints_bleu_with_its_signature(run, tmp_path, capsys):
    src, ref = tmp_path / "s.en", tmp_path / "r.de"
    pairs = sentence_pairs()[:10]
    src.write_text("".join(en + "\n" for en, _ in pairs), encoding="utf-8")
    ref.write_text("".join(de + "\n" for _, de in pairs), encoding="utf-8")
    assert main(["eval", str(run / "checkpoint"), "--src", str(src), "--ref", str(ref), "--beam", "2"]) == 0
    out = capsys.readouterr().out
    assert "BLEU" in out and "chrF" in out and "nrefs:1|case:mixed|eff:no|tok:13a" in out
    assert main(["eval", str(run / "checkpoint"), "--src", str(src), "--ref", str(ref), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["bleu"] <= 100 and result["sentences"] == 10


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "transformer-tiny"], "--src and --tgt"),
    (["train", "--preset", "transformer-tiny", "--src", "x.en"], "--src and --tgt"),
    (["train", "--preset", "gpt-tiny", "--src", "a", "--tgt", "b"], "encoder-decoder preset"),
])
def test_bad_translation_input_is_one_clear_line(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_translate_refuses_a_language_model(capsys, tmp_path):
    from tfamily.checkpoint import save_checkpoint
    from tfamily.models import build_model
    from tfamily.presets import get_preset
    from tfamily.tokenizers import Tokenizer
    cfg = get_preset("gpt-tiny").config(vocab_size=40, n_layer=1, d_model=32, n_head=2)
    tok = Tokenizer.train("char", "abc def")
    save_checkpoint(tmp_path / "lm", build_model(cfg), cfg, tok.to_str())
    assert main(["translate", str(tmp_path / "lm"), "hello"]) == 2
    assert "encoder-decoder" in capsys.readouterr().err


def test_t5_with_a_task_prefix(tmp_path, capsys):
    """A T5 model trained on pairs with a text-to-text prefix keeps it, and translate adds it."""
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{en}\t{de}\n" for en, de in sentence_pairs() * 3), encoding="utf-8")
    out = tmp_path / "t5"
    tiny = [a if a != "transformer-tiny" else "t5-tiny" for a in TINY]
    assert main(["train", "--pairs", str(tsv), "--out", str(out), "--steps", "3", "--eval-interval", "3",
                 "--source-prefix", "translate English to German: ", *tiny]) == 0
    cfg = json.loads((out / "checkpoint" / "config.json").read_text())
    assert cfg["extra"]["source_prefix"] == "translate English to German: " and cfg["position"] == "t5_relative"
    assert main(["translate", str(out / "checkpoint"), "a man runs.", "--beam", "2"]) == 0


@pytest.mark.parametrize("preset, objective", [("t5-tiny", "span_corruption"), ("bart-tiny", "denoising")])
def test_denoising_pretraining_on_text(preset, objective, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat. The dog slept! Did the bird sing? " * 200, encoding="utf-8")
    out = tmp_path / objective
    args = ["train", "--preset", preset, "--data", str(text), "--objective", objective, "--out", str(out),
            "--steps", "4", "--eval-interval", "2", "--seq-len", "32", "--batch-size", "4", "--eval-batches", "1",
            "--vocab-size", "300", "--set", "d_model=32", "--set", "n_head=2", "--set", "d_ff=64",
            "--no-progress", "--threads", "1"]
    assert main(args) == 0
    state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert state["data_options"]["objective"] == objective
    tok = json.loads((out / "checkpoint" / "tokenizer.json").read_text())
    specials = {t["content"] for t in tok["added_tokens"]}
    assert ("<extra_id_0>" in specials) == (objective == "span_corruption") and "<mask>" in specials
    assert main(["train", "--out", str(out), "--resume", "--steps", "5", "--no-progress"]) == 0
