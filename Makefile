# The two commands a new machine needs: `make demo` and `make test`. Both create .venv on first use; while
# editing, `make test-fast` checks in under two minutes what needs no Airflow process.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SDK_INSTALLED := .venv-sdk/.installed
LINTED := $(wildcard airflow_flowruns tests example_dags benchmarks scripts e2e)
# Lint rules, then formatting, for `make lint` and `make test-fast`.
RUFF := $(BIN)/ruff check $(LINTED) && $(BIN)/ruff format --check $(LINTED)
PIP_INSTALL := $(BIN)/python -m pip install --quiet -c constraints.txt
# What `make docs`, `make dist` and `make bench` add to .venv on first use. `make lock` installs them all before
# it pins, so constraints.txt holds the versions of these tools too.
DOCS_TOOLS := -e ".[docs]"
DIST_TOOLS := build twine
BENCH_TOOLS := matplotlib
# PostgreSQL's and Redis's Python clients and the Celery provider, for `make e2e-distributed`; `make bench` needs
# the PostgreSQL drivers of them (the real triggerer runs on PostgreSQL).
DISTRIBUTED_REQUIREMENTS := -r e2e/distributed/requirements.txt
# The clients honour the proxies the environment names; the emulator and Airflow of every target are on loopback,
# so loopback is kept off any proxy whatever the machine sets (urllib, httpx and aiohttp read both spellings).
comma := ,
space := $() $()
export NO_PROXY := $(subst $(space),$(comma),$(strip $(subst $(comma),$(space),$(NO_PROXY) $(no_proxy)) 127.0.0.1 localhost ::1))
export no_proxy := $(NO_PROXY)

.PHONY: install demo test test-fast e2e e2e-distributed e2e-watcher e2e-backfill e2e-review compat dist docs ui lint format bench lock clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e ".[test]"
	touch $@

# The vendors' SDKs, as independent clients of the emulator in tests, in a virtualenv of their own.
$(SDK_INSTALLED): tests/vendor_sdk/requirements.txt
	test -x .venv-sdk/bin/python || $(PYTHON) -m venv .venv-sdk
	.venv-sdk/bin/python -m pip install --quiet -r tests/vendor_sdk/requirements.txt
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/python scripts/demo.py

lint: $(INSTALLED)
	$(RUFF)
	$(BIN)/mypy --strict airflow_flowruns
	$(BIN)/mypy tests example_dags scripts benchmarks e2e

# Every test, unit and integration (the markers in pyproject.toml), after lint: the unit tests four at a time, as
# test-fast runs them, then the integration tests two at a time, so no unit test's timing competes with an
# Airflow subprocess.
test: lint $(SDK_INSTALLED)
	$(BIN)/python -m pytest -m unit -n 4
	$(BIN)/python -m pytest -m integration -n 2

# ruff and the unit tests: no Airflow process, no other Python, no vendor SDK; mypy waits for `make test`.
# Four pytest processes on two cores: the unit tests mostly wait on sockets (timeouts, Retry-After, polls).
test-fast: $(INSTALLED)
	$(RUFF)
	$(BIN)/python -m pytest -m unit -n 4

# A real Airflow (SQLite, one process per component) over the emulator in fault mode: 200 mapped tasks,
# a killed triggerer and worker, then runs, task states and secrets checked. 8 to 10 minutes; see e2e/run.py.
# Then the real-triggerer benchmark at 10 tasks (about 2 minutes; see e2e/test_real_triggerer_smoke.py).
e2e: $(INSTALLED)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m e2e
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m pytest -q e2e/test_real_triggerer_smoke.py

# A production-shaped Airflow on one machine: PostgreSQL and Redis (Debian's packages, installed when missing),
# the CeleryExecutor with two workers, two triggerers alive at once, 300 documents on TableFlow, Extend and
# Noxus; kills a triggerer and a worker and restarts Redis, then checks. Flags: E2E_DISTRIBUTED_ARGS="--files 150".
e2e-distributed: $(INSTALLED)
	$(PIP_INSTALL) $(DISTRIBUTED_REQUIREMENTS)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m e2e.distributed $(E2E_DISTRIBUTED_ARGS)

# The asset watcher under a real Airflow: 100 runs started outside Airflow over 2.5 minutes, the triggerer
# killed with SIGKILL half-way; every finished run must reach the consumer DAG. About 5 minutes; see e2e/watcher.py.
e2e-watcher: $(INSTALLED)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m e2e.watcher

