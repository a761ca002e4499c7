# spikewire: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Keep LSL discovery on this machine unless the caller says otherwise.
export LSLAPICFG ?= $(CURDIR)/streams/lsl_api.cfg

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m spikewire.nodes.kernels
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spikewire run launch/networks/paper_loop.toml --duration 20

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/spikewire bench hop

clean:
	rm -rf $(VENV) build *.egg-info
