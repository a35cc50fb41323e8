# Quick start: `make run` (whole local stack) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Every role's requirement set (requirements/*.txt), all included by requirements.txt.
REQS := requirements.txt $(wildcard requirements/*.txt)
STAMP := $(VENV)/.installed-$(shell cat $(REQS) | sha1sum | cut -c1-12)

.PHONY: install browser run test test-reliability bench lint provision status teardown moto clean

$(STAMP): $(REQS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m app_tier.build_model
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

# Headless Chromium for the browser tests (Debian's package); skipped where apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium not installed and cannot install it here: browser tests will be skipped"; fi; }

run: install
	$(PY) -m infra up

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-reliability: install
	$(PY) -m pytest -m reliability tests/reliability $(PYTEST_ARGS)

bench: install
	$(PY) -m tests.bench.bench_stack

lint: install
	$(VENV)/bin/ruff check .

provision status teardown: install
	$(PY) -m infra $@

moto: install
	$(PY) -m infra moto

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache
