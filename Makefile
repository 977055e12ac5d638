# Two commands on a fresh machine with only Python 3.11+ and make: `make run`, `make test`.
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: setup browser run test lint load

setup:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen

# The signup page's tests drive Debian's Chromium: Playwright cannot download browsers here.
# Without root it is left to you; those tests skip while /usr/bin/chromium is missing.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && apt-get install -y -qq chromium) \
				|| echo "could not install chromium: the browser tests will skip"; \
		else \
			echo "chromium missing: run 'sudo apt-get install chromium' for the browser tests"; \
		fi; \
	fi

run: setup
	$(UV) run signup up

test: setup browser
	$(UV) run pytest

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy domain application projections interfaces infrastructure

load: setup
	$(UV) run pytest tests/load
