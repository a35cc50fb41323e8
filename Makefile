# Quick start: `make run` (whole local stack) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
# Install sets (requirements/*.txt, each also a pyproject extra and read by infra/userdata.py).
# `make run` installs RUN_SETS only: no torch, no test tools (tests/test_install_sets.py resolves
# them with pip to prove it). `make test` adds TEST_SETS to the same .venv; `make install-torch`
# adds torch alone (IMGREC_RUNTIME=torch, the other registry models). Neither removes anything,
# so `make run` keeps working after them without reinstalling.
RUN_SETS := requirements/worker.txt requirements/web.txt requirements/local.txt requirements/model.txt
TORCH_SETS := requirements/torch.txt
TEST_SETS := $(TORCH_SETS) requirements/dev.txt
# One stamp per level, named by its files' contents: an edited set reinstalls that level only.
stamp = $(VENV)/.installed-$(1)-$(shell cat $(2) | sha1sum | cut -c1-12)
RUN_STAMP := $(call stamp,run,$(RUN_SETS))
TORCH_STAMP := $(call stamp,torch,$(RUN_SETS) $(TORCH_SETS))
TEST_STAMP := $(call stamp,test,requirements.txt $(RUN_SETS) $(TEST_SETS))

.PHONY: install install-torch install-test model browser run test test-reliability bench lint provision status \
	teardown moto clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# The run sets, then the default model's ONNX artifact, built without torch (app_tier/lite0_onnx.py).
$(RUN_STAMP): $(RUN_SETS) | $(PY)
	$(PIP) $(addprefix -r ,$(RUN_SETS))
	$(PY) -m app_tier.build_model
	@rm -f $(VENV)/.installed-run-*; touch $@

$(TORCH_STAMP): $(RUN_STAMP) $(TORCH_SETS)
	$(PIP) $(addprefix -r ,$(RUN_SETS) $(TORCH_SETS))
	@rm -f $(VENV)/.installed-torch-*; touch $@

# Everything in one resolve (requirements.txt includes every set), so pins stay consistent.
$(TEST_STAMP): $(RUN_STAMP) requirements.txt $(TEST_SETS)
	$(PIP) -r requirements.txt
	@rm -f $(VENV)/.installed-test-*; touch $@

install: $(RUN_STAMP)

install-torch: $(TORCH_STAMP)

install-test: $(TEST_STAMP)

# Rebuild the default model's artifact (after a change to requirements/model.txt's weights or onnx pins).
model: install
	$(PY) -m app_tier.build_model --force

# Headless Chromium for the browser tests (Debian's package); skipped where apt is unavailable.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium not installed and cannot install it here: browser tests will be skipped"; fi; }

run: install
	$(PY) -m infra up

test: install-test browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-reliability: install-test
	$(PY) -m pytest -m reliability tests/reliability $(PYTEST_ARGS)

bench: install
	$(PY) -m tests.bench.bench_stack

lint: install-test
	$(VENV)/bin/ruff check .

provision status teardown: install
	$(PY) -m infra $@

moto: install
	$(PY) -m infra moto

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache
