# Two entry points (see README): `make run` and `make test`. Both build .venv
# from pyproject.toml first, so a fresh machine with Python 3.11 is enough.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rtc-agent serve

system-deps:
	bash scripts/system-deps.sh

# ruff on everything; mypy on the package (strict for the pure cores, see pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check rtc_agent tests bench
	$(PY) -m mypy

test: $(STAMP) system-deps lint
	bash scripts/pytest.sh

clean:
	rm -rf $(VENV) .venv-clients .pytest_cache .ruff_cache
