"""The HTTP API: ``app.py`` builds it from ``routes/`` and serves it (``runstream api``)."""
