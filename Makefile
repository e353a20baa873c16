# The two commands of the README: `make demo` starts the platform, `make test` passes the tests.
PY ?= python3
VENV := .venv
HEROES := $(VENV)/bin/heroes

.PHONY: demo test down status logs sdk-docs

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(HEROES) dev up

test: $(VENV)/.installed
	$(HEROES) dev test

down: $(VENV)/.installed
	$(HEROES) dev down

status: $(VENV)/.installed
	$(HEROES) dev status

# the SDK's API reference (docs/sdk/api) regenerated from its docstrings; a unit test fails while it is stale
sdk-docs: $(VENV)/.installed
	$(VENV)/bin/python sdk/make_reference.py
