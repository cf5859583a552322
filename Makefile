# The two commands of the README: `make demo` and `make test`, on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch: a plain `pip install torch` would fetch a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -e ".[profile,test,serve]"
	# Ray, for the `sweep --backend ray` test (~1 min and 240 MB from PyPI); where it cannot be
	# installed (no wheel for this Python, no network) that one test skips and says why.
	$(PIP) install -q -e ".[sweep]" || echo "warning: could not install ray (the sweep extra): the Ray sweep test will be skipped" >&2
	touch $(VENV)/.core $@

demo: $(VENV)/.core
	$(VENV)/bin/batchsim simulate --policy continuous --trace traces/chat.jsonl --out runs/demo --force

test: $(VENV)/.test
	$(PY) -m pytest -q
	$(PY) -m ruff check .
	$(PY) -m mypy

lint: $(VENV)/.test
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(VENV)/.core
	$(PY) bench/sim_speed.py

clean:
	rm -rf $(VENV) runs
