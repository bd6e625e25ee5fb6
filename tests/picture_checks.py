"""Checks shared by the tests of the pictures tfamily draws (viz attention, masks, embeddings)."""

import json
import re


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def check_page(path) -> dict:
    """Self-contained (no outside script, style, image or link); returns its data, which must parse."""
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page
    assert not re.search(r"<script[^>]*\ssrc=|<link\b|<img\b|https?://", page)
    return json.loads(re.search(r"<script type='application/json' id='data'>(.*?)</script>", page, re.S).group(1))
