"""Transformer-XL end to end: segments with memory equal one long segment, the memory lets
a tiny model recall a token from more than a segment back (and nothing else can), and on the
bundled corpus a briefly trained model scores lower with its memory than without."""

import pytest
import torch
import torch.nn.functional as F

from tfamily.config import ConfigError, ModelConfig
from tfamily.data import TokenShards, WindowSampler, bundled_corpus, prepare_corpus
from tfamily.evaluation import segment_perplexity
from tfamily.generation import SamplingParams, decode
from tfamily.models import TransformerXL, build_model
from tfamily.objectives import CausalLMObjective
from tfamily.presets import PRESETS
from tfamily.tokenizers import Tokenizer
from tfamily.training import TrainConfig, Trainer


def xl(**fields) -> ModelConfig:
    base = dict(vocab_size=50, d_model=32, n_layer=2, n_head=2, d_ff=64, max_seq_len=8, mem_len=8)
    return PRESETS["txl-tiny"].config(**{**base, **fields})


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_segments_with_a_full_memory_equal_one_long_segment():
    """Memory of every earlier position + relative positions = attention over the whole
    sequence at once: the recurrence loses nothing while nothing is dropped."""
    torch.manual_seed(0)
    segmented = build_model(xl(max_seq_len=6, mem_len=18)).eval()
    whole = TransformerXL(segmented.cfg.replace(max_seq_len=18)).eval()
    whole.load_state_dict(segmented.state_dict())
    ids = torch.randint(0, 50, (2, 18))
    with torch.no_grad():
        got = segmented(ids)  # three segments of 6, carrying a fresh memory
        want = whole(ids)  # one segment of 18
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-5)
    assert got.recurrence.length == 18


def test_one_call_equals_a_loop_over_segments():
    torch.manual_seed(0)
    model = build_model(xl(max_seq_len=5, mem_len=7)).eval()
    ids = torch.randint(0, 50, (3, 17))
    with torch.no_grad():
        together = model(ids).logits
        memory = model.make_recurrence()
        pieces = [model(ids[:, s:s + 5], recurrence=memory).logits for s in range(0, 17, 5)]
    torch.testing.assert_close(torch.cat(pieces, 1), together, rtol=0, atol=1e-6)
    assert memory.length == 7


def test_memory_changes_the_output_and_drops_the_oldest():
    torch.manual_seed(0)
    model = build_model(xl()).eval()
    ids = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        alone = model(ids).logits
        memory = model.make_recurrence()
        model(torch.randint(0, 50, (1, 8)), recurrence=memory)
        after = model(ids, recurrence=memory).logits
    assert (alone - after).abs().max() > 1e-3
    assert memory.length == 8  # mem_len: 16 positions seen, the last 8 kept


def test_gradient_stays_inside_the_segment():
    """The second segment's loss reaches no embedding row of a token that only the first
    segment holds: the memory is a constant (untied head, so the softmax cannot reach them)."""
    torch.manual_seed(0)
    model = build_model(xl(tie_embeddings=False))
    first, second = torch.randint(0, 25, (2, 8)), torch.randint(25, 50, (2, 8))
    memory = model.make_recurrence()
    model(first, recurrence=memory)
    out = model(second, recurrence=memory)
    assert all(not s.requires_grad for s in memory.states)
    out.logits.logsumexp(-1).sum().backward()
    grad = model.backbone.tok_emb.weight.grad
    assert grad[:25].abs().sum() == 0 and grad[second.unique()].abs().sum() > 0
    # and the memory did shape the output the gradient came from
    with torch.no_grad():
        assert (model(second).logits - out.logits).abs().max() > 1e-4


def test_config_keeps_xl_fields_to_xl():
    with pytest.raises(ConfigError, match="xl_relative"):
        ModelConfig(arch="decoder", position="xl_relative")
    with pytest.raises(ConfigError, match="xl_relative"):
        ModelConfig(arch="transformer-xl", position="learned")
    with pytest.raises(ConfigError, match="mem_len"):
        ModelConfig(arch="decoder", mem_len=16)
    with pytest.raises(ConfigError, match="mem_len"):
        xl(mem_len=-1)


