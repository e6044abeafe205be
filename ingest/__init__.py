"""Runstream's server side: one subpackage per role, in pipeline order.

- ``worker/``  the ingest worker: consume (``consumer.py``) → decode (``decode.py``) →
  dedup/order and store in one transaction (``store.py``, ``status.py``), composed in
  ``service.py`` (``runstream ingest``).
- ``api/``     the HTTP API (``runstream api``): ``app.py`` composes ``routes/`` (one module
  per resource) with the plumbing (``http.py``, ``auth.py``, ``params.py``, ``shapes.py``,
  ``openapi.py``); ``live/`` holds the Server-Sent Event streams; ``blobstore.py`` the
  artifact bytes.
- ``db/``      PostgreSQL shared by both: the pool, migrations (``migrations/*.sql``),
  read queries, change notices (NOTIFY/LISTEN), run statuses, queue state, the model
  registry (``models.py``), the queue of submitted runs (``jobs.py``) and the TimescaleDB
  storage mode and maintenance jobs (``maintenance.py``).
- ``cli/``     the ``runstream`` command (``main.py``) and ``runstream demo``.
- ``stack/``   the local single-machine stack (``runstream up | down | status``).
- ``agent/``   ``runstream agent``: runs the scripts submitted to a compute target (it talks
  to the API's job routes and logs through the SDK, like any client).
- ``bench/``   ``runstream bench`` and the fault ledger's workload.

Shared at the top: ``settings.py`` (the environment, read once by the CLI), ``errors.py``
and ``server.py`` (the one aiohttp server wrapper). ``ingest`` uses only the SDK's public
names (``producer``); the SDK never imports ``ingest``.
"""
