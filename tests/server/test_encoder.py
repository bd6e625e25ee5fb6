"""An encoder (BERT) checkpoint served: /v1/embeddings answers as `tfamily embed` does, and
completions are refused with a 400 that names the model."""

import torch
from fastapi.testclient import TestClient

from tfamily.checkpoint import save_checkpoint
from tfamily.evaluation.embeddings import embed_texts
from tfamily.models import build_model
from tfamily.presets import get_preset
from tfamily.server import build_app
from tfamily.tokenizers import Tokenizer


def test_bert_checkpoint_serves_embeddings_only(tmp_path):
    tok = Tokenizer.train("wordpiece", ["the cat sat on the mat", "a dog slept by the door"] * 20, vocab_size=80)
    cfg = get_preset("bert-tiny").config(vocab_size=tok.vocab_size, d_model=32, n_head=2, d_ff=64, n_layer=1)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_checkpoint(tmp_path / "bert", model, cfg, tok.to_str())
    app, engine = build_app(tmp_path / "bert", model_name="bert")
    try:
        with TestClient(app) as client:
            r = client.post("/v1/embeddings", json={"model": "bert", "input": ["the cat sat", "a dog"],
                                                    "encoding_format": "float"})
            assert r.status_code == 200
            got = torch.tensor([d["embedding"] for d in r.json()["data"]])
            want = embed_texts(model, tok, ["the cat sat", "a dog"])  # [CLS] ... [SEP], mean-pooled, unit length
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            bad = client.post("/v1/completions", json={"model": "bert", "prompt": "the cat", "max_tokens": 3})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"
            assert "encoder" in bad.json()["error"]["message"]
    finally:
        engine.close()
