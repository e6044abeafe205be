"""Read SQL of the HTTP API, as named constants (the write side's SQL lives in store.py).

Queries read the public views (``runstream.runs``, ``runstream.artifacts``,
``runstream.compute_targets``, migration 0003) where those carry what is needed, and
``runstream_data`` tables for what the views do not expose: per-state times, metric
chunks (arrays), lists/tables, log lines and the downsampling tiles of migration 0006.

Run lists are composed from fragments: ``RUNS_*`` filters are joined with AND, each
with ``{}`` where its first parameter number goes (``ingest/db/reads.py`` numbers them).
"""

from __future__ import annotations

from typing import Final

#: RunSummary columns of ``runstream.runs`` (alias ``v``), in RunSummary order.
RUN_SUMMARY_COLUMNS: Final = (
    "v.run_id, v.experiment, v.workspace, v.parent_run_id, v.display_name, v.status, "
    "v.compute_target, v.created_at, v.queued_at, v.started_at, v.ended_at, v.tags, "
    "v.description"
)

# --- experiments -----------------------------------------------------------------------

#: Experiments with their run counts (in all, and per status as a JSON object), the
#: creation of their newest run, and their last activity (their runs' latest event).
SQL_EXPERIMENTS: Final = """
SELECT s.experiment AS name, s.workspace, sum(s.n)::bigint AS runs,
       max(s.last_run_at) AS last_run_at, max(s.last_event_at) AS last_activity_at,
       jsonb_object_agg(s.status, s.n) AS statuses
FROM (
    SELECT v.experiment, v.workspace, v.status, count(*) AS n,
           max(v.created_at) AS last_run_at, max(v.last_event_at) AS last_event_at
    FROM runstream.runs v
    WHERE ($1::text IS NULL OR (v.experiment, v.workspace) > ($1, $2::text))
      AND ($4::text[] IS NULL OR v.workspace = ANY($4::text[]))
    GROUP BY v.experiment, v.workspace, v.status
) s
GROUP BY s.experiment, s.workspace
ORDER BY s.experiment, s.workspace
LIMIT $3
"""

# --- runs: filters (each "{}" is the number of its first parameter) -----------------------


def last_metric_value(run: str, name: str) -> str:
    """SQL for a run's last value of a metric: the point at its highest step, then the
    latest time, then the highest rank; NULL for none, a string or NaN. ``run`` and
    ``name`` are SQL expressions (a column, a parameter), never request text."""
    return f"""(
        SELECT nullif(p.v, 'NaN'::float8)
        FROM runstream_data.metric_chunks c
        CROSS JOIN LATERAL unnest(c.steps, c."values", c.times) AS p(s, v, t)
        WHERE c.run_id = {run} AND c.name = {name}
          AND c.step_max = (SELECT max(c2.step_max) FROM runstream_data.metric_chunks c2
                            WHERE c2.run_id = {run} AND c2.name = {name})
          AND p.s = c.step_max
        ORDER BY p.t DESC, c.rank DESC
        LIMIT 1)"""  # noqa: S608 - SQL expressions of this module, never request text


def current_metric_value(run: str, name: str) -> str:
    """``last_metric_value`` from the run's stored summary (migration 0012) while it is
    current — the run's producers have stored no event since it was computed —, else
    computed from the chunks. Same answer; two index probes instead of the points."""
    return f"""(
        SELECT CASE WHEN r.events = (SELECT sum(p.events) FROM runstream_data.producers p
                                     WHERE p.run_id = {run})
                    THEN r.sort_values[array_position(r.names, {name})]
                    ELSE {last_metric_value(run, name)} END
        FROM (SELECT) AS one
        LEFT JOIN runstream_data.metric_summary_runs r ON r.run_id = {run})"""  # noqa: S608


