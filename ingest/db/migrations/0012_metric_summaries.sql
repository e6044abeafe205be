-- Run lists at studio scale (issue 12): each series' count, last, min and max without
-- reading its points, for the runs list's metric columns (?metric=), its sorting by a
-- metric's last value (order_by=metric:) and its metric_filter=.
--
-- runstream_data.metric_summaries(runs, names) computes them for any runs and names in one
-- statement: a series of at most 1,000 points from its points, a larger one from its
-- coarsest tiles (level 60: one per rank) plus the points of its chunks not yet in them,
-- or from all its points when its tiles still hold chunks since dropped (retention). The
-- answer is the one GET /v1/runs/{id}/metric-index has always given (a small series'
-- last is the last in (step, rank, time) order and its min/max leave booleans out; a
-- larger one's come from its buckets: (step, time, rank) and booleans counted as 0/1),
-- plus sort_value, the value order_by=metric: and metric_filter= use: at the highest step,
-- the latest time, then the highest rank; NULL for a string or NaN.
--
-- That still reads a few hundred points per series, and sorting 10,000 runs needs the
-- last value of every one of them. So the worker stores the summaries of a run's series
-- once the run has gone quiet (ingest/worker/tiler.py) in metric_series_summary, and
-- records in metric_summary_runs how many events of the run were stored then: the sum of
-- its producers' `events`, which the write path raises in the same transaction as it
-- stores any event of the run. A reader uses a run's stored summaries only while that
-- count is unchanged — read in the same snapshot as the summaries — and computes the
-- others' (a run still logging, one not summarised yet), so answers are always those of
-- the points committed, whichever it reads. Retention (drop_metrics_older_than, redefined
-- below) forgets every stored summary when it drops metric data; an advisory lock keeps a
-- summariser from storing what it read before the drop after it.

CREATE TYPE runstream_data.metric_point AS (
    s bigint,        -- step
    t bigint,        -- time, microseconds since the epoch
    rank integer,
    v float8,        -- NaN for a string
    k smallint,      -- ASCII kind: f, i, b, s
    x text           -- the string when k = 's'
);

CREATE TABLE runstream_data.metric_summary_runs (
    run_id      text PRIMARY KEY,
    -- sum(producers.events) of the run when its summaries were computed
    events      bigint NOT NULL,
    -- its series' names, sorted, and their sort values: sorting thousands of runs by a
    -- metric then costs one probe here (and one into producers) per run
    names       text[] NOT NULL,
    sort_values float8[] NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runstream_data.metric_series_summary (
    run_id     text NOT NULL,
    name       text NOT NULL,
    points     bigint NOT NULL,
    vmin       float8,
    vmax       float8,
    last_v     float8,
    last_k     smallint,
    last_x     text,
    sort_value float8,
    PRIMARY KEY (run_id, name)
);

CREATE FUNCTION runstream_data.metric_summaries(p_runs text[], p_names text[])
RETURNS TABLE (run_id text, name text, points bigint, vmin float8, vmax float8,
               last_v float8, last_k smallint, last_x text, sort_value float8,
               untiled bigint, stale boolean)
LANGUAGE sql STABLE AS $fn$
WITH s AS MATERIALIZED (
    SELECT c.run_id, c.name, sum(c.n)::bigint AS points, max(c.step_max) AS top,
           min(c.time_min) AS time_min
    FROM runstream_data.metric_chunks c
    WHERE c.run_id = ANY(p_runs) AND (p_names IS NULL OR c.name = ANY(p_names))
    GROUP BY c.run_id, c.name
),
f AS MATERIALIZED (
    SELECT s.run_id, s.name, s.top, s.points <= 1000 AS small,
           s.points > 1000 AND coalesce((
               SELECT min(m.time_min) FROM runstream_data.metric_tiled_chunks m
               WHERE m.run_id = s.run_id AND m.name = s.name) < s.time_min, false) AS stale
    FROM s
),
raw AS (  -- every chunk of a small series (or one with stale tiles), else the untiled ones
    SELECT f.run_id, f.name, f.small, f.top, c.rank, c.steps, c."values", c.times,
           c.kinds, c.texts
    FROM f JOIN runstream_data.metric_chunks c ON c.run_id = f.run_id AND c.name = f.name
    WHERE f.small OR f.stale OR NOT EXISTS (
        SELECT 1 FROM runstream_data.metric_tiled_chunks m
        WHERE m.run_id = c.run_id AND m.name = c.name AND m.producer_id = c.producer_id
          AND m.seq = c.seq AND m.series_idx = c.series_idx)
),
rc AS (  -- each of those chunks: its count, min, max and its last point at the top step
    SELECT r.run_id, r.name, r.small, a.n, a.vmin, a.vmax, a.last
    FROM raw r CROSS JOIN LATERAL (
        SELECT count(*) AS n,
               min(u.v) FILTER (WHERE u.v > '-Infinity' AND u.v < 'Infinity'
                                AND (NOT r.small OR u.k IS NULL OR u.k IN ('f', 'i'))) AS vmin,
               max(u.v) FILTER (WHERE u.v > '-Infinity' AND u.v < 'Infinity'
                                AND (NOT r.small OR u.k IS NULL OR u.k IN ('f', 'i'))) AS vmax,
               (array_agg(ROW(u.s, u.t, r.rank, u.v, coalesce(ascii(u.k), 102), u.x)
                              ::runstream_data.metric_point
                          ORDER BY u.t DESC) FILTER (WHERE u.s = r.top))[1] AS last
        FROM (  -- set-returning functions in the target list: no tuplestore per chunk
            SELECT unnest(r.steps) AS s, unnest(r."values") AS v, unnest(r.times) AS t,
                   unnest(string_to_array(encode(r.kinds, 'escape'), NULL)) AS k,
                   unnest(r.texts) AS x
        ) u
    ) a
),
ra AS (
    SELECT c.run_id, c.name, sum(c.n)::bigint AS n, min(c.vmin) AS vmin, max(c.vmax) AS vmax,
           -- the last point by (step, rank, time): a small series' answer
           (array_agg(c.last ORDER BY (c.last).rank DESC, (c.last).t DESC)
                FILTER (WHERE (c.last).s IS NOT NULL))[1] AS by_rank,
           -- by (step, time, rank): a larger series' answer, and every sort value
           (array_agg(c.last ORDER BY (c.last).t DESC, (c.last).rank DESC)
                FILTER (WHERE (c.last).s IS NOT NULL))[1] AS by_time
    FROM rc c
    GROUP BY c.run_id, c.name
),
ta AS (
    SELECT t.run_id, t.name, sum(t.n)::bigint AS n, min(t.vmin) AS vmin,
           max(t.vmax) AS vmax,
           (array_agg(ROW(t.smax, t.last_t, t.rank, t.last_v, t.last_k, t.last_x)
                          ::runstream_data.metric_point
                      ORDER BY t.smax DESC, t.last_t DESC, t.rank DESC))[1] AS by_time
    FROM f JOIN runstream_data.metric_tiles t
      ON t.run_id = f.run_id AND t.name = f.name AND t.level = 60
    WHERE NOT f.small AND NOT f.stale
    GROUP BY t.run_id, t.name
),
j AS (
    SELECT f.run_id, f.name, f.small, f.stale,
           coalesce(ra.n, 0) + coalesce(ta.n, 0) AS points,
           least(ra.vmin, ta.vmin) AS vmin, greatest(ra.vmax, ta.vmax) AS vmax,
           ra.by_rank, ra.n AS raw_points,
           CASE WHEN ta.by_time IS NULL
                  OR ((ra.by_time).s, (ra.by_time).t, (ra.by_time).rank)
                     > ((ta.by_time).s, (ta.by_time).t, (ta.by_time).rank)
                THEN ra.by_time ELSE ta.by_time END AS by_time
    FROM f
    LEFT JOIN ra ON ra.run_id = f.run_id AND ra.name = f.name
    LEFT JOIN ta ON ta.run_id = f.run_id AND ta.name = f.name
)
SELECT j.run_id, j.name, j.points::bigint, j.vmin, j.vmax,
       CASE WHEN j.small THEN (j.by_rank).v ELSE (j.by_time).v END,
       CASE WHEN j.small THEN (j.by_rank).k ELSE (j.by_time).k END,
       CASE WHEN j.small THEN (j.by_rank).x ELSE (j.by_time).x END,
       nullif((j.by_time).v, 'NaN'::float8),
       CASE WHEN j.small THEN 0 ELSE coalesce(j.raw_points, 0) END::bigint,
       j.stale
FROM j
$fn$;

-- Store the summaries of these runs' series and the count of their events they reflect
-- (the worker's tiler calls this for runs that have gone quiet).
CREATE FUNCTION runstream_data.summarize_metric_runs(p_runs text[])
RETURNS integer LANGUAGE plpgsql SET work_mem = '64MB' SET jit = off AS $fn$
DECLARE
    stored integer;
BEGIN
    -- Retention takes this lock exclusively: nothing read before a drop is stored after it.
    PERFORM pg_advisory_xact_lock_shared(7366);
    -- One summariser per run at a time (several workers), always locked in the same order.
    PERFORM pg_advisory_xact_lock(hashtextextended(r.run_id, 7366))
    FROM (SELECT DISTINCT u AS run_id FROM unnest(p_runs) AS u ORDER BY 1) r;
    DELETE FROM runstream_data.metric_series_summary WHERE run_id = ANY(p_runs);
    -- One statement, one snapshot: the summaries and the event counts they reflect.
    WITH fp AS (
        SELECT p.run_id, sum(p.events)::bigint AS events FROM runstream_data.producers p
        WHERE p.run_id = ANY(p_runs) GROUP BY p.run_id
    ),
    m AS MATERIALIZED (
        SELECT * FROM runstream_data.metric_summaries(ARRAY(SELECT fp.run_id FROM fp), NULL)
    ),
    ins AS (
        INSERT INTO runstream_data.metric_series_summary
            (run_id, name, points, vmin, vmax, last_v, last_k, last_x, sort_value)
        SELECT m.run_id, m.name, m.points, m.vmin, m.vmax, m.last_v, m.last_k, m.last_x,
               m.sort_value
        FROM m
        RETURNING 1
    )
    INSERT INTO runstream_data.metric_summary_runs AS r (run_id, events, names, sort_values)
    SELECT fp.run_id, fp.events, coalesce(a.names, '{}'), coalesce(a.sort_values, '{}')
    FROM fp LEFT JOIN (
        SELECT m.run_id, array_agg(m.name ORDER BY m.name) AS names,
               array_agg(m.sort_value ORDER BY m.name) AS sort_values
        FROM m GROUP BY m.run_id) a ON a.run_id = fp.run_id
    WHERE (SELECT count(*) FROM ins) >= 0  -- the series' rows go in with these
    ORDER BY 1
    ON CONFLICT (run_id) DO UPDATE SET events = excluded.events, names = excluded.names,
        sort_values = excluded.sort_values, computed_at = now();
    GET DIAGNOSTICS stored = ROW_COUNT;
    RETURN stored;
END
$fn$;

-- As in 0002, plus: forget every stored summary when anything was dropped, under the lock
-- summarize_metric_runs shares.
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
    RETURN dropped;
END
$fn$;
