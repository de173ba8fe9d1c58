# Two commands do everything on a fresh machine with python3, git and make:
#   make demo   deploys the demo project (examples/shop)
#   make test   lint, type-check and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-down test lint clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shipyard -C examples/shop validate
	$(BIN)/shipyard -C examples/shop graph
	$(BIN)/shipyard -C examples/shop deploy --yes
	@echo
	@echo "The shop runs: backend http://127.0.0.1:4000/api/products, admin http://127.0.0.1:4001/,"
	@echo "marketing http://127.0.0.1:4003/. Stop it with: make demo-down"

demo-down: $(STAMP)
	$(BIN)/shipyard -C examples/shop down

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Four workers on two cores: the tests mostly wait on processes and sockets. Measured on a
# loaded 2-core machine: 4 workers 142 s, 3 workers 148 s, 6 workers 311 s (one worker: 8+ min).
# worksteal keeps a worker busy while another runs the long crash-recovery test.
test: lint chromium
	$(BIN)/pytest -q -n 4 --dist worksteal

# The dashboard's browser test drives Debian's chromium (never a downloaded browser); it
# skips, saying why, where chromium cannot be installed (not root, no package source).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| echo "chromium could not be installed: the dashboard browser test will skip"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
