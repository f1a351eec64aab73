# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/maxact/v1/*.proto)
# Imported protos that ship inside installed wheels (google/rpc/status.proto in
# googleapis-common-protos), linked here so protoc and buf resolve them without network.
PROTO_DEPS := build/proto-deps
# `buf breaking` compares the protos with this commit's (the previous one by default).
BREAKING_AGAINST ?= HEAD~1

.PHONY: demo test test-slow test-all test-fast fuzz lint proto proto-deps breaking bench clean venv sysdeps openapi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# also rewrites the README's pictures in docs/ from this run
demo: $(STAMP)
	$(BIN)/maxact demo --docs docs

# System packages outside pip (Debian chromium, chromium-driver, postgresql): installed when
# missing and possible (root + apt-get), else listed; tests that need a missing one skip with
# the reason.
sysdeps: $(STAMP)
	sh scripts/sysdeps.sh $(VENV)/sysdeps-missing.txt

# every test but the suites marked slow: the command of the README (about 8 minutes on 2 cores)
test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -m "not slow"

# the slow suites: Ray clusters, `maxact serve` subprocesses, PostgreSQL replicas, SIGKILL and
# resume, the real models and the browser (about 8 minutes more); CI runs them after `make test`
test-slow: $(STAMP) sysdeps
	$(BIN)/python -m pytest -q -m slow

test-all: test test-slow

# the edit loop: `make test` without the system-package check
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# the fuzz suite's long profile (400 examples per fuzz test; `make test` runs 15 each)
fuzz: $(STAMP)
	MAXACT_FUZZ_PROFILE=long $(BIN)/python -m pytest -q tests/fuzz --hypothesis-show-statistics

proto-deps: $(STAMP)
	mkdir -p $(PROTO_DEPS)/google/rpc
	ln -sf "$$($(BIN)/python -c 'import pathlib, google.rpc.status_pb2 as m; print(pathlib.Path(m.__file__).with_name("status.proto"))')" $(PROTO_DEPS)/google/rpc/status.proto

proto: proto-deps
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto -I$(PROTO_DEPS) \
	  --python_out=proto --mypy_out=proto --grpc_python_out=proto --mypy_grpc_out=proto \
	  $(PROTOS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) proto-deps
	$(BIN)/buf lint
	$(MAKE) breaking
	$(MAKE) proto
	git diff --exit-code -- proto || (echo "generated stubs are stale: run 'make proto' and commit" && exit 1)
	test -z "$$(git status --porcelain -- proto)" || (echo "untracked generated stubs: commit them" && git status --porcelain -- proto && exit 1)
	$(BIN)/python scripts/openapi.py --check docs/openapi.json

# the HTTP API's schema as the server serves it, committed as docs/openapi.json
openapi: $(STAMP)
	$(BIN)/python scripts/openapi.py docs/openapi.json

# The API is stable from the first commit that has proto/COMPATIBILITY.md: from then on a
# change must not break clients built against the previous commit. Works on any clone
# (git archive, no remote); a no-op with a message without a previous stable commit.
breaking: proto-deps
	@if ! git rev-parse -q --verify "$(BREAKING_AGAINST)^{commit}" >/dev/null; then \
	  echo "buf breaking: skipped, no commit $(BREAKING_AGAINST) to compare with"; \
	elif ! git cat-file -e "$(BREAKING_AGAINST):proto/COMPATIBILITY.md" 2>/dev/null; then \
	  echo "buf breaking: skipped, $(BREAKING_AGAINST) predates the stable v1 API"; \
	else \
	  rm -rf build/buf-against && mkdir -p build/buf-against/build && \
	  git archive "$(BREAKING_AGAINST)" buf.yaml proto | tar -x -C build/buf-against && \
	  ln -s "$(abspath $(PROTO_DEPS))" build/buf-against/$(PROTO_DEPS) && \
	  $(BIN)/buf breaking --against build/buf-against && \
	  echo "buf breaking: no breaking change against $(BREAKING_AGAINST)"; \
	fi

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