RUNS_EXPERIMENT: Final = "v.experiment = ${}"
RUNS_WORKSPACE: Final = "v.workspace = ${}"
#: The workspaces a scoped token grants (``ingest/api/auth.py``).
RUNS_WORKSPACES: Final = "v.workspace = ANY(${}::text[])"
RUNS_STATUS: Final = "v.status = ANY(${}::text[])"
RUNS_COMPUTE_TARGET: Final = "v.compute_target = ${}"
RUNS_PARENT: Final = "v.parent_run_id = ${}"
RUNS_TOP_LEVEL: Final = "v.parent_run_id IS NULL"
#: A run's last value of metric ${0} compared with ${1}; "{op}" is replaced first by one
#: of METRIC_OPS (never by anything a request sent).
RUNS_METRIC_COMPARE: Final = current_metric_value("v.run_id", "${0}") + " {op} ${1}::float8"
METRIC_OPS: Final = ("<=", ">=", "<", ">", "=")
RUNS_CREATED_AFTER: Final = "v.created_at > ${}"
RUNS_CREATED_BEFORE: Final = "v.created_at < ${}"
#: Every (key, value) pair must match: value NULL means "has the key, any value"; else
#: a text value equals it, a number equals it read as a number, a boolean is it in any
#: case (``runstream_data.value_matches``, migration 0016).
RUNS_TAGS: Final = """NOT EXISTS (
    SELECT 1 FROM unnest(${}::text[], ${}::text[]) AS f(key, value)
    WHERE NOT EXISTS (
        SELECT 1 FROM runstream_data.tags t
        WHERE t.run_id = v.run_id AND t.key = f.key AND NOT t.removed
          AND (f.value IS NULL OR runstream_data.value_matches(
                   coalesce(t.typed_value, to_jsonb(t.value)), f.value))))"""
#: Every (key, value) pair must match the run's properties: value NULL means "has the key";
#: values match as tags' do.
RUNS_PROPERTIES: Final = """NOT EXISTS (
    SELECT 1 FROM unnest(${}::text[], ${}::text[]) AS f(key, value)
    WHERE NOT (v.properties ? f.key AND (f.value IS NULL
               OR runstream_data.value_matches(v.properties->f.key, f.value))))"""

# Keyset pagination on (created_at, run_id).
RUNS_AFTER_CREATED_DESC: Final = "(v.created_at, v.run_id) < (${}, ${})"
RUNS_AFTER_CREATED_ASC: Final = "(v.created_at, v.run_id) > (${}, ${})"

#: {columns} {where} {order} are formatted in; the last parameter is the limit.
SQL_RUNS_BY_CREATED: Final = """
SELECT {columns} FROM runstream.runs v
WHERE {where}
ORDER BY v.created_at {order}, v.run_id {order}
LIMIT ${limit}
"""

#: Metric names of the newest runs matching a filter, with how many of them logged each.
SQL_METRIC_NAMES: Final = """
WITH r AS (SELECT v.run_id FROM runstream.runs v WHERE {where}
           ORDER BY v.created_at DESC, v.run_id DESC LIMIT ${limit}),
x AS (
    SELECT DISTINCT c.run_id, c.name, 'series' AS kind
    FROM runstream_data.metric_chunks c JOIN r ON r.run_id = c.run_id
    UNION
    SELECT DISTINCT l.run_id, l.name, 'list' FROM runstream_data.list_values l
    JOIN r ON r.run_id = l.run_id
    UNION
    SELECT DISTINCT t.run_id, t.name, 'table' FROM runstream_data.table_columns t
    JOIN r ON r.run_id = t.run_id)
SELECT (SELECT count(*) FROM r) AS scanned, n.name, n.kind, n.runs
FROM (SELECT 1) one
LEFT JOIN (SELECT x.name, x.kind, count(*) AS runs FROM x GROUP BY x.name, x.kind) n ON true
ORDER BY n.name, n.kind
"""

