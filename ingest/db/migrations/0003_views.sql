-- Public analytics views: the stable contract (change only compatibly: add columns at
-- the end, never rename or drop). Times are timestamptz; values keep NaN and ±Infinity.

CREATE SCHEMA IF NOT EXISTS runstream;

CREATE FUNCTION runstream_data.not_responding_after() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value::interval FROM runstream_data.settings
                     WHERE key = 'not_responding_after'), interval '60 seconds')
$$;

CREATE FUNCTION runstream_data.micros_to_timestamptz(us bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT timestamptz '1970-01-01 00:00:00+00' + us * interval '1 microsecond'
$$;

CREATE FUNCTION runstream_data.kind_name(k integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE k WHEN 102 THEN 'float' WHEN 105 THEN 'int' WHEN 98 THEN 'bool'
                  WHEN 115 THEN 'str' END
$$;

-- runstream.runs: one row per run.
--   run_id, experiment, parent_run_id, display_name: identity (first Lifecycle event);
--   status: NotStarted|Queued|Preparing|Running|Finalizing|CancelRequested|Completed|
--     Failed|Canceled, or NotResponding = Running with no event (heartbeat or other) for
--     runstream_data.settings 'not_responding_after' (default 60 s);
--   compute_target; created_at (earliest event), queued_at, started_at (Running),
--   ended_at (terminal); tags jsonb {key: value|null};
--   then: workspace, preparing_at, finalizing_at, cancel_requested_at, error (text of the Failed event when the status is Failed),
--   properties jsonb, last_event_at, last_heartbeat_at, dropped_events (sum over producers).
CREATE VIEW runstream.runs AS
SELECT r.run_id,
       r.experiment,
       r.parent_run_id,
       r.display_name,
       CASE WHEN r.status = 'Running'
                 AND r.last_event_at < now() - runstream_data.not_responding_after()
            THEN 'NotResponding' ELSE r.status END AS status,
       r.compute_target,
       r.created_at,
       r.queued_at,
       r.running_at AS started_at,
       r.ended_at,
       coalesce((SELECT jsonb_object_agg(t.key, t.value) FROM runstream_data.tags t
                 WHERE t.run_id = r.run_id), '{}'::jsonb) AS tags,
       r.workspace,
       r.preparing_at,
       r.finalizing_at,
       r.cancel_requested_at,
       CASE WHEN r.status = 'Failed' THEN r.error END AS error,
       r.properties,
       r.last_event_at,
       r.last_heartbeat_at,
       coalesce((SELECT sum(p.dropped_events) FROM runstream_data.producers p
                 WHERE p.run_id = r.run_id), 0)::bigint AS dropped_events
FROM runstream_data.runs r;

-- runstream.metric_points: one row per logged scalar point.
--   run_id, experiment, name, step, value (double precision; NULL for strings; NaN and
--   ±Infinity kept), value_text (the string for string points), rank, time;
--   then: kind (float|int|bool|str), producer_id, seq (the event's producer seq).
--   A series reads in (step, rank, time) order.
CREATE VIEW runstream.metric_points AS
SELECT c.run_id,
       r.experiment,
       c.name,
       p.step,
       CASE WHEN c.kinds IS NOT NULL AND get_byte(c.kinds, (p.i - 1)::integer) = 115
            THEN NULL ELSE p.value END AS value,
       CASE WHEN c.texts IS NULL THEN NULL ELSE c.texts[p.i] END AS value_text,
       c.rank,
       runstream_data.micros_to_timestamptz(p.t) AS time,
       CASE WHEN c.kinds IS NULL THEN 'float'
            ELSE runstream_data.kind_name(get_byte(c.kinds, (p.i - 1)::integer)) END AS kind,
       c.producer_id,
       c.seq
FROM runstream_data.metric_chunks c
JOIN runstream_data.runs r ON r.run_id = c.run_id
CROSS JOIN LATERAL unnest(c.steps, c."values", c.times) WITH ORDINALITY AS p(step, value, t, i);

-- runstream.lists: one row per element of a log_list call.
--   run_id, experiment, name, idx (0-based position), value, value_text, kind, rank,
--   time (of the call), producer_id, seq.
CREATE VIEW runstream.lists AS
SELECT l.run_id,
       r.experiment,
       l.name,
       (e.i - 1)::integer AS idx,
       CASE WHEN e.k = 115 THEN NULL ELSE e.num END AS value,
       e.txt AS value_text,
       runstream_data.kind_name(e.k) AS kind,
       l.rank,
       l.logged_at AS time,
       l.producer_id,
       l.seq
FROM runstream_data.list_values l
JOIN runstream_data.runs r ON r.run_id = l.run_id
CROSS JOIN LATERAL (
    SELECT u.num, u.txt, u.i, get_byte(l.kinds, (u.i - 1)::integer) AS k
    FROM unnest(l.nums, l.texts) WITH ORDINALITY AS u(num, txt, i)
) e;

-- runstream.table_cells: one row per cell of a table built by log_row (one row per call)
-- and/or log_table (a block of rows per call).
--   run_id, experiment, name (table name), row_index (0-based, blocks ordered by time,
--   rank, producer_id, seq), column_name, value, value_text, kind, rank, time, source
--   (row|table), producer_id, seq.
CREATE VIEW runstream.table_cells AS
SELECT c.run_id,
       r.experiment,
       c.name,
       (dense_rank() OVER (PARTITION BY c.run_id, c.name
                           ORDER BY c.logged_at, c.rank, c.producer_id, c.seq, e.i) - 1)::bigint
           AS row_index,
       c.column_name,
       CASE WHEN e.k = 115 THEN NULL ELSE e.num END AS value,
       e.txt AS value_text,
       runstream_data.kind_name(e.k) AS kind,
       c.rank,
       c.logged_at AS time,
       c.source,
       c.producer_id,
       c.seq
FROM runstream_data.table_columns c
JOIN runstream_data.runs r ON r.run_id = c.run_id
CROSS JOIN LATERAL (
    SELECT u.num, u.txt, u.i, get_byte(c.kinds, (u.i - 1)::integer) AS k
    FROM unnest(c.nums, c.texts) WITH ORDINALITY AS u(num, txt, i)
) e;

-- runstream.artifacts: the newest reference per (run, name).
--   run_id, experiment, name (relative POSIX path), kind (FILE|IMAGE), sha256 (blob
--   digest), size_bytes, content_type, rank, created_at.
CREATE VIEW runstream.artifacts AS
SELECT a.run_id, r.experiment, a.name, a.kind, a.sha256, a.size_bytes, a.content_type,
       a.rank, a.created_at
FROM runstream_data.artifacts a
JOIN runstream_data.runs r ON r.run_id = a.run_id;

-- runstream.tags: current value per (run, key) (newest write wins).
--   run_id, experiment, key, value (NULL for a bare tag), set_at.
CREATE VIEW runstream.tags AS
SELECT t.run_id, r.experiment, t.key, t.value, t.set_at
FROM runstream_data.tags t
JOIN runstream_data.runs r ON r.run_id = t.run_id;

-- runstream.log_lines: one row per captured line.
--   run_id, experiment, stream (stdout|stderr|name), line_no (0-based within the event),
--   line, rank, time, producer_id, seq.
CREATE VIEW runstream.log_lines AS
SELECT l.run_id, r.experiment, l.stream, (u.i - 1)::integer AS line_no, u.line, l.rank,
       l.logged_at AS time, l.producer_id, l.seq
FROM runstream_data.log_lines l
JOIN runstream_data.runs r ON r.run_id = l.run_id
CROSS JOIN LATERAL unnest(l.lines) WITH ORDINALITY AS u(line, i);

-- runstream.producers: one row per producer (SDK process, one per rank) of a run.
--   run_id, producer_id, rank, events (distinct events stored), max_seq,
--   missing_events (max_seq + 1 - events: seq gaps not yet received), dropped_events
--   (reported by the SDK's heartbeats), first_seen_at, last_seen_at.
CREATE VIEW runstream.producers AS
SELECT p.run_id, p.producer_id, p.rank, p.events, p.max_seq,
       greatest(p.max_seq + 1 - p.events, 0) AS missing_events,
       p.dropped_events, p.first_seen_at, p.last_seen_at
FROM runstream_data.producers p;

-- runstream.compute_targets: queue state per compute target (runs without one excluded).
--   compute_target, queued, preparing, running (incl. not responding), not_responding,
--   oldest_queued_at, oldest_queued_age_s, queue_wait_p50_s / _p90_s / _p99_s (queued →
--   preparing or running, over runs that left the queue within 'queue_stats_window',
--   default 24 h), completed_1h, failed_1h, canceled_1h (ended within the last hour).
CREATE VIEW runstream.compute_targets AS
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
           AS canceled_1h
FROM r
CROSS JOIN LATERAL (
    SELECT r.wait_s IS NOT NULL AND r.dequeued_at > now() - coalesce(
        (SELECT value::interval FROM runstream_data.settings WHERE key = 'queue_stats_window'),
        interval '24 hours') AS recent
) w
GROUP BY compute_target;

-- runstream.dead_letters: poison messages (also on the DLQ topic).
--   topic, partition, offset, reason, detail, dead_at.
CREATE VIEW runstream.dead_letters AS
SELECT topic, partition, "offset", reason, detail, dead_at FROM runstream_data.dead_letters;
