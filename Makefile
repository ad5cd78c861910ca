# Trainyard: `make demo` trains the example on this machine, `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export GX_ANALYTICS_ENABLED := false

.PHONY: envs demo demo-stop test test-fast fuzz services lint bench bench-quick soak clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

## envs: the local backend's framework environments (one uv venv per framework version, from
## images/<framework>/requirements.txt; reused while their pins do not change). Needs the
## Python each framework runs on (3.11; 3.12 for JAX) installed (pyenv or the system's), or
## UV_PYTHON_DOWNLOADS=automatic to let uv fetch one. ENVS=jax:0.12 prepares one.
envs: $(VENV)/.installed
	$(BIN)/trainyard envs prepare $(ENVS)

## demo: start Airflow (FAB, generated passwords in .demo/credentials.json), train the digits
## example through Trainyard in the bubblewrap sandbox, show the result; installs bubblewrap
## with apt-get when it is missing and running as root (otherwise it says which command would)
demo: $(VENV)/.installed
	$(MAKE) envs ENVS=pytorch
	$(BIN)/python -m devkit.demo start

## demo-stop: stop the demo's Airflow, then its PostgreSQL
demo-stop: $(VENV)/.installed
	$(BIN)/python -m devkit.demo stop

## test: lint, type-check and run every test (end-to-end ones start real Airflow)
test: lint services envs
	$(BIN)/pytest -q

## test-fast: the tests that start no Airflow
test-fast: $(VENV)/.installed
	$(BIN)/pytest -q -m "not e2e"

## fuzz: the property-based suites (tests/fuzz) at 100,000 examples in all, unseeded; prints
## how many inputs were valid, rejected with a named field, or crashed (the bar: none)
fuzz: $(VENV)/.installed
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -p no:cacheprovider tests/fuzz

## bench: the benchmarks (real Airflow, about half an hour), one table per figure; see bench/RESULTS.md
bench: $(VENV)/.installed
	$(BIN)/python -m bench

## bench-quick: every benchmark once at tiny sizes (a CI smoke run; says nothing about speed)
bench-quick: $(VENV)/.installed
	$(BIN)/python -m bench --quick

## soak: the chaos soak (bench/soak.py): 30 minutes at each fault rate (one per job every 1, 2
## and 5 minutes) on the embedded default, then 30 minutes on the production-like deployment
## (PostgreSQL, Redis, Celery); tables appended to soak-results.md. `make test` runs a 3-minute
## profile (tests/bench/test_soak.py)
soak: services envs
	$(BIN)/python -m bench.soak --minutes 30 --fault-every 60 120 300 --markdown soak-results.md
	$(BIN)/python -m bench.soak --minutes 30 --fault-every 120 --production --markdown soak-results.md

## services: the Debian packages the tests need: the servers of the production-configuration
## test (PostgreSQL, Redis), the learners' sandbox (bubblewrap) and the browser of the job-page
## test (chromium, driven by Playwright, which never downloads one); installed with apt-get when
## missing and running as root
services:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null \
		&& command -v bwrap >/dev/null && command -v chromium >/dev/null; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server bubblewrap chromium; \
	else \
		echo "make test needs PostgreSQL, Redis, bubblewrap and chromium: sudo apt-get install postgresql redis-server bubblewrap chromium" >&2; \
		exit 1; \
	fi

## lint: ruff, mypy, and the import contracts between the layers (pyproject.toml)
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy trainyard operators dags plugins devkit examples tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
