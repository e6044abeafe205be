"""The ingest worker: Kafka → decode → exactly-once store in PostgreSQL (``service.py``)."""
