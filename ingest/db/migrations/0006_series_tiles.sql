-- Read path (issue 4): summaries that make series downsampling fast, and queue-wait p95.
--
-- GET /v1/runs/{id}/metrics/{name}?max_points=N buckets a series by step range and
-- reports count/min/max/last per bucket. Scanning the points costs ~0.3-0.5 us each in
-- SQL (unnest + aggregate), ~400 ms for 1M points; the target is 50 ms. So points are
-- summarised once into *tiles*: per (run, name, rank, level), tile k covers the steps
-- [k * 2^level, (k+1) * 2^level) and holds the count, min/max over finite values, the
-- step and time ranges, and the last point (highest step, then latest time).
--
-- A query with bucket width W reads the tiles of the largest level with 2^level <= W and
-- buckets aligned to 2^level, so every bucket is a union of whole tiles; the few points
-- in partial tiles at the ends of the requested step range are read raw. Levels are 6, 9,
-- ..., 60 (each 8x the previous), so a query reads at most ~8 tiles per bucket per rank.
--
-- Tiles are filled lazily, by the read path (runstream_data.tile_metric_series), from
-- the chunks not yet summarised; metric_tiled_chunks records which chunks are in, in the
-- same transaction as their tiles, so a chunk is counted exactly once whichever API
-- replica gets there first. A query sees tiles and markers in one snapshot and reads the
-- points of chunks without a marker raw, so nothing committed is ever missed. Chunks are
-- immutable; when the oldest disappear (retention), the series' tiles are rebuilt on next use.
-- Both storage paths (plain partitioned PostgreSQL and TimescaleDB) use these plain tables.
--
-- Sparse series (e.g. timestamps used as steps) would need a tile per point at fine
-- levels; a series keeps only the levels holding at least 8 points per tile on average
-- (metric_tile_series.min_level), coarser queries still use tiles, finer ones read raw.

CREATE TABLE runstream_data.metric_tiled_chunks (
    run_id      text NOT NULL,
    name        text NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    series_idx  integer NOT NULL,
    rank        integer NOT NULL,
    n           integer NOT NULL,
    time_min    timestamptz NOT NULL,
    PRIMARY KEY (run_id, name, producer_id, seq, series_idx)
);
CREATE INDEX metric_tiled_chunks_time_idx ON runstream_data.metric_tiled_chunks (run_id, name, time_min);

