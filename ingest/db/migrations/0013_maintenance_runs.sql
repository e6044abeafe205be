-- TimescaleDB maintenance that Runstream runs itself (issue 13), and converting a database
-- migrated as plain PostgreSQL to TimescaleDB storage.
--
-- On TimescaleDB, metric chunks are compressed and the hourly aggregate is refreshed by the
-- extension's background jobs (0002). When its scheduler cannot run a job (it fails every
-- time, or never starts it), the ingest workers run that job themselves with
-- `CALL run_job(id)` from an ordinary connection, one worker at a time (an advisory lock),
-- on the job's own schedule (ingest/db/maintenance.py). `run_job` leaves the extension's
-- job statistics alone, so what Runstream ran is recorded here, one row per job.
-- A plain table on both storage paths (empty on plain PostgreSQL).

CREATE TABLE runstream_data.maintenance_runs (
    job_id               integer PRIMARY KEY,   -- the TimescaleDB job Runstream ran
    kind                 text NOT NULL,         -- compression, aggregate_refresh, ...
    last_attempt_at      timestamptz NOT NULL,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    total_runs           bigint NOT NULL DEFAULT 0,
    total_failures       bigint NOT NULL DEFAULT 0,
    last_error           text,                  -- SQLSTATE and message of the last failure
    last_duration_s      float8,
    last_runner          text                   -- which worker ran it (host:pid)
);

-- Converts metric_chunks from native range partitions (the plain-PostgreSQL layout of
-- 0002) to the TimescaleDB layout of 0002: a hypertable with columnstore compression,
-- its compression policy, the hourly continuous aggregate and its refresh policy. Run by
-- `runstream migrate --to-timescaledb`, in ONE transaction: it either commits whole or
-- leaves the database exactly as it was (never half-switched), and running it again
-- after an interruption starts over. Ingest waits on the table's lock meanwhile (the
-- events wait in Kafka; nothing is lost). Returns the rows moved; 0 and no change when
-- the storage already is TimescaleDB. Refuses where the extension is not in this database.
CREATE FUNCTION runstream_data.convert_metric_chunks_to_hypertable() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    view_sql text;
    moved bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE EXCEPTION 'the timescaledb extension is not created in this database'
            USING HINT = 'CREATE EXTENSION timescaledb (the server must preload it: '
                         'shared_preload_libraries), then run this again';
    END IF;
    IF (SELECT value FROM runstream_data.settings WHERE key = 'storage_backend') <> 'partitioned' THEN
        RETURN 0;
    END IF;
    -- Writers wait from here; readers keep reading the old table until the commit.
    LOCK TABLE runstream_data.metric_chunks IN EXCLUSIVE MODE;
    view_sql := pg_get_viewdef('runstream.metric_points'::regclass);
    ALTER TABLE runstream_data.metric_chunks RENAME TO metric_chunks_plain;
    ALTER INDEX runstream_data.metric_chunks_series_idx RENAME TO metric_chunks_plain_series_idx;
    CREATE TABLE runstream_data.metric_chunks
        (LIKE runstream_data.metric_chunks_plain INCLUDING DEFAULTS INCLUDING STORAGE
         INCLUDING COMPRESSION);
    PERFORM runstream_data.use_lz4('runstream_data.metric_chunks');
    PERFORM create_hypertable('runstream_data.metric_chunks', 'time_min',
                              chunk_time_interval => interval '7 days');
    CREATE INDEX metric_chunks_series_idx ON runstream_data.metric_chunks (run_id, name, time_min);
    INSERT INTO runstream_data.metric_chunks SELECT * FROM runstream_data.metric_chunks_plain;
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE 'CREATE OR REPLACE VIEW runstream.metric_points AS ' || view_sql;
    DROP TABLE runstream_data.metric_chunks_plain;
    -- As 0002 does on a database that had the extension from the start.
    EXECUTE 'ALTER TABLE runstream_data.metric_chunks SET ('
            'timescaledb.compress, '
            'timescaledb.compress_segmentby = ''run_id, name'', '
            'timescaledb.compress_orderby = ''time_min, producer_id, seq, series_idx'')';
    PERFORM add_compression_policy('runstream_data.metric_chunks', interval '7 days');
    EXECUTE 'CREATE MATERIALIZED VIEW runstream_data.metric_series_hourly '
            'WITH (timescaledb.continuous) AS '
            'SELECT run_id, name, time_bucket(interval ''1 hour'', time_min) AS bucket, '
            'sum(n)::bigint AS points, min(step_min) AS step_min, max(step_max) AS step_max, '
            'max(time_max) AS time_max '
            'FROM runstream_data.metric_chunks GROUP BY run_id, name, bucket '
            'WITH NO DATA';
    PERFORM add_continuous_aggregate_policy('runstream_data.metric_series_hourly',
        start_offset => interval '30 days', end_offset => interval '1 hour',
        schedule_interval => interval '15 minutes');
    UPDATE runstream_data.settings SET value = 'timescaledb' WHERE key = 'storage_backend';
    RETURN moved;
END
$fn$;
