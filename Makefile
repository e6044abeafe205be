# The two commands the README gives. Each works on a fresh machine by itself: it installs
# what is missing (system packages, then this project into its own virtualenv, never the
# system's Python) and then runs runstream.
# The project's virtualenv (`make VENV=…` for another); `.venv/bin/runstream` afterwards.
VENV ?= .venv
PYTHON = $(VENV)/bin/python
RUNSTREAM = $(PYTHON) -m ingest.cli
# Where a test session writes the figures its reliability tests counted (tests/reliability.py).
RELIABILITY_JSON ?= $(or $(RUNSTREAM_HOME),$(HOME)/.runstream)/reliability/last.json

.PHONY: setup demo up down test lint studio-check reliability

setup:
	bash deploy/prereqs.sh
	bash deploy/venv.sh $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]'

## The main job: start the local stack and run the product page's example (a Ridge alpha
## sweep on the diabetes data), then print where to look.
demo: setup
	$(RUNSTREAM) demo

up: setup
	$(RUNSTREAM) up

down:
	$(RUNSTREAM) down

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

## The studio (studio/): its types and unit tests (vitest), and the committed build in
## ingest/api/studio_dist/ must be what its sources build to. Needs Node (20); without it
## this says so and is skipped (the Python tests still test the committed build).
studio-check:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "studio-check: skipped, no Node/npm here (the studio's unit tests and build check need them)"; \
	else \
		set -e; cd studio; \
		npm ci --no-audit --no-fund --loglevel=error; \
		npm run -s typecheck; \
		npx vitest run; \
		out=$$(mktemp -d); \
		npx vite build --outDir "$$out" --emptyOutDir --logLevel error; \
		if ! diff -r "$$out" ../ingest/api/studio_dist; then \
			echo "studio-check: ingest/api/studio_dist is not what studio/ builds to: run 'cd studio && npm run build' and commit it"; \
			rm -rf "$$out"; exit 1; \
		fi; \
		rm -rf "$$out"; \
	fi

## The tests: lint, types, the studio's checks, then unit and integration tests against
## the real stack.
test: setup lint studio-check
	$(RUNSTREAM) up
	RUNSTREAM_RELIABILITY_JSON="$(RELIABILITY_JSON)" $(PYTHON) -m pytest

## RELIABILITY.md's figures: run the tests that prove a guarantee (marker `reliability`),
## then render what they counted between RELIABILITY.md's figures markers (also when a
## test failed: its row says so; the exit status is pytest's).
reliability: setup
	$(RUNSTREAM) up
	rm -f "$(RELIABILITY_JSON)"
	RUNSTREAM_RELIABILITY_JSON="$(RELIABILITY_JSON)" $(PYTHON) -m pytest -m reliability; \
	status=$$?; \
	$(PYTHON) -m tests.reliability_render "$(RELIABILITY_JSON)" RELIABILITY.md && exit $$status
