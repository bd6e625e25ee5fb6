"""Blank infilling with a GLM: the seeds' digits example end to end, per-token probabilities,
and clear errors for bad input."""

import math
import time

import numpy as np
import pytest
import torch

from tfamily.checkpoint import save_checkpoint
from tfamily.cli import main
from tfamily.generation import SamplingParams
from tfamily.generation.infill import infill, parse
from tfamily.models import build_model
from tfamily.objectives.glm import GLMObjective
from tfamily.presets import PRESETS
from tfamily.tokenizers import Tokenizer
from tfamily.tokenizers.special import GLM_SPECIAL_TOKENS

# Synthetic digit sequences: six digits counting up or down from any digit, mod 10
# ("123456", "890123", "543210", ...). Two adjacent known digits fix the whole sequence.
SEQUENCES = ["".join(str((start + i * step) % 10) for i in range(6)) for start in range(10) for step in (1, -1)]
# Held out: these blank patterns (0-based digit positions, each digit its own blank) never
# appear in training, for any sequence. (2, 4, 5) is the seeds' "123456" with 3, 5, 6 blanked.
HELD_OUT = [(2, 4, 5), (0, 1, 5), (0, 3, 5), (1, 4, 5)]
GREEDY = SamplingParams(max_new_tokens=4, temperature=0)


def blanked(seq: str, blanks) -> str:
    return "".join("[MASK]" if i in blanks else c for i, c in enumerate(seq))


def digit_tokenizer() -> Tokenizer:
    return Tokenizer.train("char", ["0123456789 "], special_tokens=GLM_SPECIAL_TOKENS)


def tiny_glm(tok, **changes):
    fields = dict(vocab_size=tok.vocab_size, d_model=64, n_layer=2, n_head=4, d_ff=256, max_seq_len=32,
                  decoder_start_token_id=tok.special_ids["span_start"], pad_token_id=tok.pad_id)
    return build_model(PRESETS["glm-tiny"].config(**{**fields, **changes}))


