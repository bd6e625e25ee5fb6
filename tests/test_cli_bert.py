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


SENTIMENT = [("pos", "a wonderful warm film"), ("neg", "a terrible dull film"), ("pos", "great acting, a moving story"),
             ("neg", "boring and far too long"), ("pos", "I loved every minute"), ("neg", "I hated every minute")]


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sentiment")
    for split in ("train", "val"):
        (folder / f"{split}.tsv").write_text("".join(f"{y}\t{x}\n" for y, x in SENTIMENT), encoding="utf-8")
    return folder


def test_finetune_a_classifier_then_eval_it(pretrained, sentiment, tmp_path, capsys):
    out = tmp_path / "cls"
    assert main(["finetune", str(pretrained / "checkpoint"), "--train", str(sentiment / "train.tsv"),
                 "--val", str(sentiment / "val.tsv"), "--out", str(out), "--epochs", "2", "--batch-size", "2",
                 "--lr", "1e-3", "--no-progress", "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["neg", "pos"] and results["val"]["n"] == 6
    cfg = json.loads((out / "checkpoint" / "config.json").read_text())
    assert cfg["head"] == "sequence_classification" and cfg["extra"]["labels"] == ["neg", "pos"]
    assert [e["epoch"] for e in results["val_by_epoch"]] == [1, 2]
    assert results["val"]["accuracy"] == max(e["score"] for e in results["val_by_epoch"])
    capsys.readouterr()
    assert main(["eval", results["model"], "--data", str(sentiment / "val.tsv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == results["val"]["accuracy"]


def test_finetune_with_the_token_table_frozen_and_batches_grouped_by_length(pretrained, sentiment, tmp_path, capsys):
    out = tmp_path / "frozen"
    assert main(["finetune", str(pretrained / "checkpoint"), "--train", str(sentiment / "train.tsv"),
                 "--val", str(sentiment / "val.tsv"), "--out", str(out), "--epochs", "2", "--batch-size", "2",
                 "--lr", "1e-2", "--no-progress", "--threads", "1", "--freeze-token-embeddings",
                 "--group-by-length"]) == 0
    assert "token embeddings frozen" in capsys.readouterr().err
    from safetensors.torch import load_file
    before = load_file(str(pretrained / "checkpoint" / "model.safetensors"))
    after = load_file(str(out / "checkpoint" / "model.safetensors"))
    table = "backbone.tok_emb.weight"
    assert after[table].equal(before[table])
    assert any(not v.equal(after[k]) for k, v in before.items() if k.startswith("backbone.") and k != table)
    moments = load_file(str(out / "checkpoint" / "trainer.safetensors"))
    n_moments = sum(v.numel() for k, v in moments.items() if k.endswith(".exp_avg"))
    assert n_moments == sum(v.numel() for k, v in after.items() if k != table)  # every weight but the table's


class FakeTrainer:
    """Just what fit_keeping_best_epoch drives: steps, a budget, a model whose weight records
    the step it was trained to."""

    def __init__(self, steps, budget_epochs=None):
        import torch
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.cfg = type("Cfg", (), {"steps": steps})()
        self.step, self.elapsed, self.budget_epochs, self.fits = 0, 0.0, budget_epochs, 0

    def out_of_time(self):
        return self.budget_epochs is not None and self.fits >= self.budget_epochs

    def fit(self, until):
        self.fits += 1
        self.step = until
        with __import__("torch").no_grad():
            self.model.weight.fill_(until)
        return {"interrupted": False}


@pytest.mark.parametrize("scores, best_epoch, kept", [([0.5, 0.8, 0.6], 2, True), ([0.5, 0.6, 0.8], 3, False)])
def test_fine_tuning_keeps_the_epoch_that_scores_best_on_val(scores, best_epoch, kept):
    from types import SimpleNamespace

    from tfamily.training.finetune import fit_keeping_best_epoch
    trainer = FakeTrainer(steps=30)
    queue = iter(scores)
    best = fit_keeping_best_epoch(trainer, 10, lambda: SimpleNamespace(accuracy=next(queue)))
    assert best.epoch == best_epoch and [h["step"] for h in best.history] == [10, 20, 30]
    assert best.scores.accuracy == max(scores)  # kept whole: the final val figure is not scored again
    assert (best.state is not None) == kept  # only an earlier epoch needs its weights kept apart
    if kept:
        assert best.state["weight"].item() == 10 * best_epoch


def test_fine_tuning_stops_at_the_time_budget_between_epochs():
    from types import SimpleNamespace

    from tfamily.training.finetune import fit_keeping_best_epoch
    trainer = FakeTrainer(steps=30, budget_epochs=2)
    best = fit_keeping_best_epoch(trainer, 10, lambda: SimpleNamespace(f1=0.5))
    assert [h["epoch"] for h in best.history] == [1, 2] and best.epoch == 1 and best.state is not None


def test_finetune_a_tagger(pretrained, tmp_path):
    conll = tmp_path / "ner.conll"
    conll.write_text("The\tO\ncat\tB-ANIMAL\nsat\tO\n\nA\tO\ndog\tB-ANIMAL\nslept\tO\n\n", encoding="utf-8")
    out = tmp_path / "tag"
    assert main(["finetune", str(pretrained / "checkpoint"), "--task", "tag", "--train", str(conll), "--val", str(conll),
                 "--out", str(out), "--epochs", "1", "--batch-size", "2", "--no-progress", "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["O", "B-ANIMAL"] and 0 <= results["val"]["f1"] <= 1


def test_knn_over_embeddings(pretrained, sentiment, capsys):
    assert main(["knn", str(pretrained / "checkpoint"), "--train", str(sentiment / "train.tsv"),
                 "--test", str(sentiment / "val.tsv"), "--k", "1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy 100.00" in out  # k = 1 on the training texts themselves: each finds itself


def test_knn_chooses_k_on_val_and_scores_test_once(pretrained, sentiment, capsys):
    assert main(["knn", str(pretrained / "checkpoint"), "--train", str(sentiment / "train.tsv"),
                 "--val", str(sentiment / "val.tsv"), "--test", str(sentiment / "val.tsv"), "--k", "5", "1", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("val, ", "test, "))]
    assert [line.split(":")[0] for line in lines[:3]] == ["val, k=5", "val, k=1", "val, k=3"] and len(lines) == 4
    assert "accuracy 100.00" in lines[1]  # k = 1 finds each text itself, so it is chosen
    assert lines[3].startswith("test, kNN (k=1)") and "accuracy 100.00" in lines[3]
    assert main(["knn", str(pretrained / "checkpoint"), "--train", str(sentiment / "train.tsv"),
                 "--val", str(sentiment / "val.tsv"), "--k", "1"]) == 0
    assert "test" not in capsys.readouterr().out  # val alone: no test figure


def test_finetune_question_answering(pretrained, tmp_path, capsys):
    rows = [{"question": "Who sat?", "context": "The cat sat on the mat.", "answers": ["The cat"]},
            {"question": "Where did the dog sleep?", "context": "A dog slept by the door.", "answer": "by the door"},
            {"question": "What was hot?", "context": "We cooked soup. The soup was hot.", "answers": ["The soup"],
             "answer_start": 16}]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "qa"
    assert main(["finetune", str(pretrained / "checkpoint"), "--task", "qa", "--train", str(data), "--val", str(data),
                 "--out", str(out), "--epochs", "1", "--batch-size", "2", "--no-progress", "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["val"]["n"] == 3 and 0 <= results["val"]["exact_match"] <= results["val"]["f1"] <= 1
    capsys.readouterr()
    assert main(["eval", str(out / "checkpoint"), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == results["val"]["f1"]
