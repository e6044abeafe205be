-- First views as fast as later ones (issue 12): the worker makes the fine tiles.
--
-- tile_metric_series (0006) summarised each new chunk from its points: unnest three
-- arrays and aggregate, ~0.5 us of PostgreSQL CPU a point, the largest single cost of
-- ingest. The worker already holds every chunk's points, decoded, as it writes them, so
-- it computes the chunk's level-6 tiles itself (ingest/worker/chunk_tiles.py: count,
-- finite min/max, step and time ranges, the last point) and COPYs them here, one row of
-- arrays per chunk, in the batch's transaction. tile_metric_series takes a claimed
-- chunk's fine tiles when it has them (deleting them: they are needed once) and reads
-- the points of the others as before; the result is the same either way. The worker
-- makes them only for chunks whose steps strictly increase and that hold at least 8
-- points per tile; others (sparse steps, repeated steps, small chunks) are read as
-- points. Both storage paths use this plain table; drop_metrics_older_than clears rows
-- of chunks past retention that were never tiled.

CREATE TABLE runstream_data.metric_chunk_tiles (
    run_id      text NOT NULL,
    name        text NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    series_idx  integer NOT NULL,
    rank        integer NOT NULL,
    time_min    timestamptz NOT NULL,  -- the chunk's
    tiles       bigint[] NOT NULL,     -- step >> 6, ascending
    ns          bigint[] NOT NULL,
    vmins       float8[] NOT NULL,     -- over finite values; NaN: none
    vmaxs       float8[] NOT NULL,
    smins       bigint[] NOT NULL,
    smaxs       bigint[] NOT NULL,
    tmins       bigint[] NOT NULL,     -- microseconds since the epoch
    tmaxs       bigint[] NOT NULL,
    last_ts     bigint[] NOT NULL,     -- the point at smax
    last_vs     float8[] NOT NULL,
    last_ks     bytea NOT NULL,        -- its ASCII kind, one byte a tile
    last_xs     text[]                 -- its text (kind s); NULL when the chunk has none
);
CREATE INDEX metric_chunk_tiles_chunk_idx
    ON runstream_data.metric_chunk_tiles (run_id, name, producer_id, seq, series_idx);

-- What the level check needs, kept as tiling goes: the points tiled and the tiles at
-- min_level. tile_metric_series counted both every round (a scan of all the series'
-- finest tiles, growing with the series: ~8 ms a round at 2 M points). NULL: not known
-- yet (series tiled before this migration), counted once.
ALTER TABLE runstream_data.metric_tile_series
    ADD COLUMN tiled_points bigint,
    ADD COLUMN min_level_tiles bigint;

-- As in 0006, but a claimed chunk's fine tiles (part, ptile) stand in for its points, and
-- the level check uses the counts kept in metric_tile_series.
CREATE OR REPLACE FUNCTION runstream_data.tile_metric_series(p_run_id text, p_name text)
RETURNS bigint LANGUAGE plpgsql SET work_mem = '64MB' AS $fn$
DECLARE
    min_lvl smallint;
    touched bigint;
    v_points bigint;
    lvl smallint;
    v_tiles bigint;
    new_points bigint;
    new_tiles bigint;
