# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV   ?= .venv
PYTHON ?= python3.11
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The SAM CLI lives in a venv of its own: its pins (boto3, pydantic, ...) clash with ours.
SAM_VENV        ?= .venv-sam
SAM_CLI_VERSION  = 1.170.0
SAM_STAMP        = $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM_BUILD_DIR    = .aws-sam/build
# Both SAM commands run offline: no credentials, no Docker, no telemetry.
SAM_ENV          = AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0

.PHONY: demo test install lint bench drill clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing into $(VENV); the first time compiles llama.cpp for the local model (about 3 minutes on 2 cores)"
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	rm -f $(SAM_VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/llmbatch demo

lint: install $(SAM_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(SAM_VENV)/bin/sam validate --lint --template-file template.yaml
	$(SAM_ENV) $(SAM_VENV)/bin/sam build --template-file template.yaml --build-dir $(SAM_BUILD_DIR)

test: lint
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/llmbatch bench --write-docs

drill: install
	$(VENV)/bin/llmbatch drill

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .llmbatch