# Ordering by a metric's last value: the point at the highest step, then the latest time,
# then the highest rank. Non-numbers (strings, NaN) and runs without the metric sort last.
SQL_RUNS_BY_METRIC: Final = """
WITH f AS MATERIALIZED (
    SELECT v.run_id FROM runstream.runs v WHERE {where}
),
-- The runs' stored summaries (migration 0012) and producers' event counts, read as two
-- range scans over the run ids of f (an experiment's run ids share its prefix) joined by
-- hash rather than probed run by run; a run whose summary is missing or outdated gets
-- its value computed from its chunks.
b AS MATERIALIZED (SELECT min(f.run_id) AS lo, max(f.run_id) AS hi FROM f),
fp AS (
    SELECT p.run_id, sum(p.events) AS events FROM runstream_data.producers p
    WHERE p.run_id BETWEEN (SELECT b.lo FROM b) AND (SELECT b.hi FROM b)
    GROUP BY p.run_id
),
r AS (
    SELECT r.run_id, r.events, r.sort_values[array_position(r.names, ${metric}::text)] AS value
    FROM runstream_data.metric_summary_runs r
    WHERE r.run_id BETWEEN (SELECT b.lo FROM b) AND (SELECT b.hi FROM b)
),
k AS (
    SELECT f.run_id,
           CASE WHEN r.events = fp.events
                THEN r.value
                ELSE """ + last_metric_value("f.run_id", "${metric}") + """ END AS sort_value
    FROM f
    LEFT JOIN r ON r.run_id = f.run_id
    LEFT JOIN fp ON fp.run_id = f.run_id
),
page AS (
    SELECT k.run_id, k.sort_value FROM k
    WHERE {keyset}
    ORDER BY k.sort_value {order} NULLS LAST, k.run_id {order}
    LIMIT ${limit}
)
SELECT {columns}, page.sort_value
FROM page JOIN runstream.runs v ON v.run_id = page.run_id
ORDER BY page.sort_value {order} NULLS LAST, page.run_id {order}
"""  # noqa: S608 - SQL of this module; the request's values are parameters
# Keyset conditions on (sort_value NULLS LAST, run_id): after a value ($0 value, $1 run
# id), or after a run without one ($0 run id).
METRIC_KEYSET_NONE: Final = "true"
METRIC_AFTER_VALUE_DESC: Final = (
    "(k.sort_value < ${0}::float8 OR (k.sort_value = ${0}::float8 AND k.run_id < ${1})"
    " OR k.sort_value IS NULL)"
)
METRIC_AFTER_VALUE_ASC: Final = (
    "(k.sort_value > ${0}::float8 OR (k.sort_value = ${0}::float8 AND k.run_id > ${1})"
    " OR k.sort_value IS NULL)"
)
METRIC_AFTER_NULL_DESC: Final = "(k.sort_value IS NULL AND k.run_id < ${0})"
METRIC_AFTER_NULL_ASC: Final = "(k.sort_value IS NULL AND k.run_id > ${0})"

# --- one run ------------------------------------------------------------------------------

SQL_RUN_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM runstream_data.runs WHERE run_id = $1)"
SQL_RUN_WORKSPACE: Final = "SELECT workspace FROM runstream_data.runs WHERE run_id = $1"
#: A compute target without runs yet that submissions or agents already name.
SQL_TARGET_NAMED: Final = """
SELECT EXISTS (SELECT 1 FROM runstream_data.submissions WHERE target = $1)
    OR EXISTS (SELECT 1 FROM runstream_data.agents WHERE target = $1)
"""
SQL_RUN_WORKSPACES: Final = """
SELECT run_id, workspace FROM runstream_data.runs WHERE run_id = ANY($1::text[])
"""

#: Values of run ``r`` logged after it ended — metric points, list values and table cells
#: whose own time (the SDK's, at the call) is later than the run's end: late data of other
#: ranks or processes, stored like any other and counted here (0 while the run is open).
SQL_LOGGED_AFTER_END: Final = """(CASE WHEN r.ended_at IS NULL THEN 0 ELSE
    coalesce((SELECT sum(CASE WHEN c.time_min > r.ended_at THEN c.n ELSE
                 (SELECT count(*) FROM unnest(c.times) AS t(us)
                  WHERE t.us > (extract(epoch FROM r.ended_at) * 1000000)::bigint) END)
              FROM runstream_data.metric_chunks c
              WHERE c.run_id = r.run_id AND c.time_max > r.ended_at), 0)
    + coalesce((SELECT sum(l.n) FROM runstream_data.list_values l
                WHERE l.run_id = r.run_id AND l.logged_at > r.ended_at), 0)
    + coalesce((SELECT sum(t.n) FROM runstream_data.table_columns t
                WHERE t.run_id = r.run_id AND t.logged_at > r.ended_at), 0)
    END)::bigint"""

