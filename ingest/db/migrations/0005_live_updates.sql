-- Live updates (ingest/api_events.py): each SSE subscriber reads what a run gained since
-- its cursor, the ingest time of the last transaction it has seen. A run's batches commit
-- one after another (one partition, one writer at a time), so per run ingest time orders
-- commits, and these indexes make "this run's rows after time T" a short index range scan
-- instead of a scan of the run's whole history.
--
-- log_lines gains ingested_at the way metric_chunks did in 0004: nullable without a
-- default first (no table rewrite), then the default for new rows; older rows keep NULL
-- and are simply never streamed.
ALTER TABLE runstream_data.log_lines ADD COLUMN ingested_at timestamptz;
ALTER TABLE runstream_data.log_lines ALTER COLUMN ingested_at SET DEFAULT now();
CREATE INDEX log_lines_run_ingested_idx ON runstream_data.log_lines (run_id, ingested_at);
CREATE INDEX metric_chunks_run_ingested_idx
    ON runstream_data.metric_chunks (run_id, ingested_at);