CREATE TABLE runstream_data.metric_tile_series (
    run_id    text NOT NULL,
    name      text NOT NULL,
    -- finest level kept for this series (levels below were dropped as too sparse)
    min_level smallint NOT NULL DEFAULT 6,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE runstream_data.metric_tiles (
    run_id text NOT NULL,
    name   text NOT NULL,
    level  smallint NOT NULL,
    rank   integer NOT NULL,
    tile   bigint NOT NULL,            -- step >> level
    n      bigint NOT NULL,            -- points
    vmin   float8,                     -- over finite values (NULL: none)
    vmax   float8,
    smin   bigint NOT NULL,            -- steps actually present
    smax   bigint NOT NULL,
    tmin   bigint NOT NULL,            -- point times, microseconds since the epoch
    tmax   bigint NOT NULL,
    last_t bigint NOT NULL,            -- the last point: at step smax, latest time
    last_v float8 NOT NULL,
    last_k smallint NOT NULL,          -- ASCII kind: f, i, b, s
    last_x text,                       -- its text when last_k = 's'
    PRIMARY KEY (run_id, name, level, rank, tile)
);

CREATE FUNCTION runstream_data.tile_metric_series(p_run_id text, p_name text)
RETURNS bigint LANGUAGE plpgsql SET work_mem = '64MB' AS $fn$
DECLARE
    min_lvl smallint;
    touched bigint;
    points bigint;
    lvl smallint;
    tiles bigint;
BEGIN
    -- One tiler per series at a time; a concurrent caller waits, then finds little to do.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_run_id || E'\n' || p_name, 7364));
    INSERT INTO runstream_data.metric_tile_series (run_id, name) VALUES (p_run_id, p_name)
    ON CONFLICT DO NOTHING;
    SELECT s.min_level INTO min_lvl FROM runstream_data.metric_tile_series s
    WHERE s.run_id = p_run_id AND s.name = p_name;

    -- Chunks summarised earlier but gone now (retention drops the oldest): start over.
    IF (SELECT min(m.time_min) FROM runstream_data.metric_tiled_chunks m
        WHERE m.run_id = p_run_id AND m.name = p_name)
       < coalesce((SELECT min(c.time_min) FROM runstream_data.metric_chunks c
                   WHERE c.run_id = p_run_id AND c.name = p_name), 'infinity')
    THEN
        DELETE FROM runstream_data.metric_tiles WHERE run_id = p_run_id AND name = p_name;
        DELETE FROM runstream_data.metric_tiled_chunks WHERE run_id = p_run_id AND name = p_name;
        UPDATE runstream_data.metric_tile_series SET min_level = 6
        WHERE run_id = p_run_id AND name = p_name;
        min_lvl := 6;
    END IF;

    WITH claim AS (
        INSERT INTO runstream_data.metric_tiled_chunks
            (run_id, name, producer_id, seq, series_idx, rank, n, time_min)
        SELECT c.run_id, c.name, c.producer_id, c.seq, c.series_idx, c.rank, c.n, c.time_min
        FROM runstream_data.metric_chunks c
        WHERE c.run_id = p_run_id AND c.name = p_name
          -- NOT IN: a hashed subplan whatever the (often stale) row estimates say
          AND (c.producer_id, c.seq, c.series_idx) NOT IN (
              SELECT m.producer_id, m.seq, m.series_idx FROM runstream_data.metric_tiled_chunks m
              WHERE m.run_id = p_run_id AND m.name = p_name)
        ON CONFLICT DO NOTHING
        RETURNING producer_id, seq, series_idx
    ),
    chunk AS (
        SELECT row_number() OVER () AS cid, c.rank, c.steps, c."values", c.times,
               c.kinds, c.texts
        FROM runstream_data.metric_chunks c
        JOIN claim k ON k.producer_id = c.producer_id AND k.seq = c.seq
                    AND k.series_idx = c.series_idx
        WHERE c.run_id = p_run_id AND c.name = p_name
    ),
    point AS (  -- set-returning functions in the target list: no tuplestore per chunk
        SELECT c.cid, c.rank, unnest(c.steps) AS s, unnest(c."values") AS v,
               unnest(c.times) AS t, generate_subscripts(c.steps, 1) AS i
        FROM chunk c
    ),
    fine AS (
        SELECT p.rank, p.s >> min_lvl AS tile, count(*) AS n,
               min(p.v) FILTER (WHERE p.v > '-Infinity' AND p.v < 'Infinity') AS vmin,
               max(p.v) FILTER (WHERE p.v > '-Infinity' AND p.v < 'Infinity') AS vmax,
               min(p.s) AS smin, max(p.s) AS smax, min(p.t) AS tmin, max(p.t) AS tmax,
               -- argmax by (step, time); float8 keys are exact below 2^53
               max(ARRAY[p.s::float8, p.t::float8, p.v, p.cid::float8, p.i::float8]) AS last
        FROM point p
        GROUP BY p.rank, p.s >> min_lvl
    ),
    lv AS (
        SELECT l.level, f.rank, f.tile >> (l.level - min_lvl) AS tile, sum(f.n) AS n,
               min(f.vmin) AS vmin, max(f.vmax) AS vmax, min(f.smin) AS smin,
               max(f.smax) AS smax, min(f.tmin) AS tmin, max(f.tmax) AS tmax, max(f.last) AS last
        FROM fine f
        CROSS JOIN generate_series(min_lvl, 60, 3) AS l(level)
        GROUP BY l.level, f.rank, f.tile >> (l.level - min_lvl)
    ),
    typed AS (
        SELECT v.*, v.last[2]::bigint AS last_t, v.last[3] AS last_v,
               CASE WHEN c.kinds IS NULL THEN 102
                    ELSE get_byte(c.kinds, v.last[5]::integer - 1) END AS last_k,
               c.texts[v.last[5]::integer] AS last_x
        FROM lv v JOIN chunk c ON c.cid = v.last[4]::bigint
    )
    INSERT INTO runstream_data.metric_tiles AS m
        (run_id, name, level, rank, tile, n, vmin, vmax, smin, smax, tmin, tmax,
         last_t, last_v, last_k, last_x)
    SELECT p_run_id, p_name, t.level, t.rank, t.tile, t.n, t.vmin, t.vmax, t.smin, t.smax,
           t.tmin, t.tmax, t.last_t, t.last_v, t.last_k, t.last_x
    FROM typed t
    ORDER BY t.level, t.rank, t.tile
    ON CONFLICT (run_id, name, level, rank, tile) DO UPDATE SET
        n = m.n + excluded.n,
        vmin = least(m.vmin, excluded.vmin),
        vmax = greatest(m.vmax, excluded.vmax),
        smin = least(m.smin, excluded.smin),
        smax = greatest(m.smax, excluded.smax),
        tmin = least(m.tmin, excluded.tmin),
        tmax = greatest(m.tmax, excluded.tmax),
        last_t = CASE WHEN (excluded.smax, excluded.last_t) > (m.smax, m.last_t)
                      THEN excluded.last_t ELSE m.last_t END,
        last_v = CASE WHEN (excluded.smax, excluded.last_t) > (m.smax, m.last_t)
                      THEN excluded.last_v ELSE m.last_v END,
        last_k = CASE WHEN (excluded.smax, excluded.last_t) > (m.smax, m.last_t)
                      THEN excluded.last_k ELSE m.last_k END,
        last_x = CASE WHEN (excluded.smax, excluded.last_t) > (m.smax, m.last_t)
                      THEN excluded.last_x ELSE m.last_x END;
    GET DIAGNOSTICS touched = ROW_COUNT;

    -- Keep only levels with >= 8 points per tile on average (once the series is big
    -- enough for it to matter), finest first; a dropped level never comes back.
    IF touched = 0 THEN
        RETURN 0;
    END IF;
    SELECT coalesce(sum(m.n), 0) INTO points FROM runstream_data.metric_tiled_chunks m
    WHERE m.run_id = p_run_id AND m.name = p_name;
    IF points >= 4096 THEN
        lvl := min_lvl;
        LOOP
            SELECT count(*) INTO tiles FROM runstream_data.metric_tiles m
            WHERE m.run_id = p_run_id AND m.name = p_name AND m.level = lvl;
            EXIT WHEN tiles * 8 <= points OR lvl >= 60;
            DELETE FROM runstream_data.metric_tiles m
            WHERE m.run_id = p_run_id AND m.name = p_name AND m.level = lvl;
            lvl := lvl + 3;
        END LOOP;
        IF lvl > min_lvl THEN
            UPDATE runstream_data.metric_tile_series SET min_level = lvl
            WHERE run_id = p_run_id AND name = p_name;
        END IF;
    END IF;
    RETURN touched;
