# The two commands a fresh machine needs: `make demo` and `make test`.
# Everything else here is a helper for those two.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR := var/demo
# The local servers; override on the command line or in the environment.
PG_URL ?= postgres://postgres@127.0.0.1:5432/incentive
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: demo test lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the local CPU wheel, not a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.4,<2.15"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --out $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) lint
	@if $(PY) scripts/service_check.py postgres "$${DATABASE_URL:-$(PG_URL)}"; then \
		export DATABASE_URL="$${DATABASE_URL:-$(PG_URL)}"; \
	else \
		if [ "$$CI" = "true" ]; then echo "CI=true: PostgreSQL is required and not reachable"; exit 1; fi; \
		echo "PostgreSQL not reachable: running on SQLite; PostgreSQL-only tests are skipped (see the summary)"; \
		unset DATABASE_URL; \
	fi; \
	TEST_REDIS_URL="$(TEST_REDIS_URL)" $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
