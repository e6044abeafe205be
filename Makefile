# The two commands the README gives. Each works on a fresh machine by itself: it installs
# what is missing (system packages, the Python package) and then runs runstream.
PYTHON ?= python3
RUNSTREAM = $(PYTHON) -m ingest.cli

.PHONY: setup demo up down test lint

setup:
	bash deploy/prereqs.sh
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

## The tests: lint, types, then unit and integration tests against the real stack.
test: setup lint
	$(RUNSTREAM) up
	$(PYTHON) -m pytest
