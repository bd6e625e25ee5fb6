"""`tfamily viz embeddings`: a labelled TSV embedded as `tfamily embed` embeds it, in 2-D (PCA or
t-SNE), coloured by label, as a PNG and a self-contained HTML page with each point's text."""

from __future__ import annotations

import pytest
import torch
from picture_checks import check_page, check_png

from tfamily.checkpoint import save_checkpoint
from tfamily.cli import main
from tfamily.evaluation.embeddings import embed_texts
from tfamily.inspect.embeddings import pca_2d, sample
from tfamily.interop import load_any
from tfamily.models import build_model
from tfamily.presets import get_preset
from tfamily.tokenizers import Tokenizer

ANIMALS = ["the cat sat on the mat", "a dog slept by the door", "the cat chased a mouse", "dogs bark at night",
           "a small cat purred", "the old dog ran home"]
FOOD = ["we cooked hot soup", "the bread was fresh", "soup and bread for lunch", "she baked a cake",
        "the cake was sweet", "hot tea with bread"]
ROWS = [("animal", t) for t in ANIMALS] + [("food", t) for t in FOOD] + [("mixed <b>&", "the cat ate the cake")]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny BERT checkpoint (random weights) with a WordPiece tokenizer, and a labelled TSV."""
    root = tmp_path_factory.mktemp("emb")
    tok = Tokenizer.train("wordpiece", [t for _, t in ROWS] * 20, vocab_size=90)
    cfg = get_preset("bert-tiny").config(vocab_size=tok.vocab_size, d_model=32, n_head=2, d_ff=64, n_layer=1)
    torch.manual_seed(0)
    save_checkpoint(root / "run" / "checkpoint", build_model(cfg).eval(), cfg, tok.to_str())
    tsv = root / "labelled.tsv"
    tsv.write_text("".join(f"{label}\t{text}\n" for label, text in ROWS), encoding="utf-8")
    return root / "run" / "checkpoint", tsv


def test_pca_map_of_a_labelled_tsv(bert, tmp_path, capsys):
    ckpt, tsv = bert
    out = tmp_path / "out"
    assert main(["viz", "embeddings", str(ckpt), "--data", str(tsv), "--out", str(out)]) == 0
    check_png(out / "embeddings.png")
    data = check_page(out / "embeddings.html")["embeddings"]
    assert data["names"] == ["animal", "food", "mixed <b>&"] and data["counts"] == [6, 6, 1]
    assert [data["names"][i] for i in data["labels"]] == [label for label, _ in ROWS]
    assert data["texts"] == [text for _, text in ROWS] and len(set(data["colors"])) == 3
    # the points are the PCA of exactly what `tfamily embed` computes for these texts
    model, tok = load_any(ckpt)
    vectors = embed_texts(model, tok, [text for _, text in ROWS])
    want, shares = pca_2d(vectors)
    torch.testing.assert_close(torch.tensor(data["points"]), want, atol=1e-3, rtol=0)
    assert 0 < shares[1] <= shares[0] <= 1
    printed = capsys.readouterr().out
    assert "13 texts, 3 labels" in printed and "PCA: axis 1 holds" in printed and str(out / "embeddings.png") in printed
    page = (out / "embeddings.html").read_text(encoding="utf-8")
    assert "labelled.tsv through run" in page and "<b>&" not in page.split("<script")[0]  # labels escaped


def test_tsne_and_a_limited_sample(bert, tmp_path):
    ckpt, tsv = bert
    out = tmp_path / "tsne"
    assert main(["viz", "embeddings", str(ckpt), "--data", str(tsv), "--out", str(out), "--method", "tsne",
                 "--limit", "8", "--seed", "3"]) == 0
    check_png(out / "embeddings.png")
    data = check_page(out / "embeddings.html")["embeddings"]
    chosen = sample(len(ROWS), 8, 3)
    assert data["texts"] == [ROWS[i][1] for i in chosen] and len(data["points"]) == 8
    assert data["method"] == "tsne" and all(len(p) == 2 for p in data["points"])
    assert sample(5, None) == list(range(5)) and chosen == sorted(chosen) and len(set(chosen)) == 8


def test_errors_are_one_line(bert, tmp_path, capsys):
    ckpt, tsv = bert
    bad = tmp_path / "bad.tsv"
    bad.write_text("animal\tthe cat\nno tab here\n", encoding="utf-8")
    assert main(["viz", "embeddings", str(ckpt), "--data", str(bad), "--out", str(tmp_path)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["viz", "embeddings", str(ckpt), "--data", str(tmp_path / "none.tsv"), "--out", str(tmp_path)]) == 2
    assert main(["viz", "embeddings", str(tmp_path / "nope"), "--data", str(tsv), "--out", str(tmp_path)]) == 2
    assert main(["viz", "embeddings", str(ckpt), "--data", str(tsv), "--limit", "1", "--out", str(tmp_path)]) == 2
    one = tmp_path / "one.tsv"
    one.write_text("a\tthe cat\nb\tthe dog\n", encoding="utf-8")
    assert main(["viz", "embeddings", str(ckpt), "--data", str(one), "--method", "tsne", "--out", str(tmp_path)]) == 2
    assert "at least 4 texts" in capsys.readouterr().err


def test_the_page_draws_and_shows_text_under_the_pointer(bert, tmp_path):
    """The page's script in a real browser: one circle per text, each titled with its label and text."""
    import shutil
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium is tested in tests/server/test_playground.py")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    ckpt, tsv = bert
    out = tmp_path / "page"
    assert main(["viz", "embeddings", str(ckpt), "--data", str(tsv), "--out", str(out)]) == 0
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=ChromeService(shutil.which("chromedriver")), options=options)
    try:
        driver.get((out / "embeddings.html").as_uri())
        titles = driver.execute_script("return [...document.querySelectorAll('#scatter circle')]"
                                       ".map((c) => c.querySelector('title').textContent);")
        assert titles == [f"{label}: {text}" for label, text in ROWS]
        driver.execute_script("document.querySelector('#legend span').click();")
        hidden = driver.execute_script("return [...document.querySelectorAll('#scatter circle')]"
                                       ".filter((c) => c.style.display === 'none').length;")
        assert hidden == len(ANIMALS)
    finally:
        driver.quit()
