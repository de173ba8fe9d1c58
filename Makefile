# Two commands do everything on a fresh machine with python3, git and make:
#   make demo   deploys the demo project (examples/shop)
#   make test   lint, type-check and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-down test lint clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shipyard -C examples/shop validate
	$(BIN)/shipyard -C examples/shop graph
	$(BIN)/shipyard -C examples/shop deploy --yes --tests smoke
	@echo
	@echo "The shop runs: backend http://127.0.0.1:4000/api/products, admin http://127.0.0.1:4001/,"
	@echo "marketing http://127.0.0.1:4003/. Stop it with: make demo-down"

demo-down: $(STAMP)
	$(BIN)/shipyard -C examples/shop down

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Debian packages the tests use when present: haproxy (the `router = "haproxy"` tests) and
# chromium (the dashboard's browser test, never a downloaded browser); those tests skip without
# them. Installed only when missing, and only as root with apt-get; otherwise left out.
system-packages:
	@command -v haproxy >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q haproxy >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; } || \
	      echo "could not install haproxy: its tests will be skipped"; \
	  else echo "haproxy is not installed (apt-get install haproxy as root): its tests will be skipped"; fi; }
	@[ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q chromium >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
	      echo "could not install chromium: the dashboard's browser test will be skipped"; \
	  else echo "chromium is not installed (apt-get install chromium as root): the dashboard's browser test will be skipped"; fi; }

# Four workers on two cores: the tests wait on processes and sockets as much as they compute.
# Measured on an earlier, smaller suite: 4 workers 142 s, 3 workers 148 s, 6 workers 311 s; the
# whole suite now takes about 226 s with 4 workers on a quiet 2-core machine (benchmarks/README.md).
# worksteal keeps a worker busy while another runs a long test; the longest ones are split into
# cases so the workers share them. `benchmarks/suite_cpu.py` measures the suite's CPU.
test: lint system-packages
	$(BIN)/pytest -q -n 4 --dist worksteal

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
