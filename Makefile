# The commands a new machine needs. Each installs what it needs first (scripts/bootstrap.sh, a no-op when done).
SHELL := /bin/bash
export DAGSTER_HOME := $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-all ui review bench bench-gates bootstrap system-deps

bootstrap:
	@bash scripts/bootstrap.sh

system-deps:              ## PostgreSQL server + Debian chromium/chromedriver for the review tests (no-op when present)
	@bash scripts/system_deps.sh

demo: bootstrap            ## generate + gate one demo batch end to end, print the summary
	@.venv/bin/synqa demo

test: bootstrap system-deps ## the default test run (what CI runs)
	@.venv/bin/python -m pytest -q

test-all: bootstrap system-deps       ## including slow tests and real-data measurements
	@.venv/bin/python -m pytest -q -m "slow or not slow"

ui: bootstrap              ## Dagster UI on http://127.0.0.1:3000
	@.venv/bin/dagster dev -h 127.0.0.1 -p 3000 -m synqa_dagster.definitions

review: bootstrap          ## the review web app on http://127.0.0.1:8765 (add a reviewer: .venv/bin/synqa review add-reviewer NAME)
	@.venv/bin/synqa review serve --host 127.0.0.1 --port 8765

bench: bootstrap           ## the whole funnel at 10k, 100k and 500k rows: wall, rows/s, peak RSS per stage, cost per row
	@.venv/bin/python benchmarks/bench_funnel.py --rows 10000 100000 500000

bench-gates: bootstrap     ## each gate alone at 100k and 500k rows (and datasketch's loop as the dedup baseline)
	@.venv/bin/python benchmarks/bench_gates.py --rows 100000 500000
