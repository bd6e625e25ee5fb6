"""One suite, every preset (shrunk to a test size with the same wiring)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from tfamily.checkpoint import load_model, save_checkpoint
from tfamily.generation import SamplingParams, decode
from tfamily.models import build_model
from tfamily.nn.linear import PackedLinear, packing_supported
from tfamily.nn.loss import linear_cross_entropy
from tfamily.nn.quant import convert_weights
from tfamily.models.family import family_of
from tfamily.presets import PRESETS, tiny_version

NAMES = sorted(PRESETS)
GENERATIVE = [n for n in NAMES if family_of(PRESETS[n].config()).can("generate")]  # encoders do not generate


def tiny(name, **changes):
    cfg = tiny_version(PRESETS[name].config())
    if family_of(cfg).decoding in ("seq2seq", "glm"):  # glm: [S], which starts the generated span
        changes.setdefault("decoder_start_token_id", 1)
    return cfg.replace(**changes) if changes else cfg


class Runner:
    """Calls any family the same way: ids are the decoder-only model's tokens, or the target
    tokens of an encoder-decoder model (then a fixed random source goes with them, and
    ``attention_mask`` is the target's)."""

    def __init__(self, model):
        self.model, self.cfg = model, model.cfg
        self.decoding = family_of(model.cfg).decoding  # None: does not generate (an encoder)
        self.seq2seq = self.decoding == "seq2seq"
        self.src = torch.randint(0, model.cfg.vocab_size, (1, 5))

    def __call__(self, ids, attention_mask=None, cache=None, **options):
        if self.decoding is None:
            assert cache is None
            return self.model(ids, attention_mask=attention_mask, **options)
        if self.seq2seq:
            return self.model(self.src.expand(ids.shape[0], -1), ids, tgt_mask=attention_mask, cache=cache,
                              **options)
        if self.decoding == "glm" and cache is not None:
            return self.glm_step(ids, cache)
        if self.decoding == "recurrent":  # Transformer-XL: its cache is the recurrence of earlier segments
            return self.model(ids, attention_mask=attention_mask, recurrence=cache, **options)
        return self.model(ids, attention_mask=attention_mask, cache=cache, **options)

    def glm_step(self, ids, cache):
        """GLM generation as decode() runs it: the prompt is Part A (its last token the blank),
        then [S] and the generated tokens form the span, at (blank, 1), (blank, 2), ..."""
        if cache.length == 0:
            self.part_a = ids.shape[1]
            start = torch.full((ids.shape[0], 1), self.cfg.decoder_start_token_id)
            return self.model(torch.cat([ids, start], 1), positions=glm_positions(self.part_a, 1),
                              part_a_len=torch.tensor([self.part_a]), cache=cache)
        inner = cache.length - self.part_a + 1
        return self.model(ids, positions=torch.tensor([[[self.part_a - 1], [inner]]]),
                          part_a_len=torch.tensor([self.part_a]), cache=cache)

    def greedy_uncached(self, prompt, n):
        """(ids, logits) of n greedy steps without a cache; the prompt is the source for seq2seq."""
        if self.seq2seq:
            src, ids = torch.tensor([prompt]), torch.tensor([[self.cfg.decoder_start_token_id]])
            forward = lambda x: self.model(src, x)  # noqa: E731
        elif self.decoding == "glm":  # Part A = the prompt; Part B = [S] + what was generated
            ids = torch.tensor([prompt + [self.cfg.decoder_start_token_id]])
            forward = lambda x: self.model(x, positions=glm_positions(len(prompt), x.shape[1] - len(prompt)),  # noqa: E731
                                           part_a_len=torch.tensor([len(prompt)]))
        else:
            ids, forward = torch.tensor([prompt]), self.model
        start, logits = ids.shape[1], []
        for _ in range(n):
            last = forward(ids).logits[:, -1]
            logits.append(last[0])
            ids = torch.cat([ids, last.argmax(-1, keepdim=True)], 1)
        return ids[0, start:].tolist(), torch.stack(logits)


def glm_positions(n_a, n_b):
    """(1, 2, n_a + n_b) 2-D positions: Part A 0..n_a-1 (inside-span 0), then a span filling
    the last Part A token's blank at inside-span positions 1..n_b."""
    block = list(range(n_a)) + [n_a - 1] * n_b
    return torch.tensor([[block, [0] * n_a + list(range(1, n_b + 1))]])


@pytest.fixture(params=NAMES)
def model(request):
    torch.manual_seed(0)
    return build_model(tiny(request.param)).eval()


@pytest.fixture(params=GENERATIVE)
def generator_model(request):
    torch.manual_seed(0)
    return build_model(tiny(request.param)).eval()


@pytest.fixture
def run(model):
    torch.manual_seed(1)
    return Runner(model)


def test_output_shapes(model, run):
    cfg = model.cfg
    ids = torch.randint(0, cfg.vocab_size, (3, 11))
    out = run(ids)
    assert out.logits.shape == (3, 11, cfg.vocab_size)
    assert out.hidden.shape == (3, 11, cfg.d_model)
    assert torch.isfinite(out.logits).all()


def test_every_parameter_gets_a_gradient(model, run):
    model.train()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    out = run(ids)
    loss = out.logits.float().logsumexp(-1).mean()
    if getattr(out, "nsp_logits", None) is not None:  # BERT's next-sentence head
        loss = loss + out.nsp_logits.float().logsumexp(-1).mean()
    if getattr(out, "backward", None) is not None:  # a bidirectional LM's backward (previous-token) head
        loss = loss + out.backward.logits.float().logsumexp(-1).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_a_deferred_head_gets_the_gradients_of_plain_logits(generator_model):
    """Training through ``defer_head`` (the chunked loss; on a CPU, a tied table's lookups
    hand back sparse rows, ``nn.loss.tied_table``) gives every parameter the dense gradient
    that full logits and ``F.cross_entropy`` give."""
    model, run = generator_model.train(), Runner(generator_model)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    targets = torch.randint(0, model.cfg.vocab_size, (2, 9))

    def gradients(defer):
        torch.manual_seed(0)  # the same dropout masks
        model.zero_grad(set_to_none=True)
        out = run(ids, defer_head=defer)
        if defer:
            loss = linear_cross_entropy(out.head.features, out.head.weight, out.head.bias, targets)
        else:
            loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten())
        loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    deferred, plain = gradients(True), gradients(False)
    assert deferred.keys() == plain.keys()
    for name, g in plain.items():
        assert not deferred[name].is_sparse, name
        torch.testing.assert_close(deferred[name], g, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.skipif(not packing_supported(torch.zeros(1)), reason="this torch cannot pack weights for oneDNN")
def test_packed_weights_change_no_logit(model, run):
    """``convert_weights(model, "fp32")`` packs every linear layer for oneDNN (the LM head's
    copy of a tied table too) and changes no logit beyond float rounding."""
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    with torch.inference_mode():
        want = run(ids).logits
    converted = convert_weights(copy.deepcopy(model), "fp32")
    assert not any(isinstance(m, torch.nn.Linear) for m in converted.modules())
    assert any(isinstance(m, PackedLinear) for m in converted.modules())
    run_converted = Runner(converted)
    run_converted.src = run.src
    with torch.inference_mode():
        torch.testing.assert_close(run_converted(ids).logits, want, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(model, run, tmp_path):
    ids = torch.randint(0, model.cfg.vocab_size, (2, 7))
    save_checkpoint(tmp_path / "ck", model, model.cfg)
    loaded, cfg, tok = load_model(tmp_path / "ck")
    assert cfg == model.cfg and tok is None
    run_loaded = Runner(loaded)
    run_loaded.src = run.src
    torch.testing.assert_close(run_loaded(ids).logits, run(ids).logits, rtol=0, atol=0)


def test_cached_equals_uncached_greedy(generator_model):
    model = generator_model
    run = Runner(model)
    prompt = torch.randint(0, model.cfg.vocab_size, (6,)).tolist()
    if run.seq2seq:  # the decoder starts alone; the source is fixed
        run.src = torch.tensor([prompt])
        prompt = [model.cfg.decoder_start_token_id]
    want_ids, want_logits = run.greedy_uncached(run.src[0].tolist() if run.seq2seq else prompt, 12)
    cache = model.make_cache(1, len(prompt) + 13)  # + 1: a GLM feeds [S] after the prompt
    ids = torch.tensor([prompt])
    got_ids, got_logits = [], []
    logits = run(ids, cache=cache).logits[:, -1]
    for _ in range(12):
        got_logits.append(logits[0])
        nxt = logits.argmax(-1, keepdim=True)
        got_ids.append(nxt.item())
        logits = run(nxt, cache=cache).logits[:, -1]
    assert got_ids == want_ids
    torch.testing.assert_close(torch.stack(got_logits), want_logits, rtol=0, atol=1e-5)


def test_decode_generator_matches_uncached_for_a_padded_batch(generator_model):
    model = generator_model
    run = Runner(model)
    prompts = [torch.randint(0, model.cfg.vocab_size, (n,)).tolist() for n in (3, 8, 5)]
    steps = [s for group in decode(model, prompts, SamplingParams(max_new_tokens=6, temperature=0)) for s in group]
    for i, prompt in enumerate(prompts):
        want, _ = run.greedy_uncached(prompt, 6)
        assert [s.token for s in steps if s.seq == i] == want


def test_padding_invariance(model, run):
    cfg = model.cfg
    ids = torch.randint(0, cfg.vocab_size, (1, 7))
    alone = run(ids).logits
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)], 1)
    torch.testing.assert_close(run(padded, attention_mask=mask).logits[:, 4:], alone, rtol=0, atol=1e-5)


def test_same_seed_same_output(generator_model):
    model = generator_model
    prompt = [[1, 2, 3]]
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=20, seed=7)
    a = [s.token for g in decode(model, prompt, params) for s in g]
    b = [s.token for g in decode(model, prompt, params) for s in g]
    c = [s.token for g in decode(model, prompt, SamplingParams(max_new_tokens=10, temperature=1.0, top_k=20, seed=8))
         for s in g]
    assert a == b
    assert a != c  # a different seed draws differently (10 draws from ~20 tokens)


def test_training_mode_dropout_is_deterministic_under_seed():
    cfg = tiny("gpt2-small", dropout=0.1)
    model = build_model(cfg).train()
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    torch.manual_seed(3)
    a = model(ids).logits
    torch.manual_seed(3)
    b = model(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, model(ids).logits)  # dropout is active
