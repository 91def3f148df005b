# One entry point for people and CI. `make demo` runs the main job, `make test` the tests;
# both install what they need first (Debian packages, then a virtualenv with the project).
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# libnginx-mod-stream: Debian builds the stream module (Nginx's accept gate) as a dynamic module.
# etcd-server, haproxy and python3-venv: Patroni's DCS, the router that follows its leader, and
# the system Python's venv that runs Patroni as the postgres account (scaling/local/patroni.py).
# chromium and chromium-driver: the status page's test in a real headless browser (selenium).
# Prometheus and the exporters `local up` runs; not Debian's prometheus-pgbouncer-exporter,
# which fails on PgBouncer 1.18's SHOW STATS (scaling/local/pgbouncer_exporter.py stands in).
APT_PACKAGES := postgresql pgbouncer redis-server redis-sentinel redis-tools nginx libnginx-mod-stream \
	prometheus prometheus-node-exporter prometheus-postgres-exporter \
	prometheus-redis-exporter prometheus-nginx-exporter etcd-server etcd-client haproxy python3-venv \
	chromium chromium-driver
# Patroni runs as the postgres account, which cannot reach a virtualenv under /root: its own
# venv, from the system Python, inside the project.
PATRONI_VENV ?= .venv-patroni
PATRONI_REQUIREMENTS := images/postgres-patroni/requirements.txt
STACKS := launch growth scale
STACK ?= growth

.PHONY: setup system-packages lint test unit demo down bench bench-readme bench-sync clean

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/sikka-scaling: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(PATRONI_VENV)/bin/patroni: $(PATRONI_REQUIREMENTS) | system-packages
	/usr/bin/python3 -m venv $(PATRONI_VENV)
	$(PATRONI_VENV)/bin/python -m pip install -q -r $(PATRONI_REQUIREMENTS)
	touch $@

setup: system-packages $(BIN)/sikka-scaling $(PATRONI_VENV)/bin/patroni

lint: $(BIN)/sikka-scaling
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not integration"

# The suite in TEST_WORKERS parallel workers (pytest-xdist): most of its time is spent
# waiting on real servers, so more workers than cores; each module, or phase shared by several
# modules, runs whole in one worker (tests/conftest.py). Then the tests marked `serial` (timings
# that parallel load breaks) alone. Both always run; either failing fails `make test`.
TEST_WORKERS ?= 4

test: setup lint
	@status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not serial" || status=$$?; \
	$(BIN)/pytest -m serial || status=$$?; \
	exit $$status

# Main job: validate, render and preview every stack, then run one phase for real on
# 127.0.0.1 (STACK=launch|growth|scale, default growth) and print where everything is.
demo: setup
	@for stack in $(STACKS); do \
	  $(BIN)/sikka-scaling validate $$stack && \
	  $(BIN)/sikka-scaling render $$stack --out out/$$stack && \
	  $(BIN)/sikka-scaling preview $$stack || exit 1; \
	done
	$(BIN)/sikka-scaling local up $(STACK)

down:
	$(BIN)/sikka-scaling local down $(STACK)

# Benchmarks print measured figures (ratios within one run); they assert nothing.
# `make bench STACK=launch`: the phase's capacity certificate (benchmarks/certificates/), then
# `make bench-readme` puts its figures in the README; `make bench-sync`: what synchronous
# replication costs a commit.
bench: setup
	$(BIN)/sikka-scaling bench $(STACK)

bench-readme: $(BIN)/sikka-scaling
	$(BIN)/python -m benchmarks.capacity.readme README.md

bench-sync: setup
	$(BIN)/python -m benchmarks.sync_commit

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