SQL_RUN_DETAILS: Final = f"""
SELECT {RUN_SUMMARY_COLUMNS},
       v.error, v.properties, v.last_heartbeat_at, v.dropped_events,
       r.not_started_at, r.queued_at AS queued_at_, r.preparing_at, r.running_at,
       r.finalizing_at, r.cancel_requested_at, r.completed_at, r.failed_at, r.canceled_at,
       ARRAY(SELECT c.run_id FROM runstream_data.runs c WHERE c.parent_run_id = v.run_id
             ORDER BY c.created_at, c.run_id) AS children,
       (SELECT count(*) FROM runstream_data.runs n
        WHERE n.experiment = r.experiment AND n.workspace = r.workspace
          AND (n.created_at, n.run_id) <= (r.created_at, r.run_id)) AS number,
       {SQL_LOGGED_AFTER_END} AS logged_after_end
FROM runstream.runs v
JOIN runstream_data.runs r ON r.run_id = v.run_id
WHERE v.run_id = $1
"""  # noqa: S608 - built from constants only

#: Stored events and the highest seq of some producers of a run (read-your-writes).
SQL_RUN_PRODUCERS: Final = """
SELECT p.producer_id, p.events, p.max_seq FROM runstream_data.producers p
WHERE p.run_id = $1 AND p.producer_id = ANY($2::text[])
"""

SQL_FILES: Final = """
SELECT a.name, a.kind, a.sha256, a.size_bytes, a.content_type, a.created_at, a.metric
FROM runstream.artifacts a WHERE a.run_id = $1 ORDER BY a.name
"""
SQL_FILE: Final = """
SELECT a.sha256, a.size_bytes, a.content_type
FROM runstream.artifacts a WHERE a.run_id = $1 AND a.name = $2
"""

# Log lines in (time, producer, seq, line_no) order after a cursor; line_no is 0-based.
SQL_LOG_LINES: Final = """
SELECT l.stream, u.line, l.rank, l.logged_at, l.producer_id, l.seq, (u.i - 1)::integer AS line_no
FROM runstream_data.log_lines l
CROSS JOIN LATERAL unnest(l.lines) WITH ORDINALITY AS u(line, i)
WHERE l.run_id = $1
ORDER BY l.logged_at, l.producer_id, l.seq, u.i
LIMIT $2
"""
SQL_LOG_LINES_AFTER: Final = """
SELECT l.stream, u.line, l.rank, l.logged_at, l.producer_id, l.seq, (u.i - 1)::integer AS line_no
FROM runstream_data.log_lines l
CROSS JOIN LATERAL unnest(l.lines) WITH ORDINALITY AS u(line, i)
WHERE l.run_id = $1 AND l.logged_at >= $2
  AND (l.logged_at, l.producer_id, l.seq) >= ($2, $3, $4)
  AND (l.logged_at, l.producer_id, l.seq, u.i - 1) > ($2, $3, $4, $5)
ORDER BY l.logged_at, l.producer_id, l.seq, u.i
LIMIT $6
"""

# --- metrics (Azure-shaped dict) -----------------------------------------------------------

