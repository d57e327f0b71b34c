# Set-up, demo and tests. Every target installs what it needs into .venv
# (and .venv-mxnet for the MXNet compatibility tests) from PyPI on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MXNET_VENV ?= .venv-mxnet
DEMO_DIR ?= demo

.PHONY: setup mxnet-env arm-env demo test test-fast clean

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

# QEMU user-mode emulation and an aarch64 sysroot for `verify-arm` and its
# tests. Only Debian's qemu-user-static goes into the system (as root, or
# it says what to install); the sysroot is built without root into the
# per-user cache (~/.cache/mfn-tf/arm, or $$MFN_TF_ARM_CACHE).
arm-env: setup
	@command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y --no-install-recommends qemu-user-static || \
	      { apt-get update && apt-get install -y --no-install-recommends qemu-user-static; }; \
	  else \
	    echo "qemu-aarch64-static not found: sudo apt-get install qemu-user-static" >&2; exit 1; \
	  fi; }
	$(PY) cli.py verify-arm --setup-only --no-progress

demo: setup
	$(PY) cli.py demo --out $(DEMO_DIR) --overwrite

test: setup mxnet-env arm-env
	MFN_TF_MXNET_PYTHON=$(abspath $(MXNET_VENV))/bin/python $(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) $(MXNET_VENV) $(DEMO_DIR) .pytest_cache