BEGIN
    -- One tiler per series at a time; a concurrent caller waits, then finds little to do.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_run_id || E'\n' || p_name, 7364));
    INSERT INTO runstream_data.metric_tile_series (run_id, name) VALUES (p_run_id, p_name)
    ON CONFLICT DO NOTHING;
    SELECT s.min_level, s.tiled_points, s.min_level_tiles INTO min_lvl, v_points, v_tiles
    FROM runstream_data.metric_tile_series s
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
        v_points := 0;
        v_tiles := 0;
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
        RETURNING producer_id, seq, series_idx, n
    ),
    part AS (  -- the claimed chunks' fine tiles, made by the worker as it wrote them
        DELETE FROM runstream_data.metric_chunk_tiles p
        USING claim k
        WHERE p.run_id = p_run_id AND p.name = p_name AND p.producer_id = k.producer_id
          AND p.seq = k.seq AND p.series_idx = k.series_idx
        RETURNING p.producer_id, p.seq, p.series_idx, p.rank, p.tiles, p.ns, p.vmins,
                  p.vmaxs, p.smins, p.smaxs, p.tmins, p.tmaxs, p.last_ts, p.last_vs,
                  p.last_ks, p.last_xs
    ),
    ptile AS (  -- one row per fine tile; pid numbers them for the last point's kind/text
        SELECT row_number() OVER () AS pid, p.rank, u.tile, u.n,
               nullif(u.vmin, 'NaN') AS vmin, nullif(u.vmax, 'NaN') AS vmax, u.smin,
               u.smax, u.tmin, u.tmax, u.last_t, u.last_v,
               get_byte(p.last_ks, (u.i - 1)::integer) AS last_k, u.last_x
        FROM part p
        CROSS JOIN LATERAL unnest(p.tiles, p.ns, p.vmins, p.vmaxs, p.smins, p.smaxs,
                                  p.tmins, p.tmaxs, p.last_ts, p.last_vs, p.last_xs)
            WITH ORDINALITY AS u(tile, n, vmin, vmax, smin, smax, tmin, tmax, last_t,
                                 last_v, last_x, i)
    ),
    chunk AS (  -- the claimed chunks without fine tiles: their points are read
        SELECT row_number() OVER () AS cid, c.rank, c.steps, c."values", c.times,
               c.kinds, c.texts
        FROM runstream_data.metric_chunks c
        JOIN claim k ON k.producer_id = c.producer_id AND k.seq = c.seq
                    AND k.series_idx = c.series_idx
        WHERE c.run_id = p_run_id AND c.name = p_name
          AND NOT EXISTS (SELECT 1 FROM part q WHERE q.producer_id = k.producer_id
                          AND q.seq = k.seq AND q.series_idx = k.series_idx)
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
        UNION ALL
        -- Fine tiles are at level 6; a sparse series' min_lvl is coarser. Their last
        -- point sorts like a raw one (step, time, value), then by -pid: typed below
        -- tells the two apart by the sign.
        SELECT t.rank, t.tile >> (min_lvl - 6), sum(t.n)::bigint, min(t.vmin), max(t.vmax),
               min(t.smin), max(t.smax), min(t.tmin), max(t.tmax),
               max(ARRAY[t.smax::float8, t.last_t::float8, t.last_v, -t.pid::float8, 0])
        FROM ptile t
        GROUP BY t.rank, t.tile >> (min_lvl - 6)
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
               CASE WHEN v.last[4] < 0 THEN t.last_k
                    WHEN c.kinds IS NULL THEN 102
                    ELSE get_byte(c.kinds, v.last[5]::integer - 1) END AS last_k,
               CASE WHEN v.last[4] < 0 THEN t.last_x
                    ELSE c.texts[v.last[5]::integer] END AS last_x
        FROM lv v
        LEFT JOIN chunk c ON c.cid = v.last[4]::bigint
        LEFT JOIN ptile t ON t.pid = -v.last[4]::bigint
    ),
    ins AS (
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
                      THEN excluded.last_x ELSE m.last_x END
    RETURNING m.level, m.xmax = 0 AS fresh  -- inserted, not updated
    )
    SELECT count(*), count(*) FILTER (WHERE i.fresh AND i.level = min_lvl),
           (SELECT coalesce(sum(k.n), 0) FROM claim k)
    INTO touched, new_tiles, new_points
    FROM ins i;

    -- Keep only levels with >= 8 points per tile on average (once the series is big
    -- enough for it to matter), finest first; a dropped level never comes back.
    IF touched = 0 THEN
        RETURN 0;
    END IF;
    IF v_points IS NULL OR v_tiles IS NULL THEN  -- not known yet: count once
        SELECT coalesce(sum(m.n), 0) INTO v_points FROM runstream_data.metric_tiled_chunks m
        WHERE m.run_id = p_run_id AND m.name = p_name;
        SELECT count(*) INTO v_tiles FROM runstream_data.metric_tiles m
        WHERE m.run_id = p_run_id AND m.name = p_name AND m.level = min_lvl;
    ELSE
        v_points := v_points + new_points;
        v_tiles := v_tiles + new_tiles;
    END IF;
    lvl := min_lvl;
    IF v_points >= 4096 THEN
        LOOP
            EXIT WHEN v_tiles * 8 <= v_points OR lvl >= 60;
            DELETE FROM runstream_data.metric_tiles m
            WHERE m.run_id = p_run_id AND m.name = p_name AND m.level = lvl;
            lvl := lvl + 3;
            SELECT count(*) INTO v_tiles FROM runstream_data.metric_tiles m
            WHERE m.run_id = p_run_id AND m.name = p_name AND m.level = lvl;
        END LOOP;
    END IF;
    UPDATE runstream_data.metric_tile_series
    SET min_level = lvl, tiled_points = v_points, min_level_tiles = v_tiles
    WHERE run_id = p_run_id AND name = p_name;
    RETURN touched;
END
$fn$;

-- As in 0012, plus the fine tiles of chunks past retention.
CREATE OR REPLACE FUNCTION runstream_data.drop_metrics_older_than(keep_for interval)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    dropped integer := 0;
    bound timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(7366);
    IF (SELECT value FROM runstream_data.settings WHERE key = 'storage_backend') = 'timescaledb' THEN
        EXECUTE 'SELECT count(*) FROM drop_chunks(''runstream_data.metric_chunks'', older_than => $1)'
            INTO dropped USING keep_for;
    ELSE
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
    END IF;
    IF dropped > 0 THEN
        DELETE FROM runstream_data.metric_summary_runs;
    END IF;
    -- Fine tiles of chunks that were never tiled and may be gone now. A chunk whose fine
    -- tiles are gone is tiled from its points: deleting too many costs speed, never data.
    DELETE FROM runstream_data.metric_chunk_tiles WHERE time_min < now() - keep_for;
    RETURN dropped;
END
$fn$;