# Chunks of every series (or of the names in $2; of the part $3 of $4 when split by name
# hash, to use two cores), ordered for a merge by (step, rank, time). A float-only chunk
# whose steps strictly increase comes with its values already as JSON (UTF-8 bytes):
# PostgreSQL formats floats (shortest round-trip form) several times faster than Python,
# and array_to_json writes NaN/±Infinity as the strings the API promises. values_json is
# NULL for any other chunk (typed values, steps out of order): those series are merged
# point by point. The step check is cheap for consecutive steps (the SDK's counters).
SQL_METRIC_CHUNKS: Final = """
SELECT c.name, c.rank, c.n, c.step_min, c.step_max,
       CASE WHEN c.kinds IS NULL AND (
                c.n < 2
                OR CASE WHEN c.n = c.step_max - c.step_min + 1
                        THEN c.steps = ARRAY(SELECT generate_series(c.step_min, c.step_max))
                        ELSE (SELECT bool_and(u.a < u.b) FROM (
                                  SELECT unnest(c.steps[:c.n - 1]) AS a,
                                         unnest(c.steps[2:]) AS b) u) END)
            THEN convert_to(array_to_json(c."values")::text, 'UTF8') END AS values_json
FROM runstream_data.metric_chunks c
WHERE c.run_id = $1 AND ($2::text[] IS NULL OR c.name = ANY($2))
  AND (hashtext(c.name) & 2147483647) % $4 = $3
ORDER BY c.name, c.step_min, c.rank, c.time_min
"""
# Everything of the named series, for the general merge in Python.
SQL_METRIC_CHUNKS_FULL: Final = """
SELECT c.name, c.rank, c.steps, c."values", c.times, c.kinds, c.texts
FROM runstream_data.metric_chunks c
WHERE c.run_id = $1 AND c.name = ANY($2::text[])
"""
SQL_LIST_VALUES: Final = """
SELECT l.name, l.nums, l.kinds, l.texts
FROM runstream_data.list_values l
WHERE l.run_id = $1 AND ($2::text[] IS NULL OR l.name = ANY($2))
ORDER BY l.name, l.logged_at, l.rank, l.producer_id, l.seq
"""
# Blocks (one log_row or log_table call) in the order of runstream.table_cells.row_index.
SQL_TABLE_COLUMNS: Final = """
SELECT t.name, t.logged_at, t.rank, t.producer_id, t.seq, t.column_name, t.n,
       t.nums, t.kinds, t.texts
FROM runstream_data.table_columns t
WHERE t.run_id = $1 AND ($2::text[] IS NULL OR t.name = ANY($2))
ORDER BY t.name, t.logged_at, t.rank, t.producer_id, t.seq, t.column_idx
"""

# --- one series, downsampled ---------------------------------------------------------------
# Parameters: $1 run_id, $2 name, $3 rank (NULL: all), $4 step_min, $5 step_max.

