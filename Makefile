# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV   ?= .venv
PYTHON ?= python3.11
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test install lint bench drill clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/llmbatch demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/cfn-lint template.yaml

test: lint
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/llmbatch bench --write-docs

drill: install
	$(VENV)/bin/llmbatch drill

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .llmbatch
