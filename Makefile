# spikewire: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Reference simulators for tests and benchmarks, in their own venv: Brian2 2.9 needs numpy < 2.4,
# which spikewire itself does not.
REF       := .venv-ref
REF_STAMP := $(REF)/.installed

# Keep LSL discovery on this machine unless the caller says otherwise.
export LSLAPICFG ?= $(CURDIR)/streams/lsl_api.cfg

.PHONY: demo test bench venv ref clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m spikewire.nodes.kernels
	touch $(STAMP)

$(REF_STAMP): Makefile
	$(PYTHON) -m venv $(REF)
	$(REF)/bin/python -m pip install --quiet --upgrade pip
	$(REF)/bin/python -m pip install --quiet "brian2==2.9.*" "numpy<2.4"
	touch $(REF_STAMP)

venv: $(STAMP)

ref: $(REF_STAMP)

demo: $(STAMP)
	$(VENV)/bin/spikewire run launch/networks/paper_loop.toml --duration 20

test: $(STAMP) $(REF_STAMP)
	$(PY) -m pytest -q

bench: $(STAMP) $(REF_STAMP)
	$(VENV)/bin/spikewire bench hop
	$(VENV)/bin/spikewire bench demo

clean:
	rm -rf $(VENV) $(REF) build *.egg-info
