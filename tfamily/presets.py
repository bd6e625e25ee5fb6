"""Named model presets, as data, each with its source.

A preset is a dict of ModelConfig fields plus where the numbers come from. The ``*-tiny``
presets keep a family's wiring at a size that trains in seconds on a laptop CPU; the
conformance tests run every preset, shrinking the big ones with ``tiny_version``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError, ModelConfig

GPT2_SOURCE = ("Radford et al. 2019, 'Language Models are Unsupervised Multitask Learners', "
               "Table 2; HF openai-community/gpt2* config.json (n_ctx 1024, vocab 50257, gelu_new, eps 1e-5)")
GPT2 = dict(arch="decoder", vocab_size=50257, max_seq_len=1024, position="learned", norm="layernorm",
            norm_eps=1e-5, norm_placement="pre", final_norm=True, activation="gelu_tanh", bias=True,
            tie_embeddings=True, dropout=0.1)


@dataclass(frozen=True)
class Preset:
    name: str
    fields: dict
    source: str
    notes: str = ""

    def config(self, **overrides) -> ModelConfig:
        return ModelConfig.from_dict({**self.fields, **overrides, "extra": {"preset": self.name}})


PRESETS: dict[str, Preset] = {}


def _add(name: str, fields: dict, source: str, notes: str = "") -> None:
    PRESETS[name] = Preset(name, fields, source, notes)


_add("gpt1", dict(arch="decoder", vocab_size=40478, max_seq_len=512, d_model=768, n_layer=12, n_head=12,
                  d_ff=3072, position="learned", norm="layernorm", norm_eps=1e-5, norm_placement="post",
                  final_norm=False, activation="gelu", bias=True, tie_embeddings=True, dropout=0.1),
     "Radford et al. 2018, 'Improving Language Understanding by Generative Pre-Training', §4.1 "
     "(12 layers, 768 wide, 12 heads, 3072 FFN, 512 tokens, BPE with 40,000 merges); HF openai-community/openai-gpt",
     "post-LN: LayerNorm after each residual add, no final norm")
_add("gpt2-small", dict(GPT2, d_model=768, n_layer=12, n_head=12), GPT2_SOURCE, "124M parameters")
_add("gpt2-medium", dict(GPT2, d_model=1024, n_layer=24, n_head=16), GPT2_SOURCE, "355M parameters")
_add("gpt2-large", dict(GPT2, d_model=1280, n_layer=36, n_head=20), GPT2_SOURCE, "774M parameters")
_add("gpt2-xl", dict(GPT2, d_model=1600, n_layer=48, n_head=25), GPT2_SOURCE, "1.5B parameters")
_add("gpt-tiny", dict(GPT2, vocab_size=512, max_seq_len=256, d_model=128, n_layer=4, n_head=4, dropout=0.0),
     "tfamily: GPT-2 wiring at the size of nanoGPT's CPU Shakespeare recipe (4 layers, 4 heads, 128 wide)",
     "the default of `tfamily train`; trains in minutes on a CPU; vocab_size comes from the tokenizer")
_add("gpt-small-char", dict(GPT2, vocab_size=128, max_seq_len=256, d_model=384, n_layer=6, n_head=6,
                            activation="gelu", dropout=0.2),
     "nanoGPT config/train_shakespeare_char.py, its 'baby GPT' (6 layers, 6 heads, 384 wide, 256 context, "
     "dropout 0.2)", "for longer runs or a GPU; vocab_size comes from the tokenizer")
_add("gpt1-tiny", dict(PRESETS["gpt1"].fields, vocab_size=512, max_seq_len=256, d_model=128, n_layer=4,
                       n_head=4, d_ff=512, dropout=0.0),
     "tfamily: GPT-1 wiring (post-LN) at a CPU size", "")


LLAMA = dict(arch="decoder", position="rotary", norm="rmsnorm", norm_eps=1e-5, norm_placement="pre",
             final_norm=True, activation="silu", gated_mlp=True, bias=False, dropout=0.0,
             scale_residual_init=False)
_add("llama-tiny", dict(LLAMA, vocab_size=512, max_seq_len=256, d_model=128, n_layer=4, n_head=4, n_kv_head=2,
                        d_ff=352, rope_theta=10000.0, tie_embeddings=True),
     "tfamily: Llama wiring (Touvron et al. 2023: pre-RMSNorm, SwiGLU, rotary positions, no biases; "
     "grouped-query attention as in Llama 2) at gpt-tiny's CPU size",
     "d_ff 352 = 8/3 * 128 rounded up to a multiple of 32, as Llama sizes its SwiGLU; "
     "vocab_size comes from the tokenizer")
_add("smollm2-135m", dict(LLAMA, vocab_size=49152, max_seq_len=8192, d_model=576, n_layer=30, n_head=9,
                          n_kv_head=3, d_ff=1536, rope_theta=100000.0, tie_embeddings=True,
                          init_std=576 ** -0.5),
     "HF HuggingFaceTB/SmolLM2-135M config.json (LlamaForCausalLM: hidden 576, 30 layers, 9 heads, 3 kv heads, "
     "intermediate 1536, vocab 49152, rope_theta 100000, max_position_embeddings 8192, rms_norm_eps 1e-5, "
     "tied embeddings, no biases, initializer_range 1/24)",
     "135M parameters; a modern small decoder to import with `tfamily.interop.import_hf`")


TRANSFORMER_SOURCE = ("Vaswani et al. 2017, 'Attention Is All You Need', Table 3 (base: N=6, d_model 512, d_ff 2048, "
                      "h=8, P_drop 0.1; big: d_model 1024, d_ff 4096, h=16, P_drop 0.3 for EN-DE), section 3.4 "
                      "(embeddings times sqrt(d_model), shared between encoder, decoder and softmax), section 5.1 "
                      "(a shared source-target BPE vocabulary of about 37,000 tokens for EN-DE)")
TRANSFORMER = dict(arch="encoder-decoder", vocab_size=37000, max_seq_len=1024, position="sinusoidal",
                   norm="layernorm", norm_eps=1e-5, norm_placement="post", final_norm=False, activation="relu",
                   bias=True, tie_embeddings=True, share_encoder_embeddings=True, scale_embeddings=True,
                   scale_residual_init=False, init_std=512 ** -0.5)
_add("transformer-base", dict(TRANSFORMER, d_model=512, n_layer=6, n_encoder_layer=6, n_head=8, d_ff=2048,
                              dropout=0.1), TRANSFORMER_SOURCE,
     "post-LN, sinusoidal positions, ReLU; about 63M parameters with the 37k joint vocabulary")
_add("transformer-big", dict(TRANSFORMER, d_model=1024, n_layer=6, n_encoder_layer=6, n_head=16, d_ff=4096,
                             dropout=0.3, init_std=1024 ** -0.5), TRANSFORMER_SOURCE,
     "post-LN, sinusoidal positions, ReLU; about 213M parameters with the 37k joint vocabulary")
_add("transformer-tiny", dict(TRANSFORMER, vocab_size=512, max_seq_len=256, d_model=128, n_layer=2,
                              n_encoder_layer=2, n_head=4, d_ff=512, dropout=0.0, init_std=128 ** -0.5),
     "tfamily: the original Transformer's wiring at a size that trains in seconds on a CPU",
     "vocab_size comes from the tokenizer")
_add("transformer-small", dict(TRANSFORMER, vocab_size=8000, max_seq_len=256, d_model=256, n_layer=3,
                               n_encoder_layer=3, n_head=4, d_ff=1024, dropout=0.1, norm_placement="pre",
                               final_norm=True, init_std=256 ** -0.5),
     "tfamily: a pre-LN Transformer for small corpora such as Multi30k, sized to train on a laptop CPU "
     "within an hour (see configs/transformer-multi30k.yaml)",
     "pre-LN with a final norm (Xiong et al. 2020): trains stably at a higher learning rate without "
     "the paper's long warm-up; vocab_size comes from the tokenizer")


T5_SOURCE = ("Raffel et al. 2020, 'Exploring the Limits of Transfer Learning with a Unified Text-to-Text "
             "Transformer', section 3.1 (small: 6+6 blocks, d_model 512, d_ff 2048, 8 heads of 64; relative position "
             "buckets shared across layers; no layer-norm bias); HF google-t5/t5-small config.json (vocab 32128, "
             "32 buckets, max distance 128, eps 1e-6, relu, tied embeddings)")
T5 = dict(arch="encoder-decoder", vocab_size=32128, max_seq_len=512, position="t5_relative", relative_buckets=32,
          relative_max_distance=128, norm="rmsnorm", norm_eps=1e-6, norm_placement="pre", final_norm=True,
          activation="relu", gated_mlp=False, bias=False, tie_embeddings=True, share_encoder_embeddings=True,
          scale_embeddings=False, scale_tied_output=True, attention_scale=1.0, dropout=0.1, init_std=1.0,
          init_fan_in=True, scale_residual_init=False, pad_token_id=0, decoder_start_token_id=0)
_add("t5-small", dict(T5, d_model=512, n_layer=6, n_encoder_layer=6, n_head=8, d_ff=2048), T5_SOURCE,
     "60.5M parameters; T5 v1.1 is activation='gelu_tanh', gated_mlp=True, tie_embeddings=False")
_add("t5-tiny", dict(T5, vocab_size=8000, max_seq_len=256, d_model=128, n_layer=2, n_encoder_layer=2, n_head=4,
                     d_ff=512, dropout=0.0), "tfamily: T5 wiring at a CPU size", "vocab_size comes from the tokenizer")
BART_SOURCE = ("Lewis et al. 2020, 'BART: Denoising Sequence-to-Sequence Pre-training', section 2.1 (base: 6+6 "
               "layers, GELU, BERT-like post-LN with a LayerNorm on the embeddings); HF facebook/bart-base config.json "
               "(d_model 768, 12 heads, ffn 3072, vocab 50265, 1024 positions stored from row 2, final_logits_bias)")
BART = dict(arch="encoder-decoder", vocab_size=50265, max_seq_len=1024, position="learned", position_offset=2,
            norm="layernorm", norm_eps=1e-5, norm_placement="post", final_norm=False, embed_norm=True,
            activation="gelu", gated_mlp=False, bias=True, tie_embeddings=True, share_encoder_embeddings=True,
            scale_embeddings=False, lm_head_bias=True, dropout=0.1, scale_residual_init=False, pad_token_id=1,
            decoder_start_token_id=2)
_add("bart-base", dict(BART, d_model=768, n_layer=6, n_encoder_layer=6, n_head=12, d_ff=3072), BART_SOURCE,
     "139M parameters")
_add("bart-tiny", dict(BART, vocab_size=8000, max_seq_len=256, d_model=128, n_layer=2, n_encoder_layer=2, n_head=4,
                       d_ff=512, dropout=0.0, pad_token_id=0, decoder_start_token_id=2),
     "tfamily: BART wiring at a CPU size", "vocab_size comes from the tokenizer")

BERT_SOURCE = ("Devlin et al. 2019, 'BERT: Pre-training of Deep Bidirectional Transformers', section 3 (base: L=12, "
               "H=768, A=12, 110M; large: L=24, H=1024, A=16, 340M; 512 positions, 2 segments, GELU, a 30,000 "
               "WordPiece vocabulary); HF google-bert/bert-base-uncased config.json (vocab 30522, eps 1e-12)")
BERT = dict(arch="encoder", vocab_size=30522, max_seq_len=512, position="learned", type_vocab_size=2, embed_norm=True,
            norm="layernorm", norm_eps=1e-12, norm_placement="post", final_norm=False, activation="gelu", bias=True,
            tie_embeddings=True, dropout=0.1, scale_residual_init=False, nsp=True, pad_token_id=0)
_add("bert-base", dict(BERT, d_model=768, n_layer=12, n_head=12, d_ff=3072), BERT_SOURCE, "110M parameters")
_add("bert-large", dict(BERT, d_model=1024, n_layer=24, n_head=16, d_ff=4096), BERT_SOURCE, "340M parameters")
_add("bert-tiny", dict(BERT, vocab_size=8000, max_seq_len=128, d_model=128, n_layer=2, n_head=2, d_ff=512),
     "Turc et al. 2019, 'Well-Read Students Learn Better' (the BERT-Tiny size: L=2, H=128, A=2)",
     "trains in minutes on a CPU; vocab_size comes from the tokenizer")
_add("bert-mini", dict(BERT, vocab_size=8000, max_seq_len=128, d_model=256, n_layer=4, n_head=4, d_ff=1024),
     "Turc et al. 2019, 'Well-Read Students Learn Better' (the BERT-Mini size: L=4, H=256, A=4)",
     "vocab_size comes from the tokenizer")

GLM_SOURCE = ("Du et al. 2022, 'GLM: General Language Model Pretraining with Autoregressive Blank Infilling', "
              "section 2.3 and Table 1 (GLM-Base: 12 layers, 768 hidden, 12 heads, 110M, like BERT-Base; GLM-Large: "
              "24 layers, 1024 hidden, 16 heads, 335M; BERT's uncased WordPiece vocabulary of 30k, 512 tokens), "
              "section 2.2.1 (layer norm before each sub-layer, a single linear output layer, GeLU) and 2.2.2 "
              "(2-D positions: position in Part A and inside the span, two learned embedding tables)")
GLM = dict(arch="glm", vocab_size=30522, max_seq_len=512, position="glm_2d", norm="layernorm", norm_eps=1e-5,
           norm_placement="pre", final_norm=True, activation="gelu", bias=True, tie_embeddings=True, dropout=0.1,
           pad_token_id=0)
_add("glm-base", dict(GLM, d_model=768, n_layer=12, n_head=12, d_ff=3072), GLM_SOURCE,
     "110M parameters; blank infilling (15 % in Poisson(3) spans), [gMASK] for generation")
_add("glm-large", dict(GLM, d_model=1024, n_layer=24, n_head=16, d_ff=4096), GLM_SOURCE, "335M parameters")
_add("glm-tiny", dict(GLM, vocab_size=512, max_seq_len=256, d_model=128, n_layer=4, n_head=4, d_ff=512, dropout=0.0),
     "tfamily: GLM wiring (pre-LN, 2-D positions, Part A / Part B mask) at gpt-tiny's CPU size",
     "vocab_size comes from the tokenizer")


TXL_SOURCE = ("Dai et al. 2019, 'Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context', sections "
              "3.2-3.3 (memory per layer, relative sinusoid R with u, v biases) and Table 1 (WikiText-103 base, 151M "
              "parameters); kimiyoung/transformer-xl pytorch/run_wt103_base.sh (n_layer 16, d_model 410, n_head 10, "
              "d_head 41, d_inner 2100, dropout 0.1, tgt_len 150, mem_len 150; post-LN, ReLU, embeddings times "
              "sqrt(d_model), 267,735-word vocabulary)")
TXL = dict(arch="transformer-xl", position="xl_relative", norm="layernorm", norm_eps=1e-5, norm_placement="post",
           final_norm=False, activation="relu", bias=True, tie_embeddings=True, scale_embeddings=True,
           scale_residual_init=False)
_add("txl-base", dict(TXL, vocab_size=267735, max_seq_len=150, mem_len=150, d_model=410, n_layer=16, n_head=10,
                      d_head=41, d_ff=2100, dropout=0.1), TXL_SOURCE,
     "about 151M parameters with a tied full softmax (the paper ties an adaptive softmax, div_val 1, which tfamily "
     "does not have); max_seq_len is the segment length, mem_len the memory")
_add("txl-tiny", dict(TXL, vocab_size=512, max_seq_len=32, mem_len=32, d_model=128, n_layer=4, n_head=4, d_ff=512,
                      dropout=0.0),
     "tfamily: Transformer-XL wiring at gpt-tiny's CPU size, segments of 32 tokens and a 32-token memory",
     "train with seq_len a multiple of 32 (e.g. 128: four segments a window); vocab_size comes from the tokenizer")


RNN_SOURCE = ("Hochreiter & Schmidhuber 1997 (LSTM); Cho et al. 2014 (GRU); Zaremba et al. 2014, 'Recurrent Neural "
              "Network Regularization' (2-layer LSTM LM, dropout between layers; the medium model: 650 units)")
RNN = dict(arch="rnn", position="none", tie_embeddings=True, scale_residual_init=False, n_head=1)
_add("lstm-medium", dict(RNN, cell="lstm", vocab_size=10000, max_seq_len=35, d_model=650, n_layer=2, dropout=0.5),
     RNN_SOURCE, "Zaremba et al.'s medium LSTM LM on Penn Treebank (10k words, unrolled 35 steps), with tied "
     "embeddings (Press & Wolf 2017); max_seq_len is the training window (an RNN has no context limit of its own)")
_add("lstm-tiny", dict(RNN, cell="lstm", vocab_size=512, max_seq_len=256, d_model=256, n_layer=2, dropout=0.0),
     "tfamily: a 2-layer LSTM LM at about gpt-tiny's parameter count, for CPU comparisons",
     "vocab_size comes from the tokenizer")
_add("gru-tiny", dict(RNN, cell="gru", vocab_size=512, max_seq_len=256, d_model=256, n_layer=2, dropout=0.0),
     "tfamily: lstm-tiny with GRU cells", "vocab_size comes from the tokenizer")


ELMO_SOURCE = ("Peters et al. 2018, 'Deep contextualized word representations' (ELMo), section 3: a forward and a "
               "backward LSTM LM sharing token representation and softmax, states concatenated; the original has "
               "2 layers of 4096 units projected to 512 and a character CNN")
_add("bilstm-tiny", dict(RNN, arch="birnn", cell="lstm", vocab_size=512, max_seq_len=128, d_model=256, n_layer=2,
                         dropout=0.0, pooling="mean"),
     ELMO_SOURCE + "; tfamily: 128 units each way over word pieces, about bert-mini's size",
     "vocab_size comes from the tokenizer; embeddings are the two top states concatenated (d_model = 2 x 128)")


RNNSEARCH_SOURCE = ("Bahdanau, Cho & Bengio 2015, 'Neural Machine Translation by Jointly Learning to Align and "
                    "Translate', section 3 and appendix A (RNNsearch: bidirectional GRU encoder of 1000 units each "
                    "way, GRU decoder of 1000 units, 620-dim embeddings, additive alignment model, 30,000 words)")
_add("rnnsearch", dict(RNN, arch="rnn-seq2seq", cell="gru", vocab_size=30000, max_seq_len=128, d_model=1000,
                       n_layer=1, dropout=0.0), RNNSEARCH_SOURCE,
     "tfamily's version: one table for source and target embeddings of d_model (not 620), 500 units each way in the "
     "encoder so that annotations are d_model wide (the paper: 1000 each way), attention queried by the current "
     "decoder state, tanh output layer instead of maxout")
_add("rnn-seq2seq-tiny", dict(RNN, arch="rnn-seq2seq", cell="lstm", vocab_size=512, max_seq_len=128, d_model=256,
                              n_layer=1, dropout=0.1),
     RNNSEARCH_SOURCE + "; tfamily: LSTM cells at transformer-tiny's CPU size",
     "vocab_size comes from the tokenizer")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


def tiny_version(cfg: ModelConfig) -> ModelConfig:
    """The same wiring at a test size (keeps norms, positions, activations, and the number of
    query heads per key/value head where that fits in 4 heads: 9/3 -> 3/1, 4/2 -> 4/2, 12/12 -> 4/4)."""
    group = cfg.n_head // cfg.n_kv_head  # query heads sharing one key/value head
    n_kv = max(1, min(cfg.n_kv_head, 4 // group))
    n_head = min(n_kv * group, 4)  # a group wider than 4 becomes 4 heads over 1 key/value head
    return cfg.replace(vocab_size=min(cfg.vocab_size, 97), d_model=16 * n_head, n_head=n_head, n_kv_head=n_kv,
                       n_layer=min(cfg.n_layer, 2), n_encoder_layer=min(cfg.encoder_layers, 2), d_ff=64, max_seq_len=min(cfg.max_seq_len, 64), dropout=0.0)
