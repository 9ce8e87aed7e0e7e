# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch: installed before sentence-transformers so pip never pulls a CUDA build.
# Where no local CPU wheel exists, point pip at PyTorch's CPU index (see README):
#   make demo TORCH_PIP_ARGS="--index-url <PyTorch CPU wheel index>"
TORCH_VERSION  ?= 2.13.0
TORCH_PIP_ARGS ?=
STAMP  := $(VENV)/.installed

# The suite runs on pytest-xdist workers, one per core up to four (each loads its own models,
# ~1-2 GB at peak); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ "$$n" -gt 4 ] && n=4; echo $$n)
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The suite on PostgreSQL: a role that may CREATE DATABASE (.ci/run sets this one up).
PG_TEST_URL ?= postgresql+asyncpg://helpdesk:helpdesk@127.0.0.1:5432/helpdesk_test

.PHONY: demo test test-postgres setup lint format bench eval clean

demo: $(STAMP)
	$(BIN)/helpdesk demo

test: $(STAMP)
	$(PYTEST)

test-postgres: $(STAMP)
	HELPDESK_TEST_DATABASE_URL="$(PG_TEST_URL)" $(PYTEST)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

eval: $(STAMP)
	$(BIN)/helpdesk eval ../shared/data/eval/stackfaq
	$(BIN)/helpdesk eval ../shared/data/eval/covid-faq-stanford
	$(BIN)/helpdesk eval ../shared/data/eval/bitcoin-faq-xling
	$(BIN)/helpdesk eval benchmarks/heldout

bench: $(STAMP)
	$(BIN)/python benchmarks/thresholds.py ../shared/data/eval/covid-faq-stanford

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
