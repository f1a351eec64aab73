# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/maxact/v1/*.proto)

.PHONY: demo test fuzz lint proto bench clean venv sysdeps

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/maxact demo

# System packages outside pip (Debian chromium, chromium-driver): installed when missing and
# possible (root + apt-get), else listed; tests that need a missing one skip with the reason.
sysdeps: $(STAMP)
	sh scripts/sysdeps.sh $(VENV)/sysdeps-missing.txt

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q

# the fuzz suite's long profile (400 examples per fuzz test; `make test` runs 15 each)
fuzz: $(STAMP)
	MAXACT_FUZZ_PROFILE=long $(BIN)/python -m pytest -q tests/fuzz --hypothesis-show-statistics

proto: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=proto --mypy_out=proto --grpc_python_out=proto --mypy_grpc_out=proto \
	  $(PROTOS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(MAKE) proto
	git diff --exit-code -- proto || (echo "generated stubs are stale: run 'make proto' and commit" && exit 1)
	test -z "$$(git status --porcelain -- proto)" || (echo "untracked generated stubs: commit them" && git status --porcelain -- proto && exit 1)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
