"""Task models: heads on encoder and decoder backbones, pooling, and loading a pretrained backbone."""

import pytest
import torch

from tfamily.config import ConfigError
from tfamily.heads import pool
from tfamily.models import FeatureExtractor, SequenceClassifier, SpanExtractor, TokenClassifier, build_model
from tfamily.presets import get_preset


def bert(**changes):
    return get_preset("bert-tiny").config(vocab_size=60, d_model=32, n_head=2, d_ff=64, max_seq_len=32, **changes)


def test_pool_last_and_mean_ignore_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    right = torch.tensor([[True, True, True, False], [True, True, True, True]])
    left = torch.tensor([[False, True, True, True], [True, True, True, True]])
    torch.testing.assert_close(pool(hidden, right, "last")[0], hidden[0, 2])
    torch.testing.assert_close(pool(hidden, left, "last")[0], hidden[0, 3])
    torch.testing.assert_close(pool(hidden, right, "mean")[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(pool(hidden, None, "first"), hidden[:, 0])


@pytest.mark.parametrize("head, shape", [("sequence_classification", (2, 3)), ("token_classification", (2, 7, 3)),
                                         ("span", (2, 7, 2)), ("none", (2, 32))])
def test_heads_on_an_encoder(head, shape):
    torch.manual_seed(0)
    model = build_model(bert(head=head, num_labels=3)).eval()
    ids = torch.randint(5, 60, (2, 7))
    out = model(ids, torch.ones(2, 7, dtype=torch.bool), torch.zeros(2, 7, dtype=torch.long))
    assert out.logits.shape == shape and out.hidden.shape == (2, 7, 32)


def test_gpt1_style_classifier_reads_the_last_real_token():
    """A decoder classifies from its last real token, so right padding changes nothing."""
    torch.manual_seed(0)
    cfg = get_preset("gpt1-tiny").config(vocab_size=60, head="sequence_classification", pooling="last", num_labels=2)
    model = build_model(cfg).eval()
    ids = torch.randint(0, 60, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    torch.testing.assert_close(model(padded, mask).logits, model(ids).logits, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="pooling='last'"):
        get_preset("gpt1-tiny").config(head="sequence_classification", pooling="pooler")


def test_a_task_model_takes_the_pretrained_backbone_and_pooler():
    torch.manual_seed(0)
    pretrained = build_model(bert())  # MaskedLM with NSP: backbone, pooler, mlm, nsp
    task = build_model(bert(head="sequence_classification", num_labels=2))
    missing, unexpected = task.load_state_dict(pretrained.state_dict(), strict=False)
    assert sorted(missing) == ["head.proj.bias", "head.proj.weight"]
    assert all(k.startswith(("mlm.", "nsp.")) for k in unexpected)
    assert isinstance(task, SequenceClassifier)
    assert isinstance(build_model(bert(head="token_classification")), TokenClassifier)
    assert isinstance(build_model(bert(head="span")), SpanExtractor)
    assert isinstance(build_model(bert(head="none")), FeatureExtractor)
