-- Metric points, stored per series per event as arrays ("chunks"): one row carries up to
-- thousands of points, so a write costs one row, not one row per point. The arrays use
-- lz4 TOAST compression: the default pglz makes array writes several times slower.
-- Per-point reads go through the runstream.metric_points view (0003), which unnests.
--
-- Two storage paths with the same table name and columns, chosen once, here:
--   * TimescaleDB installed in this database (pg_extension): a hypertable on time_min
--     with columnstore compression segmented by (run_id, name) and an hourly
--     continuous aggregate of points per series.
--   * otherwise: native range partitioning on time_min (monthly partitions plus a
--     default partition, so late or far-future points are accepted and placed).
-- The choice is recorded in runstream_data.settings ('storage_backend').

CREATE TABLE runstream_data.metric_chunks_template (
    run_id      text NOT NULL,
    name        text NOT NULL,
    rank        integer NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    series_idx  integer NOT NULL,
    n           integer NOT NULL,
    time_min    timestamptz NOT NULL,
    time_max    timestamptz NOT NULL,
    step_min    bigint NOT NULL,
    step_max    bigint NOT NULL,
    steps       bigint[] NOT NULL,   -- one per point
    "values"    float8[] NOT NULL,   -- one per point; NaN for string points
    times       bigint[] NOT NULL,   -- microseconds since the Unix epoch, one per point
    kinds       bytea,               -- NULL: all floats; else one of f,i,b,s per point
    texts       text[]               -- NULL unless kinds has s; aligned, NULL for non-strings
);

CREATE FUNCTION runstream_data.use_lz4(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s ALTER COLUMN steps SET COMPRESSION lz4, '
                   'ALTER COLUMN "values" SET COMPRESSION lz4, '
                   'ALTER COLUMN times SET COMPRESSION lz4, '
                   'ALTER COLUMN texts SET COMPRESSION lz4', tbl);
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    -- Server built without lz4: store arrays uncompressed rather than pay for pglz.
    EXECUTE format('ALTER TABLE %s ALTER COLUMN steps SET STORAGE EXTERNAL, '
                   'ALTER COLUMN "values" SET STORAGE EXTERNAL, '
                   'ALTER COLUMN times SET STORAGE EXTERNAL', tbl);
END
$fn$;

-- Plain-PostgreSQL partition upkeep; a no-op on TimescaleDB. Creates the monthly
-- partitions covering [from_ts, to_ts) unless the default partition already holds rows
-- in that month (then those rows simply stay in the default partition).
CREATE FUNCTION runstream_data.ensure_metric_partitions(from_ts timestamptz, to_ts timestamptz)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    m timestamptz := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    nxt timestamptz;
    part text;
    created integer := 0;
BEGIN
    IF (SELECT value FROM runstream_data.settings WHERE key = 'storage_backend') <> 'partitioned' THEN
        RETURN 0;
    END IF;
    -- Every worker runs this periodically: one at a time, the others then find it done.
    PERFORM pg_advisory_xact_lock(hashtext('runstream_data.ensure_metric_partitions'));
    WHILE m < to_ts LOOP
        nxt := (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC';
        part := 'metric_chunks_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
        IF to_regclass('runstream_data.' || part) IS NULL AND NOT EXISTS (
            SELECT 1 FROM runstream_data.metric_chunks_default
            WHERE time_min >= m AND time_min < nxt
        ) THEN
            EXECUTE format('CREATE TABLE IF NOT EXISTS runstream_data.%I PARTITION OF '
                           'runstream_data.metric_chunks FOR VALUES FROM (%L) TO (%L)',
                           part, m, nxt);
            created := created + 1;
        END IF;
        m := nxt;
    END LOOP;
    RETURN created;
END
$fn$;

-- Retention: drop metric data older than keep_for: whole partitions/chunks, plus rows
-- of the default partition. Returns how many partitions/chunks (default counts as one).
CREATE FUNCTION runstream_data.drop_metrics_older_than(keep_for interval)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    dropped integer := 0;
    bound timestamptz;
BEGIN
    IF (SELECT value FROM runstream_data.settings WHERE key = 'storage_backend') = 'timescaledb' THEN
        EXECUTE 'SELECT count(*) FROM drop_chunks(''runstream_data.metric_chunks'', older_than => $1)'
            INTO dropped USING keep_for;
        RETURN dropped;
    END IF;
    FOR r IN
        SELECT c.oid::regclass AS part, pg_get_expr(c.relpartbound, c.oid) AS bound_expr
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'runstream_data.metric_chunks'::regclass
          AND c.relname <> 'metric_chunks_default'
    LOOP
        bound := substring(r.bound_expr FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF bound <= now() - keep_for THEN
            EXECUTE format('DROP TABLE %s', r.part);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    -- Late data older than every partition sits in the default partition: delete by row.
    DELETE FROM runstream_data.metric_chunks_default WHERE time_max < now() - keep_for;
    IF FOUND THEN
        dropped := dropped + 1;
    END IF;
    RETURN dropped;
END
$fn$;

DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        INSERT INTO runstream_data.settings VALUES ('storage_backend', 'timescaledb');
        CREATE TABLE runstream_data.metric_chunks
            (LIKE runstream_data.metric_chunks_template INCLUDING ALL);
        PERFORM runstream_data.use_lz4('runstream_data.metric_chunks');
        PERFORM create_hypertable('runstream_data.metric_chunks', 'time_min',
                                  chunk_time_interval => interval '7 days');
        -- before compression is enabled (older releases refuse DDL on compressed tables)
        CREATE INDEX metric_chunks_series_idx
            ON runstream_data.metric_chunks (run_id, name, time_min);
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
    ELSE
        INSERT INTO runstream_data.settings VALUES ('storage_backend', 'partitioned');
        CREATE TABLE runstream_data.metric_chunks
            (LIKE runstream_data.metric_chunks_template INCLUDING ALL)
            PARTITION BY RANGE (time_min);
        PERFORM runstream_data.use_lz4('runstream_data.metric_chunks');
        CREATE INDEX metric_chunks_series_idx
            ON runstream_data.metric_chunks (run_id, name, time_min);
        CREATE TABLE runstream_data.metric_chunks_default
            PARTITION OF runstream_data.metric_chunks DEFAULT;
        PERFORM runstream_data.ensure_metric_partitions(now() - interval '1 month',
                                                        now() + interval '3 months');
    END IF;
END
$do$;

DROP TABLE runstream_data.metric_chunks_template;
