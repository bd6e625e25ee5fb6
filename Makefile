# tfamily: `make demo` trains a small GPT on the bundled Shakespeare and samples from it;
# `make test` runs the test suite. Both set up .venv on first use.
#
#   make demo                      # ~3.5 minutes on a 2-core laptop CPU
#   make test
#   make install TORCH_SPEC="torch==2.5.1"   # any other torch build

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= dev,hf,eval,serve
PY         := $(VENV)/bin/python
TF         := $(VENV)/bin/tfamily
DEMO_OUT   ?= runs/demo
DEMO_TIME  ?= 180

.PHONY: install demo test clean corpus

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: install
	rm -rf $(DEMO_OUT)
	$(TF) train --config configs/gpt-shakespeare-char.yaml --out $(DEMO_OUT) --max-time $(DEMO_TIME)
	$(TF) generate $(DEMO_OUT)/checkpoint --prompt "ROMEO:" --max-tokens 80 --temperature 0.8 --seed 1 --show-probs

test: install
	$(PY) -m pytest -q -n 2

corpus: install
	$(PY) scripts/build_shakespeare.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