#: What a run logged, without its values (GET /v1/runs/{id}/metric-index).
SQL_SERIES_NAMES: Final = """
SELECT DISTINCT c.name FROM runstream_data.metric_chunks c WHERE c.run_id = $1 ORDER BY 1
"""
SQL_LIST_COUNTS: Final = """
SELECT l.name, sum(cardinality(l.nums))::bigint AS count
FROM runstream_data.list_values l WHERE l.run_id = $1 GROUP BY l.name ORDER BY 1
"""
#: Rows of each table (a block's height is its longest column) and its columns in the
#: order they first appeared.
SQL_TABLE_SHAPES: Final = """
SELECT b.name, sum(b.height)::bigint AS count,
       (SELECT array_agg(c.column_name ORDER BY c.first, c.idx) FROM (
            SELECT t.column_name, min(t.logged_at) AS first, min(t.column_idx) AS idx
            FROM runstream_data.table_columns t
            WHERE t.run_id = $1 AND t.name = b.name GROUP BY t.column_name) c) AS columns
FROM (SELECT t.name, max(t.n) AS height FROM runstream_data.table_columns t
      WHERE t.run_id = $1 GROUP BY t.name, t.logged_at, t.rank, t.producer_id, t.seq) b
GROUP BY b.name ORDER BY 1
"""
SQL_SERIES_EXISTS: Final = """
SELECT EXISTS (SELECT 1 FROM runstream_data.metric_chunks c
               WHERE c.run_id = $1 AND c.name = $2)
"""
# Per run of $1 (rank $3, NULL: all), the series $2's points in [$4, $5] (chunks partly
# inside are counted point by point), the step range of the chunks involved, how many
# points are not yet summarised in tiles, and whether the tiles hold chunks since deleted:
# one row per run with chunks in range (a run without is absent).
SQL_SERIES_STATS: Final = """
SELECT c.run_id, count(*) AS chunks, count(DISTINCT c.rank) AS ranks,
       coalesce(sum(CASE WHEN c.step_min >= $4 AND c.step_max <= $5 THEN c.n
                         ELSE (SELECT count(*) FROM unnest(c.steps) AS s
                               WHERE s BETWEEN $4 AND $5) END), 0)::bigint AS points,
       min(c.step_min) AS step_min, max(c.step_max) AS step_max,
       coalesce(sum(c.n) FILTER (WHERE m.run_id IS NULL), 0)::bigint AS untiled_points,
       (SELECT s.min_level FROM runstream_data.metric_tile_series s
        WHERE s.run_id = c.run_id AND s.name = $2) AS min_level,
       -- tiles holding chunks that are gone (retention drops the oldest): rebuild first
       coalesce((SELECT min(m2.time_min) FROM runstream_data.metric_tiled_chunks m2
                 WHERE m2.run_id = c.run_id AND m2.name = $2)
                < (SELECT min(c2.time_min) FROM runstream_data.metric_chunks c2
                   WHERE c2.run_id = c.run_id AND c2.name = $2), false) AS stale_tiles
FROM runstream_data.metric_chunks c
LEFT JOIN runstream_data.metric_tiled_chunks m
       ON m.run_id = c.run_id AND m.name = c.name AND m.producer_id = c.producer_id
      AND m.seq = c.seq AND m.series_idx = c.series_idx
WHERE c.run_id = ANY($1::text[]) AND c.name = $2 AND ($3::integer IS NULL OR c.rank = $3)
  AND c.step_max >= $4 AND c.step_min <= $5
GROUP BY c.run_id
"""
SQL_SERIES_POINTS: Final = """
SELECT p.s AS step, p.v AS value, p.k AS kind, p.x AS text, p.rank, p.t AS time_us
FROM (
    SELECT c.rank, unnest(c.steps) AS s, unnest(c."values") AS v, unnest(c.times) AS t,
           unnest(string_to_array(encode(c.kinds, 'escape'), NULL)) AS k,
           unnest(c.texts) AS x
    FROM runstream_data.metric_chunks c
    WHERE c.run_id = $1 AND c.name = $2 AND ($3::integer IS NULL OR c.rank = $3)
      AND c.step_max >= $4 AND c.step_min <= $5
) p
WHERE p.s BETWEEN $4 AND $5
ORDER BY p.s, p.rank, p.t
LIMIT $6
"""
SQL_TILE_SERIES: Final = "SELECT runstream_data.tile_metric_series($1, $2)"
#: Summaries (count, last, min, max) of the series named $2 of the runs $1 (migration
#: 0012): stored ones for runs whose producers stored nothing since they were computed,
#: computed for the others — in one statement, so both come from one snapshot.
#: ``untiled``/``stale``: a computed larger series' points read raw, and whether its tiles
#: hold chunks since dropped (the caller then tiles it and asks again).
SQL_SERIES_SUMMARIES: Final = """
WITH fp AS (
    SELECT p.run_id, sum(p.events) AS events FROM runstream_data.producers p
    WHERE p.run_id = ANY($1::text[]) GROUP BY p.run_id
),
ok AS MATERIALIZED (
    SELECT r.run_id FROM runstream_data.metric_summary_runs r
    JOIN fp ON fp.run_id = r.run_id AND fp.events = r.events
)
SELECT s.run_id, s.name, s.points, s.vmin, s.vmax, s.last_v, s.last_k, s.last_x,
       0::bigint AS untiled, false AS stale
FROM runstream_data.metric_series_summary s
WHERE s.run_id IN (SELECT ok.run_id FROM ok) AND s.name = ANY($2::text[])
UNION ALL
SELECT m.run_id, m.name, m.points, m.vmin, m.vmax, m.last_v, m.last_k, m.last_x,
       m.untiled, m.stale
FROM runstream_data.metric_summaries(
    ARRAY(SELECT u FROM unnest($1::text[]) AS u EXCEPT SELECT ok.run_id FROM ok),
    $2::text[]) m
"""
# Buckets ((step - $8) / $7) from whole tiles of level $6 (tile numbers $9..$10, i.e.
# steps $11..$12) plus raw points: those outside $11..$12 and those of chunks not yet in
# the tiles. $13 false: no tiles at all (every point raw).
SQL_SERIES_BUCKETS: Final = """
WITH part AS (
    SELECT ((t.tile << t.level) - $8) / $7 AS bucket, t.n, t.vmin, t.vmax, t.smin, t.smax,
           t.tmin, t.tmax, t.rank, t.last_t, t.last_v, t.last_k, t.last_x
    FROM runstream_data.metric_tiles t
    WHERE $13 AND t.run_id = $1 AND t.name = $2 AND t.level = $6
      AND ($3::integer IS NULL OR t.rank = $3) AND t.tile BETWEEN $9 AND $10
    UNION ALL
    SELECT (p.s - $8) / $7, 1,
           CASE WHEN p.v > '-Infinity' AND p.v < 'Infinity' THEN p.v END,
           CASE WHEN p.v > '-Infinity' AND p.v < 'Infinity' THEN p.v END,
           p.s, p.s, p.t, p.t, p.rank, p.t, p.v, coalesce(ascii(p.k), 102), p.x
    FROM (
        SELECT c.rank, unnest(c.steps) AS s, unnest(c."values") AS v, unnest(c.times) AS t,
               unnest(string_to_array(encode(c.kinds, 'escape'), NULL)) AS k,
               unnest(c.texts) AS x,
               NOT $13 OR (c.producer_id, c.seq, c.series_idx) NOT IN (
                   SELECT m.producer_id, m.seq, m.series_idx
                   FROM runstream_data.metric_tiled_chunks m
                   WHERE m.run_id = $1 AND m.name = $2) AS raw
        FROM runstream_data.metric_chunks c
        WHERE c.run_id = $1 AND c.name = $2 AND ($3::integer IS NULL OR c.rank = $3)
          AND c.step_max >= $4 AND c.step_min <= $5
          AND (NOT $13 OR c.step_min < $11 OR c.step_max > $12
               OR (c.producer_id, c.seq, c.series_idx) NOT IN (
                   SELECT m.producer_id, m.seq, m.series_idx
                   FROM runstream_data.metric_tiled_chunks m
                   WHERE m.run_id = $1 AND m.name = $2))
    ) p
    WHERE p.s BETWEEN $4 AND $5 AND (p.raw OR p.s < $11 OR p.s > $12)
),
agg AS (
    SELECT bucket, sum(n)::bigint AS count, min(vmin) AS vmin, max(vmax) AS vmax,
           min(smin) AS step_min, max(smax) AS step_max, min(tmin) AS time_min,
           max(tmax) AS time_max
    FROM part GROUP BY bucket
),
lst AS (
    SELECT DISTINCT ON (bucket) bucket, last_v, last_k, last_x
    FROM part ORDER BY bucket, smax DESC, last_t DESC, rank DESC
)
SELECT a.bucket, a.count, a.vmin, a.vmax, a.step_min, a.step_max, a.time_min, a.time_max,
       l.last_v, l.last_k, l.last_x
FROM agg a JOIN lst l ON l.bucket = a.bucket
ORDER BY a.bucket
"""

