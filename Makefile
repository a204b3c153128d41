# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV   ?= .venv
PYTHON ?= python3.11
PY      = $(VENV)/bin/python
PYPROJECT_SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
STAMP   = $(VENV)/.installed-$(PYPROJECT_SUM)
# Lambda offers Python 3.11, 3.12 and 3.13: the unit tests run under the other two as well, each
# in a venv with the `test` extra only (nothing to compile). pyenv selects them per command
# (PYENV_VERSION=3.12 takes the newest 3.12 installed); without pyenv, python3.12 and python3.13
# must be on PATH.
OTHER_PYTHONS = 312 313
# The runtime the functions and the layer are built for: the template's PythonRuntime parameter,
# handed to `sam build`, and LAYER_PYTHON_VERSION for shared/Makefile's wheels (SAM gives a
# makefile build nothing but ARTIFACTS_DIR). `make lint LAMBDA_RUNTIME=python3.13` builds for 3.13.
LAMBDA_RUNTIME ?= python3.11
# The SAM CLI lives in a venv of its own: its pins (boto3, pydantic, ...) clash with ours.
SAM_VENV        ?= .venv-sam
SAM_CLI_VERSION  = 1.170.0
SAM_STAMP        = $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM_BUILD_DIR    = .aws-sam/build
# Both SAM commands run offline: no credentials, no Docker, no telemetry. The functions' own
# build (pip) wants the runtime's python on PATH: pyenv is told which.
SAM_ENV          = AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 \
                   PYENV_VERSION=$(LAMBDA_RUNTIME:python%=%) LAYER_PYTHON_VERSION=$(LAMBDA_RUNTIME:python%=%)
# checkov (the security scanner a cloud team runs on templates) in a venv of its own too: its
# pins clash with ours. Offline: no Prisma Cloud download, no PyPI update check; a template it
# cannot parse fails too (checkov passes it otherwise).
CHECKOV_VENV     ?= .venv-checkov
CHECKOV_VERSION   = 3.3.30
CHECKOV_STAMP     = $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
CHECKOV_ENV       = CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true

# llama.cpp (the local model's server, llama-cpp-python) is compiled for a CPU every x86-64 machine
# of the last ten years has (AVX2, FMA, F16C), not for this one's (-march=native): a CPU that
# reports AMX to a VM that does not enable it builds code that faults at the first completion
# (ldtilecfg: general protection fault), and CI is another machine than the one that built it.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_PIN        := $(shell grep -o '"llama-cpp-python\[server\]==[^"]*"' pyproject.toml)
LLAMA_STAMP       = $(VENV)/.llama-$(shell echo '$(LLAMA_CMAKE_ARGS) $(LLAMA_PIN)' | cksum | cut -d' ' -f1)

.PHONY: demo test install lint bench drill clean

# llama.cpp first, compiled here with those flags (not from pip's cache, which may hold a wheel
# built with others); again only when the flags or the pin (read from pyproject.toml) change.
$(LLAMA_STAMP):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "compiling llama.cpp for the local model into $(VENV) (about 3 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir --force-reinstall --no-deps $(LLAMA_PIN)
	rm -f $(VENV)/.llama-* && touch $@

$(STAMP): pyproject.toml $(LLAMA_STAMP)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing into $(VENV)"
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	rm -f $(SAM_VENV)/.installed-* && touch $@

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)
	rm -f $(CHECKOV_VENV)/.installed-* && touch $@

# .venv-py312, .venv-py313: the project with its `test` extra, under that Python. --no-compile
# halves the install (botocore alone is thousands of files); the tests compile what they import.
.venv-py3%/.installed-$(PYPROJECT_SUM): pyproject.toml
	@PYENV_VERSION=3.$* python3.$* --version >/dev/null 2>&1 || { echo "needs python3.$* (pyenv install 3.$*)"; exit 1; }
	test -x .venv-py3$*/bin/python || PYENV_VERSION=3.$* python3.$* -m venv .venv-py3$*
	.venv-py3$*/bin/python -m pip install --quiet --upgrade pip
	.venv-py3$*/bin/python -m pip install --quiet --no-compile -e '.[test]'
	rm -f .venv-py3$*/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/llmbatch demo

lint: install $(SAM_STAMP) $(CHECKOV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@# Which part may import which (style.md): the contracts under [tool.importlinter] in pyproject.toml.
	$(VENV)/bin/lint-imports
	AWS_DEFAULT_REGION=us-east-1 $(VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(SAM_VENV)/bin/sam validate --lint --template-file template.yaml
	$(SAM_ENV) $(SAM_VENV)/bin/sam build --template-file template.yaml --build-dir $(SAM_BUILD_DIR) \
		--parameter-overrides PythonRuntime=$(LAMBDA_RUNTIME)
	@# Fails on any finding not fixed or skipped in the template's Metadata with a reason.
	$(CHECKOV_ENV) $(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation \
		--skip-download --compact --quiet

# Two test files at a time (pytest-xdist; a file's module-scoped local stack stays in its process):
# most tests wait on a stack or the simulated endpoint, so CI's two cores run the suite in about
# 60% of the time. `make test PARALLEL=` runs it in one process.
PARALLEL ?= -n 2 --dist loadfile

# The whole suite under 3.11, then the unit tests under 3.12 and 3.13 (without pytest's cache, so
# `pytest --lf` still means the 3.11 run).
test: lint $(foreach v,$(OTHER_PYTHONS),.venv-py$(v)/.installed-$(PYPROJECT_SUM))
	$(PY) -m pytest -q $(PARALLEL)
	$(foreach v,$(OTHER_PYTHONS),.venv-py$(v)/bin/python -m pytest tests/unit -q -p no:cacheprovider $(PARALLEL) &&) true

# One of the other Pythons alone: make test-py312, make test-py313.
test-py3%: .venv-py3%/.installed-$(PYPROJECT_SUM)
	.venv-py3$*/bin/python -m pytest tests/unit -q -p no:cacheprovider $(PARALLEL)

bench: install
	$(VENV)/bin/llmbatch bench --write-docs

drill: install
	$(VENV)/bin/llmbatch drill

clean:
	rm -rf $(VENV) $(foreach v,$(OTHER_PYTHONS),.venv-py$(v)) .pytest_cache .mypy_cache .ruff_cache .llmbatch
