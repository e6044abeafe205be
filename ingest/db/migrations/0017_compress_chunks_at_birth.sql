-- Compression that never blocks ingest (issue 13, item 2), TimescaleDB path.
--
-- TimescaleDB compresses a chunk that was never compressed with compress_chunk, which
-- holds an ExclusiveLock on the chunk for the whole pass: an INSERT or COPY into that
-- chunk (a late point for an old chunk) waits until the chunk is done, seconds for a
-- large one. A chunk that is already compressed and has taken rows since ("partial")
-- is recompressed segment by segment instead (2.19 and later; timescale/timescaledb
-- #7747), under a ShareUpdateExclusiveLock, which inserts do not wait for; its last
-- step only tries for an ExclusiveLock (ConditionalLockRelation) and never waits.
--
-- So a metric chunk is compressed when it is born: the batch write that creates a chunk
-- compresses it in its own transaction, while it holds that batch's rows only (a few ms,
-- and nobody else can see the chunk before the batch commits). Every later row goes to
-- the chunk's uncompressed part, and every compression pass after that — the policy run
-- by the extension's scheduler or by Runstream's workers alike — is a recompression that
-- never blocks the batch write. Chunks made before this migration (or by another writer)
-- keep their first compression as before.
--
-- The compression policy also stops rebuilding a chunk's indexes after recompressing it
-- ('reindex' false in its config): REINDEX holds a ShareLock that blocks inserts into the
-- chunk while it reads the chunk's whole heap. Autovacuum cleans the indexes instead.
--
-- On plain PostgreSQL both functions do nothing.

-- Compresses the metric chunks created (or brought back after drop_chunks) by the calling
-- transaction: chunks not compressed whose catalog row this transaction wrote. Called by
-- the batch write right after its COPY into metric_chunks (ingest/worker/store.py) and by
-- `runstream migrate --to-timescaledb` (every chunk it made). Returns the chunks compressed.
CREATE FUNCTION runstream_data.compress_new_metric_chunks() RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    chunk regclass;
    compressed integer := 0;
BEGIN
    IF (SELECT value FROM runstream_data.settings WHERE key = 'storage_backend')
            IS DISTINCT FROM 'timescaledb' THEN
        RETURN 0;
    END IF;
    FOR chunk IN
        SELECT format('%I.%I', c.schema_name, c.table_name)::regclass
        FROM _timescaledb_catalog.chunk c
        JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
        WHERE h.schema_name = 'runstream_data' AND h.table_name = 'metric_chunks'
          AND c.status = 0 AND NOT c.dropped
          AND c.xmin = xid(pg_current_xact_id())
        ORDER BY c.id
    LOOP
        IF compressed = 0 THEN
            -- a chunk of one batch's rows is small: no warning about its ratio
            PERFORM set_config('timescaledb.enable_compression_ratio_warnings', 'off', true);
        END IF;
        PERFORM compress_chunk(chunk);
        compressed := compressed + 1;
    END LOOP;
    RETURN compressed;
END
$fn$;

-- The compression policy of metric_chunks without the REINDEX after a recompression.
CREATE FUNCTION runstream_data.tune_metric_compression_policy() RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    tuned integer := 0;
    job record;
BEGIN
    IF (SELECT value FROM runstream_data.settings WHERE key = 'storage_backend')
            IS DISTINCT FROM 'timescaledb' THEN
        RETURN 0;
    END IF;
    FOR job IN
        SELECT j.job_id, j.config FROM timescaledb_information.jobs j
        WHERE j.proc_name = 'policy_compression' AND j.hypertable_schema = 'runstream_data'
          AND j.hypertable_name = 'metric_chunks'
          AND (j.config ->> 'reindex') IS DISTINCT FROM 'false'
    LOOP
        PERFORM alter_job(job.job_id, config => job.config || '{"reindex": false}'::jsonb);
        tuned := tuned + 1;
    END LOOP;
    RETURN tuned;
END
$fn$;

SELECT runstream_data.tune_metric_compression_policy();
