# The README's two commands. Everything installs into ./.venv. constraints.txt pins torch==2.13.0
# (on this project's machines that resolves to the CPU build; on PyPI's Linux index it is the
# CUDA build: see docs/getting-started.md for choosing either).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt
ARGS ?=
# BROWSER=0 runs the suite without the real-browser tests (where Chromium cannot be installed).
BROWSER ?= 1
CHROMIUM ?= $(or $(CNN_MNIST_CHROMIUM),$(shell command -v chromium 2>/dev/null),/usr/bin/chromium)

.PHONY: run test docs figures notebook notebook-outputs install install-test chromium clean

# Install (with the export, serve and robustness extras), fetch and verify MNIST, train the tutorial recipe,
# evaluate on the test set.
run: install
	$(BIN)/cnn-mnist train $(ARGS)

# Install the test tools and run the whole suite: real-MNIST, real-browser and docs tests included.
ifeq ($(BROWSER),0)
test: install-test
	$(BIN)/python -m pytest -m "not browser" $(ARGS)
else
test: install-test chromium
	CNN_MNIST_REQUIRE_BROWSER=1 CNN_MNIST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest $(ARGS)
endif

# Serve the documentation site on http://127.0.0.1:8000, rebuilt as the pages change, after
# remaking the figures of "How the network reads a digit".
docs: install-test figures
	$(BIN)/mkdocs serve

# Those figures: `cnn-mnist explain` on three test digits, with a model of the fast preset trained
# into runs/docs-model the first time (about a minute here).
FIGURES := docs/figures/explain
figures: install
	@[ -d runs/docs-model ] || $(BIN)/cnn-mnist train -q --preset fast --model-dir runs/docs-model
	$(BIN)/cnn-mnist explain -q 0 1 8 --model-dir runs/docs-model --output $(FIGURES)

# The tutorial notebook in JupyterLab, from the venv (the notebook extra); it opens in a browser.
# JupyterLab refuses root (a container's usual user) unless told it is meant.
notebook: $(VENV)/.installed-notebook
	$(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/tutorial.ipynb

# notebooks/tutorial.ipynb made again from its percent script (notebooks/tutorial.py, the one to
# edit) and run at the tutorial's 20,000 steps in a fresh folder, so that the docs show real
# outputs: about 5 minutes here.
notebook-outputs: $(VENV)/.installed-notebook
	$(BIN)/jupytext --to ipynb --execute --run-path "$$(mktemp -d)" notebooks/tutorial.py

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[export,serve,robustness]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

$(VENV)/.installed-notebook: $(VENV)/.installed
	$(PIP) -e '.[notebook]'
	touch $@

# Debian's Chromium for the browser tests (Playwright cannot download its own browsers here):
# installed with apt-get as root or with password-less sudo; otherwise one line says what to do.
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	    if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	    else echo "make test: no Chromium at $(CHROMIUM) for the browser tests; install it (sudo apt-get install chromium), or run the suite without them: make test BROWSER=0" >&2; exit 1; fi; \
	    if ! command -v apt-get >/dev/null 2>&1; then \
	        echo "make test: no Chromium at $(CHROMIUM) and no apt-get to install it; install Chromium and set CHROMIUM=/path/to/chromium, or run the suite without the browser tests: make test BROWSER=0" >&2; exit 1; fi; \
	    echo "make test: installing Debian's chromium for the browser tests (about 20 s)"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null || { \
	        echo "make test: could not install chromium; install it by hand, or run: make test BROWSER=0" >&2; exit 1; }; \
	    [ -x "$(CHROMIUM)" ] || { echo "make test: Debian's chromium is installed, but CHROMIUM=$(CHROMIUM) is not there; unset it or point it at /usr/bin/chromium" >&2; exit 1; }; \
	fi

clean:
	rm -rf $(VENV) runs site
