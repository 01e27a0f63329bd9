# Two commands do everything on a fresh machine:
#   make demo   -> set up .venv and run the embedded default recipe (build a tiny model, SFT, GRPO)
#   make test   -> set up .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel by default; set TORCH_SPEC to e.g. "torch==2.13.0 --index-url ..." on a GPU box.
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
PIP_VERSION ?= 26.3

.PHONY: setup system-deps demo test lint lock clean

setup: $(VENV)/.installed

# Every package but torch comes from requirements.lock: exact versions with their hashes, no
# dependency resolution at install time, so the same commit installs the same set on every machine
# (the demo's figures moved by 20 points across transformers/tokenizers releases before the lock).
# torch is pinned by TORCH_SPEC instead, so a GPU box can take a CUDA build of the same release.
$(VENV)/.installed: pyproject.toml requirements.lock Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# Refresh requirements.lock after changing the dependencies in pyproject.toml (or to take newer
# releases): resolves every extra, writes exact versions and hashes, leaves torch to TORCH_SPEC.
# Re-measure the README's figures (make demo; docs/learning.md) with the new set.
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install -q pip==$(PIP_VERSION) pip-tools==7.7.0
	rm -f requirements.lock
	$(VENV)-lock/bin/pip-compile -q --generate-hashes --strip-extras --no-emit-index-url \
		--no-emit-find-links -P torch==$(TORCH_VERSION)+cpu --unsafe-package torch \
		--extra dev --extra feedback --extra responsible --extra scale --extra tracking \
		-o requirements.lock pyproject.toml
	rm -rf $(VENV)-lock

# Debian's Chromium (browser test), PostgreSQL (store test) and bubblewrap (the sandbox's isolation,
# docs/sandbox.md), installed only when missing and only as root; otherwise a note, and the tests
# that need them skip with a reason.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: missing$$missing (not root or no apt-get); tests that need them will skip"; exit 0; fi; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
		|| echo "system-deps: could not install$$missing; tests that need them will skip"

demo: setup
	$(BIN)/rlft demo

test: setup system-deps
	$(BIN)/python -m pytest -q --durations=15

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
