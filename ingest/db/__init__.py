"""PostgreSQL, shared by the worker and the API: pool, migrations, read queries, notices."""