def test_generation_continues_past_one_segment():
    """A prompt longer than max_seq_len runs as segments; greedy decoding with the memory as
    cache equals re-running the growing sequence when the memory holds all of it."""
    torch.manual_seed(0)
    model = build_model(xl(max_seq_len=4, mem_len=32)).eval()
    prompt = torch.randint(0, 50, (11,)).tolist()
    steps = [s.token for group in decode(model, [prompt], SamplingParams(max_new_tokens=6, temperature=0))
             for s in group]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(6):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
    assert steps == ids[0, 11:].tolist()


# ---- recall: a token more than a segment back ---------------------------------------------
KEYS, FILLERS, SEG = 8, 8, 8
QUERY = KEYS + FILLERS


def recall_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2 * SEG) sequences [key, filler x (2 SEG - 2), QUERY]: the answer is the key,
    2 SEG - 1 positions before the query, so in the previous segment."""
    x = torch.randint(KEYS, KEYS + FILLERS, (n, 2 * SEG), generator=generator)
    key = torch.randint(0, KEYS, (n,), generator=generator)
    x[:, 0], x[:, -1] = key, QUERY
    return x, key


def test_memory_recalls_a_token_from_the_previous_segment():
    torch.manual_seed(0)
    model = build_model(xl(vocab_size=QUERY + 1, max_seq_len=SEG, mem_len=SEG))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        x, key = recall_batch(64, g)
        loss = F.cross_entropy(model(x).logits[:, -1], key)  # two segments, the memory carried
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, key = recall_batch(2000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        with_memory = (model(x).logits[:, -1].argmax(-1) == key).float().mean().item()
        alone = (model(x[:, SEG:]).logits[:, -1].argmax(-1) == key).float().mean().item()  # the query's segment only
    print(f"recall: {with_memory:.4f} with memory, {alone:.4f} without (chance {1 / KEYS:.3f})")
    assert with_memory >= 0.99
    assert alone < 0.2  # chance is 1/8: without memory the key is simply not there


# ---- the bundled corpus ---------------------------------------------------------------------
def test_memory_lowers_eval_loss_on_shakespeare(tmp_path):
    """A tiny model trained briefly (the real Trainer, windows of four segments) scores the
    held-out text lower when each segment sees the previous one's states."""
    path = bundled_corpus("shakespeare")
    tokenizer = Tokenizer.train("char", [str(path)])
    prepare_corpus(path, tokenizer, tmp_path / "data", val_fraction=0.1)
    seg = 16
    cfg = xl(vocab_size=tokenizer.vocab_size, d_model=64, n_head=4, d_ff=256, max_seq_len=seg, mem_len=seg)
    torch.manual_seed(0)
    model = build_model(cfg)
    train = WindowSampler(TokenShards(tmp_path / "data", "train"), 32, 4 * seg, seed=0)
    tc = TrainConfig(out_dir=str(tmp_path / "run"), steps=300, batch_size=32, seq_len=4 * seg, lr=6e-3, warmup=20,
                     eval_interval=10_000, progress=False, bf16=False)
    Trainer(model, cfg, CausalLMObjective(), train, None, tc).fit()
    model.eval()
    val = torch.from_numpy(TokenShards(tmp_path / "data", "val").window(0, 8192).astype("int64"))
    with_memory = segment_perplexity(model, val)
    without = segment_perplexity(model, val, use_recurrence=False)
    print(f"shakespeare val, {with_memory.tokens} tokens: {with_memory.nll:.4f} nats/token with memory, "
          f"{without.nll:.4f} without")
    assert with_memory.tokens == without.tokens == 8191
    assert with_memory.nll < without.nll - 0.02
