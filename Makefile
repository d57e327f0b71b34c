# Set-up, demo and tests. Every target installs what it needs into .venv
# (and .venv-mxnet for the MXNet compatibility tests) from PyPI on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MXNET_VENV ?= .venv-mxnet
DEMO_DIR ?= demo

.PHONY: setup mxnet-env demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[convert,test]"
	# pnnx declares torch as a dependency but only its bundled binary is used.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt pnnx
	touch $@

# A separate environment with MXNet 1.9.1, which imports only with
# numpy < 1.24; used by tests that compare against the original framework.
mxnet-env: $(MXNET_VENV)/.installed

$(MXNET_VENV)/.installed:
	$(PYTHON) -m venv $(MXNET_VENV)
	$(MXNET_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MXNET_VENV)/bin/python -m pip install --quiet "mxnet==1.9.1" "numpy<1.24" pillow
	$(MXNET_VENV)/bin/python -c "import mxnet"
	touch $@

demo: setup
	$(PY) cli.py demo --out $(DEMO_DIR)

test: setup mxnet-env
	MFN_TF_MXNET_PYTHON=$(abspath $(MXNET_VENV))/bin/python $(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) $(MXNET_VENV) $(DEMO_DIR) .pytest_cache