# FlowRunBatchOperator under a real Airflow: one DAG run of three deferrable batch tasks (TableFlow, Extend, Noxus)
# over 1,000 documents, some failing on the platform, with a worker killed mid-submission and a triggerer killed
# with SIGKILL; every document's runs, the manifests, task states and secrets checked. 12 to 17 minutes; CI runs
# 600 documents, 6 to 9. See e2e/backfill.py. Flags: E2E_BACKFILL_ARGS="--documents 600 --seed 7".
e2e-backfill: $(INSTALLED)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m e2e.backfill $(E2E_BACKFILL_ARGS)

# Review in Airflow under a real Airflow: one DAG run of on_review="airflow" tasks (FlowRunOperator, and a batch's
# review task) over 40 runs kept in review on TableFlow, Extend and Noxus, answered through the REST API (accept,
# edits, reject, wait), ended in the vendor's app, or both at once; Airflow's Required Actions page checked in
# headless Chromium (screenshots in ui-screenshots/review/); task states, XCom, landed outputs, Required Actions,
# one run per task and secrets checked, and the provider's metrics received by a StatsD listener on loopback from
# the workers and the triggerer. 2 to 3.5 minutes (109 s, 158 s, 181 s); see e2e/review.py.
# Flags: E2E_REVIEW_ARGS="--runs 20 --seed 7".
e2e-review: $(INSTALLED)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
	$(PIP_INSTALL) -r e2e/review_requirements.txt
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m e2e.review $(E2E_REVIEW_ARGS)

# The provider in Airflow's UI, in headless Chromium driven by Selenium: each platform's Add Connection form and a
# finished task's "Open flow run" link, with screenshots in ui-screenshots/. Debian's chromium and chromium-driver
# are installed when missing. See e2e/ui.py.
ui: $(INSTALLED)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python -m e2e.ui

# The compatibility subset of the tests on Airflow 3.1 and 3.2 (Python 3.11) and on Airflow 3.3 with Python 3.12
# and 3.13, each in its own virtualenv under .venv-compat/; an interpreter the machine lacks is skipped with a
# message. Flags: make compat COMPAT_ARGS="--only airflow-3.1-python-3.11". See scripts/compat.py.
compat:
	$(PYTHON) scripts/compat.py $(COMPAT_ARGS)

# The sdist and wheel in dist/, checked by twine and scripts/check_dist.py; then the wheel, installed into a
# fresh virtualenv (.venv-dist) with nothing but its `examples` extra (the SQLite provider the invoices demo
# loads into; versions pinned by constraints.txt), runs the demo DAGs from outside the source tree.
dist: $(INSTALLED)
	$(PIP_INSTALL) $(DIST_TOOLS)
	rm -rf dist build .venv-dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(BIN)/python scripts/check_dist.py
	$(PYTHON) -m venv .venv-dist
	.venv-dist/bin/python -m pip install --quiet -c constraints.txt "$$(echo dist/*.whl)[examples]"
	cd /tmp && $(CURDIR)/.venv-dist/bin/python -c "import airflow_flowruns as p; assert '.venv-dist' in p.__file__, p.__file__"
	cd /tmp && $(CURDIR)/.venv-dist/bin/python $(CURDIR)/scripts/demo.py

# The documentation site in site/, built with --strict: a broken link, snippet or API reference fails it.
docs: $(INSTALLED)
	$(PIP_INSTALL) $(DOCS_TOOLS)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The seven benchmarks with their baselines (see benchmarks/README.md for how long each takes); flags:
# make bench BENCH_ARGS="--sizes 1000 --only density", BENCH_ARGS="--only real_triggerer --real-sizes 1000".
# The real triggerer runs on a PostgreSQL server of its own (Debian's package, installed when missing);
# BENCH_ARGS="--real-db sqlite" runs it on SQLite instead.
bench: $(INSTALLED)
	$(PIP_INSTALL) $(BENCH_TOOLS) $(DISTRIBUTED_REQUIREMENTS)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

format: $(INSTALLED)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

# Pins every version in .venv, the tools of the targets above included (Selenium, MkDocs and its plugins, build,
# twine, pre-commit, matplotlib), so a fresh clone installs what the tests and targets last passed with. Run it
# after those passed; versions already pinned stay, a tool not pinned yet gets its newest.
lock: $(INSTALLED)
	$(PIP_INSTALL) $(DOCS_TOOLS) $(DIST_TOOLS) $(BENCH_TOOLS)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) .venv-sdk .venv-compat .venv-dist dist build site .pytest_cache .ruff_cache .mypy_cache
