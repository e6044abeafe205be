"""The local single-machine stack: Kafka (KRaft) and PostgreSQL run as our own processes."""
