# qatcore: the two commands of README, plus `make lab`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := $(VENV)/.installed-extras

.PHONY: reproduce lint test test-all site student lab clean

# constraints.txt pins the exact set the course is tested with (torch 2.13.0, the CPU build, …).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[course,test]'
	touch $(STAMP)

## Execute every notebook headless, regenerate figures/, print the report of checks and numbers.
reproduce: $(STAMP)
	$(PY) -m qatcore reproduce

# The default install above is the library, the course (JupyterLab, widgets, the notebook runners,
# qonnx) and the test tools: all that `make reproduce` and `make test` need. make test-all, make site
# and make student also use the optional extras (the foreign libraries the interop tests drive, the
# website's Sphinx, nbgrader for the exercises).
$(EXTRAS): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[course,test,interop,docs,teach]'
	touch $(EXTRAS)

## ruff (lint, with RUF100 and the complexity limit), ruff format --check, and mypy over qatcore/.
lint: $(STAMP)
	$(PY) -m ruff check qatcore tests bench
	$(PY) -m ruff format --check qatcore tests bench
	$(PY) -m mypy qatcore

## The fast tier (about 3 min of pytest): lint, unit and property tests (a quarter of the examples), strict nbval over notebooks/.
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -n 2 --dist loadfile --durations=15

## Everything (about 30 min, what CI runs after the two commands): the fast tier with full property profiles, the notebooks on an
## emulated other CPU, one machine twice, JupyterLab in Chromium, torchrun/DDP.
test-all: $(EXTRAS)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -n 2 --dist loadfile -m "" --hypothesis-profile=ci --durations=15

## The course as a static website in build/site/ (offline; the notebooks' stored outputs, not re-run).
site: $(EXTRAS)
	$(PY) -m qatcore.course.site --out build/site

## Student copies of the notebooks in build/student/: nbgrader's ClearSolutions and ClearOutput.
student: $(EXTRAS)
	$(PY) -m qatcore.course.student --out build/student

## JupyterLab on the course.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build
