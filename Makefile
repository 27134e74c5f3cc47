# The project's verbs. Each one does its own set-up on a fresh machine.
#   make test   environment from the lock file, PgBouncer if missing (and a second, built once,
#               that tracks prepared statements), lint, type check, tests
#   make run    the API on 127.0.0.1:8000 (PORT overrides) over an embedded PostgreSQL in ./.data
#   make image  the production image (deploy/Dockerfile); needs a Docker engine
#   make backup        a dump of the database into backups/ (compose's when it runs, else make run's)
#   make restore FILE=backups/...  restore one (FORCE=1 replaces a database that holds tables)
#   make compose-env   a .env for compose with random secrets (refuses to overwrite one)
#   make compose-test  compose.yaml built, started, walked through and removed; needs Docker
#   make bench  the API's speed on the make-run stack, as one table (BENCH_ARGS="--help" lists options)
#   make bench-compose  the same on compose.yaml's stack, PgBouncer's auth arrangements compared; needs Docker
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
BENCH_ARGS ?=

.PHONY: backup restore compose-env env pgbouncer pgbouncer-tracking wrk lint format typecheck test run image compose-test bench bench-compose hash-benchmark clean
IMAGE ?= storefront-api:local

# uv from pip when absent; on a Debian system Python (PEP 668) into the user's site.
env:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv 2>/dev/null \
	  || $(PYTHON) -m pip install --quiet --disable-pip-version-check --user --break-system-packages uv
	@$(UV) sync --frozen --quiet

# A tool from the distribution's packages when it is missing: as root, or through password-less
# sudo, else the command to run. $(1) the package, $(2) its name in messages, $(3) the shell test
# that finds it installed, $(4) anything to run after installing it.
define apt_install
if $(3); then exit 0; fi; \
if ! command -v apt-get >/dev/null 2>&1; then \
  echo "$(2) is missing and this is not a Debian-like machine: install $(1) with your package manager."; exit 1; \
fi; \
if [ "$$(id -u)" = 0 ]; then sudo=""; \
elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
else echo "$(2) is missing. Install it with: sudo apt-get update && sudo apt-get install -y $(1)"; exit 1; fi; \
echo "Installing $(2) (apt-get)..."; \
$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(1) >/dev/null$(if $(4),; \
$(4))
endef

PGBOUNCER_FOUND := command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
PGBOUNCER_SERVICE_OFF := echo "The project starts its own PgBouncer; disabling the package's system service (port 6432)."; \
  $$sudo systemctl disable --now pgbouncer >/dev/null 2>&1 || true

pgbouncer:
	@$(call apt_install,pgbouncer,PgBouncer,$(PGBOUNCER_FOUND),$(PGBOUNCER_SERVICE_OFF))

# A second PgBouncer, one that tracks prepared statements (1.21 and later), as compose.yaml's and
# the Kubernetes manifests' do: the suite also runs the API through it with the statement cache
# on. Debian 12 packages 1.18, so Debian 13's 1.24.1 is built from Debian's source archive
# (checksum pinned; about 10 s) into .data, once.
PGBOUNCER_TRACKING_VERSION := 1.24.1
PGBOUNCER_TRACKING_SHA256 := da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0
PGBOUNCER_TRACKING := $(CURDIR)/.data/pgbouncer-$(PGBOUNCER_TRACKING_VERSION)
PGBOUNCER_TRACKING_BUILT := [ -f "$(PGBOUNCER_TRACKING)/built" ]
PGBOUNCER_BUILD_TOOLS := $(PGBOUNCER_TRACKING_BUILT) || { command -v cc && command -v make \
  && command -v curl && command -v pkg-config && [ -f /usr/include/event2/event.h ] \
  && [ -f /usr/include/openssl/ssl.h ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; } >/dev/null 2>&1

# After `pgbouncer`: two apt-get runs at once (make -j) would fight over dpkg's lock.
pgbouncer-tracking: pgbouncer
	@$(call apt_install,build-essential ca-certificates curl pkg-config libevent-dev libssl-dev,PgBouncer's build tools,$(PGBOUNCER_BUILD_TOOLS))
	@$(PGBOUNCER_TRACKING_BUILT) || tests/build-pgbouncer.sh $(PGBOUNCER_TRACKING_VERSION) \
	  $(PGBOUNCER_TRACKING_SHA256) "$(PGBOUNCER_TRACKING)"

# wrk: the HTTP load generator of make bench.
wrk:
	@$(call apt_install,wrk,wrk,command -v wrk >/dev/null 2>&1)

lint: env
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .

format: env
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: env
	$(UV) run --frozen mypy

test: env pgbouncer pgbouncer-tracking lint typecheck
	PGBOUNCER_TRACKING_BINARY="$(PGBOUNCER_TRACKING)/bin/pgbouncer" \
	  $(UV) run --frozen pytest --cov --cov-report=term $(PYTEST_ARGS)

run: env
	@$(UV) run --frozen python -m devstack serve

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -f deploy/Dockerfile -t $(IMAGE) --build-arg VERSION=$(VERSION) \
	  --build-arg GIT_SHA=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .

backup: env
	@$(UV) run --frozen python -m devstack backup $(if $(TARGET),--target $(TARGET))

restore: env
	@test -n "$(FILE)" || { echo "make restore FILE=backups/<a dump> [FORCE=1] [TARGET=compose|local]"; exit 2; }
	@$(UV) run --frozen python -m devstack restore "$(FILE)" $(if $(TARGET),--target $(TARGET)) $(if $(filter 1,$(FORCE)),--force)

compose-env: env
	@if [ -e .env ]; then echo ".env exists; move it away to make a new one."; exit 1; fi
	@umask 077 && $(UV) run --frozen python -m api compose-env > .env.new && mv .env.new .env
	@echo "wrote .env (0600): ENVIRONMENT=production, random SECRET_KEY and database passwords"

compose-test: env
	STOREFRONT_COMPOSE_TEST=1 $(UV) run --frozen pytest tests/deploy/test_compose_stack.py $(PYTEST_ARGS)

bench: env pgbouncer wrk
	@$(UV) run --frozen python -m bench $(BENCH_ARGS)

bench-compose: env wrk
	@$(UV) run --frozen python -m bench.compose $(BENCH_ARGS)

hash-benchmark: env
	@$(UV) run --frozen python -m devstack hash-benchmark

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
