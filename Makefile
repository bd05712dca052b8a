# Two commands do all set-up on a fresh machine:
#   make run    installs mockfleet in .venv and runs the quickstart lot against
#               the built-in verifying receiver
#   make test   installs what the tests need (mosquitto, .venv) and runs them
VENV ?= .venv
# the interpreter the venv is made from: on 3.12 or 3.13 a mock takes half
# the memory (see README), e.g. make run PYTHON=python3.12 VENV=.venv312
PYTHON ?= python3
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint system-deps venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends mosquitto; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: system-deps lint
	$(VENV)/bin/pytest

run: $(VENV)/.installed
	$(VENV)/bin/mockfleet run examples/quickstart.yaml