def train_digits(tok, steps=700, batch=64, seed=0, lr=3e-3):
    """A tiny GLM trained by the real GLMObjective on the sequences, never on a held-out case."""
    objective = GLMObjective.from_tokenizer(tok, mask_ratio=0.5, mean_span=1.5)
    held = {tuple(parse(tok, blanked(s, b))[0]) for s in SEQUENCES for b in HELD_OUT}  # their Part A ids
    ids = np.array([tok.encode(s) for s in SEQUENCES])  # (20, 6)
    torch.manual_seed(seed)
    model = tiny_glm(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    rng = np.random.default_rng(seed)
    dropped = 0
    for step in range(steps):
        rows = [objective.make_row(ids[r], int(s))
                for r, s in zip(rng.integers(0, len(ids), batch), rng.integers(0, 2**62, batch))]
        kept = [r for r in rows if tuple(r.ids[:r.part_a_len]) not in held]
        dropped += len(rows) - len(kept)
        b = objective.collate(kept)
        for group in opt.param_groups:  # warm-up, then cosine to zero
            group["lr"] = lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = objective.loss(model(**b.inputs), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), dropped


@pytest.fixture(scope="module")
def digits():
    """The trained digits model, on one thread (the budget: seconds on one CPU core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        tok = digit_tokenizer()
        model, dropped = train_digits(tok)
        yield model, tok, dropped, time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def test_the_seeds_example_is_filled_digit_by_digit(digits):
    model, tok, _, _ = digits
    r = infill(model, tok, "12[MASK]4[MASK][MASK]", GREEDY)
    assert r.text == "123456"
    assert [b.text for b in r.blanks] == ["3", "5", "6"]
    end = tok.special_ids["span_end"]
    for b in r.blanks:  # one digit, then [E] ends the span
        assert [s.token for s in b.steps][1:] == [end] and b.finish_reason == "stop"
        assert b.steps[0].prob > 0.5


def test_held_out_cases_are_filled_correctly(digits):
    model, tok, dropped, seconds = digits
    assert dropped > 0  # the held-out patterns do come up and were kept out of training
    cases = [(s, blanked(s, b)) for s in SEQUENCES for b in HELD_OUT]
    right = sum(infill(model, tok, text, GREEDY).text == seq for seq, text in cases)
    print(f"digits: {right}/{len(cases)} held-out cases exact after {seconds:.1f}s of training")
    assert right / len(cases) >= 0.99


def test_step_probabilities_are_the_models(digits):
    model, tok, _, _ = digits
    r = infill(model, tok, "9[MASK]765[MASK]", SamplingParams(max_new_tokens=4, temperature=0, top_alternatives=3))
    for b in r.blanks:
        for s in b.steps:
            assert 0 < s.prob <= 1
            probs = [p for _, p in s.alternatives]
            assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
            assert s.alternatives[0][0] == s.token and s.alternatives[0][1] == pytest.approx(s.prob)  # greedy


def test_sampling_is_seeded(digits):
    model, tok, _, _ = digits
    params = lambda seed: SamplingParams(max_new_tokens=4, temperature=3.0, seed=seed)  # noqa: E731
    runs = [[b.tokens for b in infill(model, tok, "[MASK]5[MASK]", params(s)).blanks] for s in (1, 1, 2, 3, 4)]
    assert runs[0] == runs[1]
    assert any(r != runs[0] for r in runs[2:])


def test_cli_infill_prints_the_filled_text(digits, tmp_path, capsys):
    model, tok, _, _ = digits
    save_checkpoint(tmp_path / "ck", model, model.cfg, tok.to_str())
    assert main(["infill", str(tmp_path / "ck"), "12[MASK]4[MASK][MASK]", "--show-probs"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "123456"
    assert "blank 1" in out and "prob" in out
    assert main(["infill", str(tmp_path / "ck"), "12[MASK]4[MASK][MASK]", "--json"]) == 0
    import json
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["text"] == "123456" and [b["text"] for b in record["blanks"]] == ["3", "5", "6"]
    assert all(0 < t["prob"] <= 1 for b in record["blanks"] for t in b["tokens"])


def test_cli_infill_errors_name_the_problem(digits, tmp_path, capsys):
    model, tok, _, _ = digits
    save_checkpoint(tmp_path / "ck", model, model.cfg, tok.to_str())
    assert main(["infill", str(tmp_path / "ck"), "123456"]) == 2
    assert "no blank" in capsys.readouterr().err


def test_gmask_generates_a_suffix(digits):
    model, tok, _, _ = digits
    r = infill(model, tok, "12[gMASK]", SamplingParams(max_new_tokens=3, temperature=0))
    assert len(r.blanks) == 1 and r.blanks[0].kind == "[gMASK]" and len(r.blanks[0].steps) <= 3
    assert r.text == "12" + r.blanks[0].text


# ----------------------------------------------------------------------------- bad input
def test_text_without_a_blank_is_an_error():
    tok = digit_tokenizer()
    with pytest.raises(ValueError, match="no blank"):
        infill(tiny_glm(tok).eval(), tok, "123456")


def test_text_too_long_for_the_context_is_an_error():
    tok = digit_tokenizer()
    with pytest.raises(ValueError, match="max_seq_len=32"):
        infill(tiny_glm(tok).eval(), tok, "1234567890" * 3 + "[MASK]")


def test_a_model_that_is_not_a_glm_is_an_error():
    tok = digit_tokenizer()
    gpt = build_model(PRESETS["gpt-tiny"].config(vocab_size=tok.vocab_size, d_model=32, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="arch='glm'"):
        infill(gpt, tok, "1[MASK]3")


def test_a_tokenizer_without_span_tokens_is_an_error():
    tok = Tokenizer.train("char", ["0123456789"])
    with pytest.raises(ValueError, match="span_start"):
        parse(tok, "1[MASK]3")


def test_parse_puts_each_blank_at_its_part_a_position():
    tok = digit_tokenizer()
    part_a, blanks, pieces = parse(tok, "12[MASK]4[MASK][gMASK]")
    mask, gmask = tok.special_ids["mask"], tok.special_ids["gmask"]
    assert part_a == tok.encode("12") + [mask] + tok.encode("4") + [mask, gmask]
    assert [(b.kind, b.position) for b in blanks] == [("[MASK]", 2), ("[MASK]", 4), ("[gMASK]", 5)]
    assert pieces == ["12", "4", "", ""]


def test_later_blanks_see_earlier_fillings_through_the_cache():
    """Filling with a cache equals recomputing Part A + Part B from scratch for every token."""
    tok = digit_tokenizer()
    torch.manual_seed(0)
    model = tiny_glm(tok).eval()
    r = infill(model, tok, "1[MASK]3[MASK]", SamplingParams(max_new_tokens=3, temperature=0))
    part_a, blanks, _ = parse(tok, "1[MASK]3[MASK]")
    start = tok.special_ids["span_start"]
    ids, block, inner = list(part_a), list(range(len(part_a))), [0] * len(part_a)
    for blank in r.blanks:
        ids.append(start), block.append(blank.position), inner.append(1)
        for k, step in enumerate(blank.steps):
            logits = model(torch.tensor([ids]), positions=torch.tensor([[block, inner]]),
                           part_a_len=torch.tensor([len(part_a)])).logits[0, -1]
            assert logits.argmax().item() == step.token
            assert logits.softmax(-1)[step.token].item() == pytest.approx(step.prob, abs=1e-5)
            if k < len(blank.tokens):
                ids.append(step.token), block.append(blank.position), inner.append(k + 2)
