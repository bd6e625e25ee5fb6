"""`tfamily viz attention` and `tfamily viz masks`: a PNG and a self-contained HTML page per run,
for every family."""

from __future__ import annotations

import pytest
from picture_checks import check_page, check_png
from server.helpers import preset_checkpoint

from tfamily.cli import main
from tfamily.inspect.masks import GALLERY

FAMILIES = ["gpt-tiny", "bert-tiny", "t5-tiny", "bart-tiny", "transformer-tiny", "glm-tiny", "txl-tiny"]
TEXTS = {"glm-tiny": "The quick [MASK] fox", "txl-tiny": "The quick brown fox jumps over the lazy dog. 0123456789"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    return {p: preset_checkpoint(root / p, p) for p in FAMILIES}


@pytest.mark.parametrize("preset", FAMILIES)
def test_viz_attention_writes_png_and_page(preset, checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    text = TEXTS.get(preset, "hello there")
    assert main(["viz", "attention", str(checkpoints[preset]), text, "--out", str(out), "--max-new-tokens", "3"]) == 0
    check_png(out / "attention.png")
    maps = check_page(out / "attention.html")["attention"]
    assert maps and all(m["heads"] and m["rows"] and m["cols"] for m in maps)
    kinds = {m["title"].split(" ", 2)[2] for m in maps}
    if preset in ("t5-tiny", "bart-tiny", "transformer-tiny"):
        assert any("cross-attention" in k for k in kinds)
    if preset == "txl-tiny":
        assert any(m["colRegions"] and m["colRegions"][0][0] == "memory" for m in maps)
    if preset == "glm-tiny":
        assert [r[0] for r in maps[0]["colRegions"]] == ["Part A", "Part B"]
    assert str(out / "attention.png") in capsys.readouterr().out


def test_viz_attention_with_a_target(checkpoints, tmp_path):
    out = tmp_path / "t"
    assert main(["viz", "attention", str(checkpoints["t5-tiny"]), "hello", "--target", "general", "--out", str(out)]) == 0
    maps = check_page(out / "attention.html")["attention"]
    cross = next(m for m in maps if "cross" in m["title"])
    assert cross["rows"][1:] == ["g", "e", "n", "e", "r", "a", "l"]


def test_viz_masks_draws_every_family(tmp_path):
    out = tmp_path / "masks"
    assert main(["viz", "masks", "--out", str(out)]) == 0
    pngs = sorted(out.glob("masks-*.png"))
    assert len(pngs) == 9 and {p.stem.split("-")[1] for p in pngs} >= {g.split("-")[0] for g in GALLERY}
    for png in pngs:
        check_png(png)
    data = check_page(out / "masks.html")["masks"]
    assert len(data) == 9 and all(grids for grids in data)


def test_viz_masks_of_a_checkpoint(checkpoints, tmp_path):
    out = tmp_path / "ck"
    assert main(["viz", "masks", str(checkpoints["glm-tiny"]), "--text", "abcdefgh", "--spans", "2:3", "--out",
                 str(out)]) == 0
    check_png(out / "masks-glm-tiny-blanks.png")
    check_png(out / "masks-glm-tiny-prefix-lm.png")
    page = (out / "masks.html").read_text(encoding="utf-8")
    assert "[(2, 3)]" in page
    assert main(["viz", "masks", "--preset", "bert-tiny", "--out", str(out)]) == 0
    check_png(out / "masks-bert-tiny.png")


def test_viz_errors_are_one_line(checkpoints, tmp_path, capsys):
    assert main(["viz", "attention", str(tmp_path / "missing"), "hi", "--out", str(tmp_path)]) == 2
    assert main(["viz", "attention", str(checkpoints["gpt-tiny"]), "hi", "--target", "x", "--out", str(tmp_path)]) == 2
    assert "--target is for encoder-decoder models" in capsys.readouterr().err
    assert main(["viz", "masks", "--preset", "nope", "--out", str(tmp_path)]) == 2
    assert main(["viz", "masks", "--preset", "glm-tiny", "--spans", "x", "--out", str(tmp_path)]) == 2
    assert main(["viz", "masks", str(checkpoints["gpt-tiny"]), "--preset", "gpt-tiny"]) == 2


def test_a_recurrent_model_is_refused_by_its_family(tmp_path, capsys):
    lstm = preset_checkpoint(tmp_path / "lstm", "lstm-tiny")
    assert main(["viz", "attention", str(lstm), "hello", "--out", str(tmp_path / "v")]) == 2
    assert "family 'rnn'" in capsys.readouterr().err and not (tmp_path / "v" / "attention.png").exists()
