-- When each metric chunk was written: the transaction time of the batch that stored it
-- (rows and offsets commit together, so this is the moment its points became queryable,
-- give or take the rest of that transaction). With the points' own log-call times it
-- gives the log→commit latency of every point (`runstream bench`) and ingest lag per run.
-- Added nullable without a default first, so existing (possibly compressed) chunks are
-- not rewritten; rows written before this migration keep NULL.
ALTER TABLE runstream_data.metric_chunks ADD COLUMN ingested_at timestamptz;
ALTER TABLE runstream_data.metric_chunks ALTER COLUMN ingested_at SET DEFAULT now();
