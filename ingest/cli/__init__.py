"""The ``runstream`` command line (``main.py``; ``python -m ingest.cli``)."""