#: The buckets of SQL_SERIES_BUCKETS (same parameters) as ``format=columns`` wants them:
#: one JSON array per field, written by PostgreSQL (several times faster than encoding
#: thousands of numbers in Python), with the bucket count and total points. The arrays
#: take the rows in the order the subquery sorts them (one sort, not one per array);
#: ``bucket`` is that order, for the caller to check. ``last`` is NULL unless every
#: bucket's last value is a float (the caller then shapes the rows itself). Float arrays
#: still need ``values.float_array_json``.
SQL_SERIES_BUCKET_COLUMNS: Final = """
SELECT count(*) AS buckets, coalesce(sum(b.count), 0)::bigint AS total,
       count(b.vmin) AS vmins, count(b.vmax) AS vmaxs, array_agg(b.bucket) AS bucket,
       convert_to(coalesce(array_to_json(array_agg(b.step_min))::text, '[]'), 'UTF8')
           AS step_min,
       convert_to(coalesce(array_to_json(array_agg(b.step_max))::text, '[]'), 'UTF8')
           AS step_max,
       convert_to(coalesce(array_to_json(array_agg(b.count))::text, '[]'), 'UTF8') AS count,
       convert_to(coalesce(array_to_json(array_agg(b.vmin))::text, '[]'), 'UTF8') AS vmin,
       convert_to(coalesce(array_to_json(array_agg(b.vmax))::text, '[]'), 'UTF8') AS vmax,
       CASE WHEN coalesce(bool_and(b.last_k = 102), true) THEN convert_to(coalesce(
           array_to_json(array_agg(b.last_v))::text, '[]'), 'UTF8') END AS last,
       convert_to(coalesce(array_to_json(array_agg(b.time_min))::text, '[]'), 'UTF8')
           AS time_min,
       convert_to(coalesce(array_to_json(array_agg(b.time_max))::text, '[]'), 'UTF8')
           AS time_max
FROM (""" + SQL_SERIES_BUCKETS + """) b
"""

