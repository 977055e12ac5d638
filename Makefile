# Two commands on a fresh machine with only Python 3.11+ and make: `make run`, `make test`.
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: uv setup test-tools run test lint load ratio pairs

# The uv that wrote uv.lock: a newer one may read or resolve it differently.
UV_VERSION := 0.13.9

uv:
	@$(PYTHON) -m uv --version 2>/dev/null | grep -qE "^uv $(UV_VERSION)( |$$)" \
		|| $(PYTHON) -m pip install --quiet "uv==$(UV_VERSION)"

setup: uv
	$(UV) sync --frozen --compile-bytecode

# Tools some tests drive, from Debian's packages: Chromium for the signup page (Playwright
# cannot download browsers here), docker-compose to validate docker-compose.yml (no Docker
# engine is needed for that: not its recommended docker.io), HAProxy and promtool to check
# the shipped configurations. Without root they are left to you; those tests skip, saying why.
TEST_TOOLS := /usr/bin/chromium:chromium
LEAN_TEST_TOOLS := /usr/bin/docker-compose:docker-compose /usr/sbin/haproxy:haproxy \
	/usr/bin/promtool:prometheus

test-tools:
	@missing=""; lean=""; \
	for tool in $(TEST_TOOLS); do [ -x "$${tool%%:*}" ] || missing="$$missing $${tool##*:}"; done; \
	for tool in $(LEAN_TEST_TOOLS); do [ -x "$${tool%%:*}" ] || lean="$$lean $${tool##*:}"; done; \
	if [ -n "$$missing$$lean" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq \
			&& { [ -z "$$missing" ] || apt-get install -y -qq $$missing; } \
			&& { [ -z "$$lean" ] || apt-get install -y -qq --no-install-recommends $$lean; } \
			|| echo "could not install$$missing$$lean: the tests that need them will skip"; \
		else \
			echo "missing$$missing$$lean: run 'sudo apt-get install$$missing$$lean' for the tests that use them"; \
		fi; \
	fi

# Running needs the service alone, not the test and lint tools (Playwright, schemathesis, mypy).
run: uv
	$(UV) sync --frozen --no-dev --compile-bytecode
	$(UV) run --frozen --no-dev signup up

# One test process per core (at most four: each starts its own PostgreSQL and Valkey, and the
# fault tests load the machine); a test takes whichever process is free (worksteal).
test: setup test-tools
	$(UV) run pytest -n auto --maxprocesses 4 --dist worksteal

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy domain application projections interfaces infrastructure bench

load: setup
	$(UV) run pytest tests/load

# The throughput goal's measure repeated (ROUNDS fresh `signup up` + `signup bench --baseline`).
ROUNDS ?= 5
ratio: setup
	SIGNUP_RATIO_ROUNDS=$(ROUNDS) $(UV) run pytest tests/load/test_ratio_rounds.py -s

# A change's verdict: PAIRS interleaved rounds of another commit (AGAINST, a git ref with the
# same uv.lock) and of this checkout, side by side so that the VM's drift falls on both.
PAIRS ?= 4
pairs: setup
	@test -n "$(AGAINST)" || { echo "usage: make pairs AGAINST=<git ref> [PAIRS=4]"; exit 2; }
	SIGNUP_PAIRS_AGAINST=$(AGAINST) SIGNUP_PAIRS=$(PAIRS) $(UV) run pytest tests/load/test_ratio_pairs.py -s
