"""Hugging Face format import and export (config.json + safetensors + tokenizer.json).

    model, tokenizer_json = import_hf("path/to/gpt2")       # dispatches on config.json model_type
    export_hf(model, "out/", tokenizer_json=tokenizer_json)  # GPT2LMHeadModel.from_pretrained("out/") works

Families: GPT-2 (``hf_gpt2``) and Llama (``hf_llama``: LlamaForCausalLM, SmolLM2, …).

llama.cpp's GGUF files (Llama architecture, quantised or not) are read by ``gguf``:

    model, tokenizer_json, chat_template = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
"""

from . import hf_gpt2, hf_llama  # family mappings stay namespaced: hf_gpt2.config_from_hf, …
from .io import (InteropError, MissingFileError, read_config, read_tokenizer_json, read_weights,
                 write_folder)
from .gguf import import_gguf, smollm2_gguf_path
from .registry import FAMILIES, HFFamily, export_hf, import_hf, load_any, register

__all__ = ["import_hf", "export_hf", "FAMILIES", "HFFamily", "register", "InteropError", "MissingFileError",
           "read_config", "read_weights", "read_tokenizer_json", "write_folder", "hf_gpt2", "hf_llama",
           "import_gguf", "smollm2_gguf_path", "load_any"]