# --- compute targets ---------------------------------------------------------------------------

_QUEUE_COLUMNS: Final = """
SELECT q.compute_target, q.queued, q.preparing, q.running, q.not_responding,
       q.oldest_queued_age_s, q.queue_wait_p50_s, q.queue_wait_p95_s,
       q.completed_1h, q.failed_1h, q.canceled_1h
FROM runstream.compute_targets q
"""  # the columns of ingest.db.queues.QueueState
SQL_QUEUES: Final = _QUEUE_COLUMNS + "ORDER BY q.compute_target"
SQL_QUEUE: Final = _QUEUE_COLUMNS + "WHERE q.compute_target = $1"
#: A target's active runs: queued, preparing, running (also not responding), finalizing
#: or cancel-requested; ended runs leave the list.
SQL_ACTIVE_RUNS: Final = f"""
SELECT {RUN_SUMMARY_COLUMNS} FROM runstream.runs v
WHERE v.compute_target = $1
  AND ($2::text[] IS NULL OR v.workspace = ANY($2::text[]))
  AND v.status IN ('Queued', 'Preparing', 'Running', 'NotResponding', 'Finalizing',
                   'CancelRequested')
ORDER BY v.created_at, v.run_id
"""  # noqa: S608 - built from constants only

SQL_PING: Final = "SELECT 1"

# --- live streams (ingest/api/live/streams.py) -----------------------------------------

SQL_RUN_STATUS: Final = """
SELECT v.status, v.error, r.not_started_at, r.queued_at, r.preparing_at, r.running_at,
       r.finalizing_at, r.cancel_requested_at, r.completed_at, r.failed_at, r.canceled_at
FROM runstream.runs v JOIN runstream_data.runs r ON r.run_id = v.run_id
WHERE v.run_id = $1
"""
# The newest transaction already committed for a run: where a stream without an id starts.
SQL_POINTS_HEAD: Final = """
SELECT coalesce(max(ingested_at), now() - $2::interval) FROM runstream_data.metric_chunks
WHERE run_id = $1 AND time_min > now() - $2::interval
"""
SQL_LOGS_HEAD: Final = """
SELECT coalesce(max(ingested_at), 'epoch'::timestamptz) FROM runstream_data.log_lines
WHERE run_id = $1
"""
# $2 ingested_at of the cursor; $3..$5 the last row read in it (NULLs: none yet); rows of
# transaction $2 come first. `ingested_at >= $2` is what the (run_id, ingested_at) index
# serves; the row comparison then skips what was read.
SQL_POINTS_PAGE: Final = """
SELECT ingested_at, producer_id, seq, series_idx, name, rank, steps, "values", times,
       kinds, texts
FROM runstream_data.metric_chunks
WHERE run_id = $1 AND ingested_at >= $2 AND time_min > $2 - $7::interval
  AND ($3::text IS NULL OR (ingested_at, producer_id, seq, series_idx) > ($2, $3, $4, $5))
  AND ($8 OR ingested_at > $2)
ORDER BY ingested_at, producer_id, seq, series_idx
LIMIT $6
"""
SQL_LOGS_PAGE: Final = """
SELECT ingested_at, producer_id, seq, 0 AS series_idx, stream, rank, logged_at, lines
FROM runstream_data.log_lines
WHERE run_id = $1 AND ingested_at >= $2
  AND ($3::text IS NULL OR (ingested_at, producer_id, seq) > ($2, $3, $4))
  AND ($5 OR ingested_at > $2)
ORDER BY ingested_at, producer_id, seq
LIMIT $6
"""
