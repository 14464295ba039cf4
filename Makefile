# `make run` runs the main job, `make test` the test suite. Each creates .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two pytest workers, each taking a whole test module at a time, in the order the suite lists them
# (tests/conftest.py puts the end-to-end modules first). Run serially, the suite left the two cores
# idle a third of the time (busy 0.65 of them), which the other worker fills. TEST_WORKERS= runs serially.
TEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: run test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,dashboard]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python jobs/main.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(TEST_WORKERS) $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
