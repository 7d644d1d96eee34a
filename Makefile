# The workbook's commands. `make run` sets up and runs every notebook headless; `make test` runs the tests.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PROFILE ?= auto
DATA   ?=
ARGS   ?=

.PHONY: install install-dev run test test-fast test-browser lab clean-outputs

# pip byte-compiles what it installs on one core (~70 s of the ~100 s install on a 2-core machine); compileall does it
# on every core and skips the packages' own test suites (~20 s). A file that does not compile is skipped, as pip does.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	@$(PY) -m compileall -q -j 0 -x '/tests?/|/testing/_internal/' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
	$(PY) -m pip install -q --no-deps -e .
	@git rev-parse --git-dir >/dev/null 2>&1 && $(VENV)/bin/nbstripout --install || true
	@touch $(STAMP)

install: $(STAMP)      ## what make run and make lab need (requirements.txt)

install-dev: $(DEV_STAMP)  ## ... and what make test adds (requirements-dev.txt)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $(DEV_STAMP)

run: install          ## execute notebooks 01..06 headless into outputs/executed/ (DATA=folder, ARGS="-p resolution=32")
	$(PY) -m helpers.notebooks --profile $(PROFILE) $(if $(DATA),--data-dir "$(DATA)") $(ARGS)

test: $(DEV_STAMP)    ## unit tests, notebooks in smoke mode, the browser test
	$(PY) -m pytest -q $(ARGS)

test-fast: $(DEV_STAMP) ## unit tests only
	$(PY) -m pytest -q -m "not notebook and not browser and not slow" $(ARGS)

test-browser: $(DEV_STAMP)
	$(PY) -m pytest -q -m browser $(ARGS)

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-outputs:
	rm -rf outputs/executed outputs/cache
