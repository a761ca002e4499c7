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

.PHONY: demo rig-demo sites-demo test bench venv ref prometheus-bin chromium-bin params-docs clean

# The element-contract examples are packages of their own, installed beside spikewire as a lab's would be.
EXAMPLES := examples/lif_plugin examples/linear_crossbar

$(STAMP): pyproject.toml $(EXAMPLES:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m pip install --quiet --no-deps $(EXAMPLES:%=-e %)
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

# The monitoring tests run a real Prometheus server (Debian's package; services do not auto-start).
prometheus-bin:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else echo "the monitoring tests need Prometheus: sudo apt-get install prometheus" >&2; fi; }

# The dashboard's tests drive a real headless browser: Debian's chromium, through Playwright's bundled driver
# (never a browser download of Playwright's own).
chromium-bin:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the dashboard tests need Chromium: sudo apt-get install chromium" >&2; fi; }

# The loop closed through a (mock) recording rig over LSL: rig-sim in the background, then the network.
rig-demo: $(STAMP)
	$(VENV)/bin/spikewire rig-sim --channels 4 --duration 40 & \
	  $(VENV)/bin/spikewire run launch/networks/rig_loop.toml --duration 20; status=$$?; wait; exit $$status

# The paper's loop as three sites (three `spikewire run --site` processes, CURVE between them), as three
# labs would run it; here all on 127.0.0.1. Zurich's summary is printed; the others' are in sessions/.
SITES_NET = launch/networks/paper_sites.toml
sites-demo: $(STAMP)
	$(VENV)/bin/spikewire keygen --network $(SITES_NET)
	$(VENV)/bin/spikewire run $(SITES_NET) --site southampton --duration 20 > sessions-southampton.log 2>&1 & s1=$$!; \
	  $(VENV)/bin/spikewire run $(SITES_NET) --site padova --duration 20 > sessions-padova.log 2>&1 & s2=$$!; \
	  $(VENV)/bin/spikewire run $(SITES_NET) --site zurich --duration 20; status=$$?; \
	  wait $$s1 || status=1; wait $$s2 || status=1; \
	  echo; echo "southampton and padova printed their summaries to sessions-southampton.log, sessions-padova.log"; \
	  exit $$status

test: $(STAMP) $(REF_STAMP) prometheus-bin chromium-bin
	$(PY) -m pytest -q

# The parameter reference, made from the settings schema (spikewire's own kinds: no installed package's). A test
# (tests/test_params.py) fails while the committed file differs from what this makes.
params-docs: $(STAMP)
	$(PY) -m spikewire.config.params --builtin --format markdown > docs/parameters.md.tmp
	mv docs/parameters.md.tmp docs/parameters.md

bench: $(STAMP) $(REF_STAMP)
	$(VENV)/bin/spikewire bench hop
	$(VENV)/bin/spikewire bench demo

clean:
	rm -rf $(VENV) $(REF) build *.egg-info
