# Two commands on a fresh machine with only Python 3.11+ and make: `make run`, `make test`.
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: setup run test lint load

setup:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen

run: setup
	$(UV) run signup up

test: setup
	$(UV) run pytest

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy domain application projections interfaces infrastructure

load: setup
	$(UV) run pytest tests/load
