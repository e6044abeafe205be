-- No planner statistics for the payload arrays of metric_chunks (issue 12, item 3).
--
-- ANALYZE builds element statistics for an array column: it samples 30,000 rows and
-- sorts every element of every sampled array. A metric chunk holds hundreds to thousands
-- of points in each of steps, values and times, so one ANALYZE of a month's partition
-- (165,326 chunks of 2,908 points on average, 4.2 GB) took 33-41 s of CPU — and autovacuum
-- runs one every time a tenth of the partition is new, while the worker writes into it:
-- on the two cores of the bench machine, in 38 of 53 one-second samples of an overload
-- run and 55 of 125 of a full end-to-end run. Without statistics on the payload columns
-- the same ANALYZE takes 0.2 s. No query filters, joins or groups on them (the reads
-- select them by run_id, name and time_min, which keep their statistics), so the planner
-- loses nothing.
--
-- A statistics target is a column's own, not inherited: a partition created later, or a
-- TimescaleDB chunk, starts with the default. quiet_metric_chunk_stats() sets it on
-- metric_chunks and every table under it that lacks it; the migration runs it once and
-- the workers with their periodic partition upkeep (ingest/worker/store.py). A table it
-- cannot alter now (a lock not granted within 2 s, or a chunk the extension will not let
-- it alter) is skipped with a NOTICE and tried again next time: statistics are advice.

CREATE FUNCTION runstream_data.quiet_metric_chunk_stats() RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    tbl regclass;
    changed integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', '2s', true);
    FOR tbl IN
        WITH RECURSIVE under(oid) AS (
            SELECT 'runstream_data.metric_chunks'::regclass::oid
            UNION
            SELECT i.inhrelid FROM pg_inherits i JOIN under u ON i.inhparent = u.oid
        )
        SELECT u.oid::regclass FROM under u
        WHERE EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = u.oid AND NOT a.attisdropped
              AND a.attname IN ('steps', 'values', 'times', 'kinds', 'texts')
              AND a.attstattarget IS DISTINCT FROM 0)
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE ONLY %s ALTER COLUMN steps SET STATISTICS 0, '
                           'ALTER COLUMN "values" SET STATISTICS 0, '
                           'ALTER COLUMN times SET STATISTICS 0, '
                           'ALTER COLUMN kinds SET STATISTICS 0, '
                           'ALTER COLUMN texts SET STATISTICS 0', tbl);
            changed := changed + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'runstream: payload statistics of % left for later: %', tbl, SQLERRM;
        END;
    END LOOP;
    RETURN changed;
END
$fn$;

SELECT runstream_data.quiet_metric_chunk_stats();
