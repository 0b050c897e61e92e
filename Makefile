# qatcore: the two commands of README, plus `make lab`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: reproduce test lab lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Execute every notebook headless, regenerate figures/, print the report of checks and numbers.
reproduce: $(STAMP)
	$(PY) -m qatcore reproduce

## The whole pytest suite: unit, property and strict nbval over notebooks/.
test: $(STAMP)
	$(PY) -m ruff check qatcore tests
	$(PY) -m pytest

## JupyterLab on the course.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build
