# One entry point for people and CI. `make demo` runs the main job, `make test` the tests;
# both install what they need first (Debian packages, then a virtualenv with the project).
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# libnginx-mod-stream: Debian builds the stream module (Nginx's accept gate) as a dynamic module.
APT_PACKAGES := postgresql pgbouncer redis-server redis-sentinel redis-tools nginx libnginx-mod-stream \
	prometheus
STACKS := launch growth scale
STACK ?= growth

.PHONY: setup system-packages lint test unit demo down clean

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

setup: system-packages $(BIN)/sikka-scaling

lint: $(BIN)/sikka-scaling
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not integration"

test: setup lint
	$(BIN)/pytest

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

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
