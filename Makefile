# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the suite).
# Each creates .venv, installs torch==2.13.0 first (CPU wheel), then this package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test venv venv-dev system-deps bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base .ci/constraints.txt
	$(PIP) -c .ci/constraints.txt -e ".[all,dev]"
	touch $@

venv: $(VENV)/.base
venv-dev: $(VENV)/.dev

demo: venv
	$(VENV)/bin/jpeg-restore demo --output demo-output

# Qt needs an X server and its system libraries for the napari tests.
system-deps:
	@if ! command -v xvfb-run >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
		libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
		libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 >/dev/null; fi

test: venv-dev system-deps
	xvfb-run -a -s "-screen 0 1600x1200x24" $(PY) -m pytest -q

bench: venv-dev  ## bench/results/results.md (needs ../shared/datasets; ffmpeg for the spp column)
	$(PY) bench/results.py

clean:
	rm -rf $(VENV) demo-output build *.egg-info
