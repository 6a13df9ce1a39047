# make demo  - set up .venv (first time) and run the reference scenario
# make test  - set up .venv (first time) and run the test suite
# make bench - set up .venv and run the benchmarks (figures in bench/results/)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench soak clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c "import firmware.raid.parity as p; p.warm_up()"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/emu run configs/two-site.toml scenarios/demo.emu

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

soak: $(STAMP)
	EMU_SOAK_SEEDS=200 $(PY) -m pytest tests/e2e/test_campaign.py

clean:
	rm -rf $(VENV) build *.egg-info bench/results
