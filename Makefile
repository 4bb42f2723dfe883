# tickscope: `make demo` and `make test` work on a fresh Debian machine with only
# python3: they create .venv, install what they need, and run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The 20 slowest tests are listed at the end: the suite's budget is 15 minutes on 2 cores.
PYTEST_ARGS ?= --durations=20

.PHONY: help demo test lint typecheck rules pytest system-deps venv bench clean docs fuzz dashboards dashboards-screenshots image

help:
	@echo "make demo    start the sidecar (and, with the shim, the demo engine) and print where to look"
	@echo "make test    install what the tests need (Debian packages too) and run lint, types and tests"
	@echo "make bench   run every benchmark in bench/ and write docs/performance.md with its plots"
	@echo "make rules   check the alert rules and run their promtool unit tests"
	@echo "make fuzz    fuzz the receivers for FUZZ_MINUTES (default 10); new crashers go to tests/fuzz/corpus/"
	@echo "make docs    regenerate the generated parts of docs/"
	@echo "make dashboards  regenerate dashboards/*.json, the rules' dashboard_url and docs/dashboards.md"
	@echo "make dashboards-screenshots  redo docs/img/dashboards/*.png from the live demo"
	@echo "make image   build the sidecar's container image (BASE=... for another base image)"

$(BIN)/python:
	@scripts/make-venv.sh "$(PYTHON)" "$(VENV)"

# Both distributions, editable: the sidecar (tickscope, with the dev tools) and the
# engine's shim (tickscope-shim, with ccxt through its `instruments` extra). The tests
# use the shim's OpenTelemetry SDK exporters as real clients of the sidecar.
$(STAMP): pyproject.toml shim/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e './shim[instruments]'
	@touch $@

venv: $(STAMP)

# Debian packages (Prometheus, Alertmanager, node_exporter; Node.js for the
# dashboards' schema check; podman, runc and debootstrap for the image test) and the
# npm packages of dashboards/schema (lock file).
system-deps: | $(BIN)/python
	@scripts/install-system-deps.sh
	@scripts/install-node-deps.sh
	@scripts/install-container-deps.sh
	@scripts/install-helm.sh $(VENV)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that must fail, never pass quietly.
pytest: $(STAMP) system-deps
	@rc=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The alert rules' checks, on their own (tests/test_alert_rules.py runs them too).
rules: system-deps
	cd alert-rules && promtool check rules *.rules.yml && promtool test rules tests/*.test.yml
	amtool check-config alert-rules/alertmanager.example.yml

test: lint typecheck rules pytest

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The longer fuzzing run (make test runs a fixed-seed minute of it, tests/test_fuzz.py).
FUZZ_MINUTES ?= 10
fuzz: $(STAMP) system-deps
	$(BIN)/python tests/fuzz/run_long.py --minutes $(FUZZ_MINUTES)

# Every benchmark beside its baseline, and docs/performance.md with its plots
# (bench/report.py runs the other bench/bench_*.py too and appends their output).
bench: $(STAMP) system-deps
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info

# The dashboards are code (dashboards/tickscope_dashboards/); this writes the JSON,
# the alert rules' dashboard_url annotations and docs/dashboards.md's panel tables.
dashboards: $(STAMP)
	PYTHONPATH=dashboards $(BIN)/python -m tickscope_dashboards
	$(BIN)/python scripts/sync-chart-files.py

dashboards-screenshots: $(STAMP) system-deps
	$(BIN)/python scripts/dashboard_screenshots.py

# The sidecar's image, tickscope:<version>: podman when installed, else docker (BuildKit).
# No registry reachable: make image BASE=$$(scripts/build-base-image.sh)
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
CONTAINER_ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= tickscope:$(VERSION)
SOURCE_URL ?= $(or $(shell git remote get-url origin 2>/dev/null),https://git.example.com/tickscope/tickscope)
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
comma := ,
IMAGE_BUILD_FLAGS := $(if $(filter podman,$(notdir $(CONTAINER_ENGINE))),--isolation=chroot) \
	$(if $(BASE),--build-arg BASE=$(BASE)) \
	$(if $(CA_BUNDLE),--secret id=ca-certificates$(comma)src=$(CA_BUNDLE))

image:
	$(CONTAINER_ENGINE) build $(IMAGE_BUILD_FLAGS) --build-arg VERSION=$(VERSION) \
		--build-arg SOURCE_URL=$(SOURCE_URL) --tag $(IMAGE) .

docs: $(STAMP)
	$(BIN)/python scripts/update-config-doc.py
	$(BIN)/python scripts/alerts_table.py
	PYTHONPATH=dashboards $(BIN)/python -m tickscope_dashboards
	$(BIN)/python scripts/sync-chart-files.py
	$(BIN)/python scripts/chart_values_doc.py
