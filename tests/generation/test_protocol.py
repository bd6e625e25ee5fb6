"""The decoding protocol: one State per registry kind; rows that finish leave the batch without
changing the others; rows join a CausalState at any time; a GLM batch fills different numbers
of blanks per row; one filter chain; one stop-string matcher."""

import pytest
import torch

from tfamily.generation import SamplingParams, decode, filters, pick
from tfamily.generation.slots import SlotCache
from tfamily.generation.states import STATES, CausalState, Prompt, start
from tfamily.generation.step import Step
from tfamily.generation.stops import StopStrings, TextStream
from tfamily.models import build_model
from tfamily.models.family import FAMILIES
from tfamily.presets import get_preset, tiny_version
from tfamily.tokenizers import Tokenizer

FAMILY_PRESETS = ["gpt-tiny", "t5-tiny", "glm-tiny", "txl-tiny"]


def tiny(name):
    torch.manual_seed(0)
    cfg = tiny_version(get_preset(name).config())
    if cfg.decoder_start_token_id is None and name.startswith("glm"):
        cfg = cfg.replace(decoder_start_token_id=1)
    return build_model(cfg).eval()


def greedy(model, prompts, n=6, **kw):
    out = {}
    for steps in decode(model, prompts, SamplingParams(max_new_tokens=n, temperature=0, top_alternatives=2, **kw)):
        for s in steps:
            out.setdefault(s.seq, []).append(s)
    return out


def test_states_are_keyed_by_the_registrys_decoding_kinds():
    assert set(STATES) == {f.decoding for f in FAMILIES.values() if f.decoding is not None}
    assert all(cls.kind == kind for kind, cls in STATES.items())


@pytest.mark.parametrize("name", FAMILY_PRESETS)
def test_rows_that_finish_leave_without_changing_the_others(name):
    model = tiny(name)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13, 14]]
    free = greedy(model, prompts)
    stop = free[1][1].token  # row 1 stops at its second token; the others run on in a smaller batch
    batch = greedy(model, prompts, stop_token_ids=(stop,))
    assert len(batch[1]) <= 2 and batch[1][-1].finish_reason == "stop"
    for seq in (0, 2):
        alone = greedy(model, [prompts[seq]], stop_token_ids=(stop,))[0]
        assert [s.token for s in batch[seq]] == [s.token for s in alone]
        assert [s.logprob for s in batch[seq]] == pytest.approx([s.logprob for s in alone], abs=1e-5)


def test_rows_join_a_causal_state_at_any_time():
    """Continuous batching's State: rows added while others run, at their own positions, get
    what each would get alone; a dropped row frees its slot for the next."""
    model = tiny("llama-tiny")
    a, b, c = [5, 6, 7, 8, 9], [10, 11], [12, 13, 14]
    state = CausalState(model, [], [], cache=SlotCache(model, 2, 40))
    state.add([a], [8])
    tokens = {0: [], 1: []}
    for t in range(6):
        if t == 2:
            state.add([b], [8])
        chosen = state.logits.argmax(-1)
        for row, tok in zip(state.rows, chosen.tolist()):
            tokens[row].append(tok)
        if t == 4:  # the first row leaves, a new one takes its slot
            state.reorder([1])
            chosen = chosen[1:]
            state.add([c], [8])
            tokens[2] = []
            chosen = torch.cat([chosen, state.logits[-1:].argmax(-1)])
            tokens[2].append(chosen[-1].item())
        state.append(chosen)
    for row, prompt in ((0, a), (1, b), (2, c)):
        want = [s.token for s in greedy(model, [prompt], n=len(tokens[row]))[0]]
        assert tokens[row] == want


def test_a_glm_batch_fills_different_blanks_per_row():
    """Rows with one, two and three blanks decoded together (a row starting its next blank feeds
    two tokens where the others feed one) get what each gets alone."""
    model = tiny("glm-tiny")
    prompts = [Prompt([5, 3, 6, 7], (1,)), Prompt([3, 8, 3, 9, 3], (0, 2, 4)), Prompt([10, 11, 3, 12, 3], (2, 4))]
    batch = greedy(model, prompts, n=3, stop_token_ids=(4,))
    for seq, p in enumerate(prompts):
        alone = greedy(model, [p], n=3, stop_token_ids=(4,))[0]
        assert [(s.token, s.part) for s in batch[seq]] == [(s.token, s.part) for s in alone]
        assert [s.logprob for s in batch[seq]] == pytest.approx([s.logprob for s in alone], abs=1e-5)
    assert {s.part for s in batch[1]} == {0, 1, 2}  # every blank filled, in order


def test_one_filter_chain_for_sampling_and_for_the_distribution():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    kept = torch.isfinite(filters.chain(logits, 1.0, k=2))
    assert kept.tolist() == [[False, True, True, False]]
    for t, p in ((0.0, None), (1e-30, None), (1.0, 1e-30)):  # greedy and the limits fp32 cannot compute with
        assert torch.isfinite(filters.chain(logits, t, p=p)).sum() == 1
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    params = SamplingParams(temperature=0.7, top_k=3, top_p=0.9)
    filtered = filters.chain(logits, 0.7, 3, 0.9)
    assert pick(logits, params, None, g1).item() == torch.multinomial(filtered.softmax(-1), 1, generator=g2).item()
    assert filters.limits(1.0, 0, 1.0) == (1.0, None, None) and filters.limits(1e-9, 5, 1e-9) == (0.0, 1, None)


def test_one_stop_string_matcher():
    stop = StopStrings(["\n\nUser:", "END"])
    assert stop.find("hi END and\n\nUser:") == 3 and stop.cut("hi END") == "hi " and stop.find("nothing") is None
    assert stop.may_begin("hello\n\nUs") and not stop.may_begin("hello")
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings([""])
    tok = Tokenizer.train("char", ["abcdefgh END\n"])
    stream = TextStream(tok, ["END"], stop_ids=())
    released = []
    for ch in "abc EN":
        text, steps, stopped = stream.push(Step(token=tok.encode(ch)[0], logprob=0.0))
        released.append(text)
        assert not stopped
    assert "".join(released) == "abc "  # "EN" may begin "END": held back
    text, steps, stopped = stream.push(Step(token=tok.encode("D")[0], logprob=0.0))
    assert stopped and text == "" and stream.text == "abc "


def test_start_refuses_a_family_that_does_not_generate():
    encoder = build_model(tiny_version(get_preset("bert-tiny").config()))
    with pytest.raises(ValueError, match="does not generate"):
        start(encoder, [[1, 2]], 3)