END
$fn$;

-- runstream.compute_targets gains queue_wait_p95_s (the API's QueueState reports p50/p95).
-- Same definition as 0003 with one column added at the end (a compatible change).
CREATE OR REPLACE VIEW runstream.compute_targets AS
WITH r AS (
    SELECT v.compute_target, v.status, v.queued_at, v.ended_at,
           extract(epoch FROM coalesce(v.preparing_at, v.started_at) - v.queued_at) AS wait_s,
           coalesce(v.preparing_at, v.started_at) AS dequeued_at
    FROM runstream.runs v
    WHERE v.compute_target IS NOT NULL
)
SELECT compute_target,
       count(*) FILTER (WHERE status = 'Queued') AS queued,
       count(*) FILTER (WHERE status = 'Preparing') AS preparing,
       count(*) FILTER (WHERE status IN ('Running', 'NotResponding')) AS running,
       count(*) FILTER (WHERE status = 'NotResponding') AS not_responding,
       min(queued_at) FILTER (WHERE status = 'Queued') AS oldest_queued_at,
       extract(epoch FROM now() - min(queued_at) FILTER (WHERE status = 'Queued'))::float8
           AS oldest_queued_age_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_s) FILTER (WHERE w.recent)
           AS queue_wait_p50_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY wait_s) FILTER (WHERE w.recent)
           AS queue_wait_p90_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY wait_s) FILTER (WHERE w.recent)
           AS queue_wait_p99_s,
       count(*) FILTER (WHERE status = 'Completed' AND ended_at > now() - interval '1 hour')
           AS completed_1h,
       count(*) FILTER (WHERE status = 'Failed' AND ended_at > now() - interval '1 hour')
           AS failed_1h,
       count(*) FILTER (WHERE status = 'Canceled' AND ended_at > now() - interval '1 hour')
           AS canceled_1h,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY wait_s) FILTER (WHERE w.recent)
           AS queue_wait_p95_s
FROM r
CROSS JOIN LATERAL (
    SELECT r.wait_s IS NOT NULL AND r.dequeued_at > now() - coalesce(
        (SELECT value::interval FROM runstream_data.settings WHERE key = 'queue_stats_window'),
        interval '24 hours') AS recent
) w
GROUP BY compute_target;
