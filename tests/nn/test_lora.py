import pytest
import torch

from tfamily.models import build_model
from tfamily.nn.lora import LoRALinear, add_lora, has_lora, merge_lora
from tfamily.objectives import CausalLMObjective
from tfamily.presets import get_preset, tiny_version


def tiny(name="llama-tiny"):
    torch.manual_seed(0)
    return build_model(tiny_version(get_preset(name).config()))


def test_adapters_start_as_identity_and_only_they_train():
    model = tiny()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    before = model(ids).logits
    total = sum(p.numel() for p in model.parameters())
    trainable = add_lora(model, r=4, targets=("qkv", "out"))
    cfg = model.cfg
    per_layer = 4 * (cfg.d_model + (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim) + 4 * (2 * cfg.d_model)
    assert trainable == cfg.n_layer * per_layer
    assert trainable < 0.2 * total
    torch.testing.assert_close(model(ids).logits, before)  # B = 0
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_lora_learns_and_merges_to_the_same_function():
    model = tiny("gpt-tiny")
    add_lora(model, r=8, alpha=16, targets=("qkv", "out", "fc_in", "fc_out"))
    objective = CausalLMObjective()
    x = (torch.randint(0, model.cfg.vocab_size, (8, 1)) + torch.arange(17)) % model.cfg.vocab_size  # counting
    batch = objective.prepare(x)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(100):
        loss = objective.loss(model(**batch.inputs).logits, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]  # frozen random embeddings bound how far rank-8 adapters get
    model.eval()
    with torch.no_grad():
        adapted = model(**batch.inputs).logits
        merge_lora(model)
        assert not has_lora(model)
        torch.testing.assert_close(model(**batch.inputs).logits, adapted, atol=1e-5, rtol=1e-5)
    assert set(model.state_dict()) == set(tiny("gpt-tiny").state_dict())  # plain names again


def test_bad_targets_and_rank_are_errors():
    with pytest.raises(ValueError, match="no linear layer named"):
        add_lora(tiny(), targets=("nope",))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(torch.nn.Linear(4, 4), r=0, alpha=1)
