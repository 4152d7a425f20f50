# The README's two commands. Everything installs into ./.venv; torch is pinned by
# constraints.txt so a fresh machine gets the CPU wheel, not a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
ARGS ?=

.PHONY: run test install install-test clean

# Download and verify MNIST, train the tutorial recipe, evaluate on the test set.
run: install
	$(BIN)/cnn-mnist train $(ARGS)

# Install the test tools and run the whole suite, real-data test included.
test: install-test
	$(BIN)/python -m pytest $(ARGS)

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) runs
