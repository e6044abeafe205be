# The two commands the README gives. Each works on a fresh machine by itself: it installs
# what is missing (system packages, the Python package) and then runs runstream.
PYTHON ?= python3
RUNSTREAM = $(PYTHON) -m ingest.cli

.PHONY: setup up down test lint

setup:
	bash deploy/prereqs.sh
	$(PYTHON) -m pip install -q --disable-pip-version-check -e '.[dev]'

## The main job: bring the local stack up and print its endpoints.
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
