# The two commands of the README: `make run` and `make test` (`make test-fast` while developing).
# Everything else is set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
DEMO_DATA := data
DEMO_DB := $(DEMO_DATA)/demo.duckdb

.PHONY: setup demo run test test-fast bench clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The pinned requirements are the lock; the project itself goes in editable, adding nothing.
	$(PY) -m pip install -q -r requirements-dev.txt
	@# nnunetv2 -> timm -> torchvision: PyPI's wheel fails to import beside the CPU torch
	@# ("operator torchvision::nms does not exist") and nothing of ours imports it.
	$(PY) -c "import torchvision" 2>/dev/null || $(PY) -m pip uninstall -y -q torchvision
	$(PY) -m pip install -q --no-deps -e .
	@# Plotly's static export (kaleido) and the browser tests need a Chrome.
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	    echo "warning: could not install chromium; figure export and browser tests will be skipped"; }
	@# The shipped reverse-proxy configuration (deploy/nginx.conf) is tested in a real nginx.
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx openssl >/dev/null) || \
	    echo "warning: could not install nginx; the reverse-proxy test will be skipped"; }
	touch $@

# The demo store, in the foreground (nothing to do once it is complete; resumes a stopped build).
demo: setup
	$(PY) -m agg2exp_core demo --data-dir $(DEMO_DATA)

# The dashboard at once; the demo store (unless DEMO_DB names another store) is built beside it
# by a process of its own that publishes each result as it completes and goes on when the
# dashboard stops (log: data/demo-build.log; README, "The demo").
run: setup
ifeq ($(DEMO_DB),$(DEMO_DATA)/demo.duckdb)
	$(PY) -m agg2exp_core demo --data-dir $(DEMO_DATA) --background
endif
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) -- --db $(DEMO_DB)

# The whole suite (what CI runs, .ci/run): about 18 minutes on 2 cores.
test: setup
	$(PY) -m pytest -q

# The developer's loop: no demo build, no training, no browser, no Ray (markers in pytest.ini).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser and not ray"

bench: setup
	$(PY) benchmarks/attribution_speed.py
	$(PY) benchmarks/kernelshap_speed.py
	$(PY) benchmarks/dashboard_render.py
	$(PY) benchmarks/comparison_speed.py

clean-demo:
	rm -rf $(DEMO_DATA)/demo $(DEMO_DATA)/artifacts $(DEMO_DB) $(DEMO_DB).writing $(DEMO_DB).writing.wal \
	  $(DEMO_DB).writing.seed $(DEMO_DB).lock $(DEMO_DATA)/demo-build.log $(DEMO_DATA)/demo.build.lock
