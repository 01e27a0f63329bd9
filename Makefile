# Two commands do everything on a fresh machine:
#   make demo   -> set up .venv and run the embedded default recipe (build a tiny model, SFT, GRPO)
#   make test   -> set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel by default; set TORCH_SPEC to e.g. "torch==2.13.0 --index-url ..." on a GPU box.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup system-deps demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev,feedback,responsible,scale,tracking]"
	touch $@

# Debian's Chromium (browser test) and PostgreSQL (store test), installed only when missing and
# only as root; otherwise a note, and the tests that need them skip with a reason.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: missing$$missing (not root or no apt-get); tests that need them will skip"; exit 0; fi; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
		|| echo "system-deps: could not install$$missing; tests that need them will skip"

demo: setup
	$(BIN)/rlft demo

test: setup system-deps
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
