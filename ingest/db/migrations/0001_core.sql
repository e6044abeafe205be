-- Core tables. Internal storage lives in schema runstream_data (free to change);
-- the public, stable contract is the set of views in schema runstream (0003).

CREATE SCHEMA IF NOT EXISTS runstream_data;

-- Key/value knobs read by views and functions (e.g. not_responding_after).
CREATE TABLE runstream_data.settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO runstream_data.settings (key, value) VALUES
    ('not_responding_after', '60 seconds'),
    ('queue_stats_window', '24 hours');

-- The dedup key. A batch inserts its event ids with ON CONFLICT DO NOTHING RETURNING and
-- writes rows only for the ids that came back; the primary key makes that race-free
-- between any number of workers.
CREATE TABLE runstream_data.event_ids (
    event_id    uuid PRIMARY KEY,
    run_id      text NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now()
);

-- Next offset to read per (consumer group, topic, partition), written in the same
-- transaction as the rows. Workers seek here on assignment.
CREATE TABLE runstream_data.consumer_offsets (
    group_id    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Run state as a merge of per-status first-seen timestamps (min over events), so the
-- result does not depend on arrival order; status is derived from them (forward-only by
-- rank, the earliest terminal state sticks).
CREATE TABLE runstream_data.runs (
    run_id              text PRIMARY KEY,
    experiment          text NOT NULL,
    workspace           text NOT NULL,
    parent_run_id       text,
    display_name        text,
    compute_target      text,
    properties          jsonb NOT NULL DEFAULT '{}'::jsonb,
    meta_at             timestamptz,
    created_at          timestamptz NOT NULL,
    last_event_at       timestamptz NOT NULL,
    last_heartbeat_at   timestamptz,
    not_started_at      timestamptz,
    queued_at           timestamptz,
    preparing_at        timestamptz,
    running_at          timestamptz,
    finalizing_at       timestamptz,
    cancel_requested_at timestamptz,
    completed_at        timestamptz,
    failed_at           timestamptz,
    canceled_at         timestamptz,
    error               text,
    status text GENERATED ALWAYS AS (
        CASE
            WHEN completed_at IS NOT NULL
                 AND completed_at <= coalesce(failed_at, 'infinity'::timestamptz)
                 AND completed_at <= coalesce(canceled_at, 'infinity'::timestamptz)
                THEN 'Completed'
            WHEN failed_at IS NOT NULL
                 AND failed_at <= coalesce(canceled_at, 'infinity'::timestamptz)
                THEN 'Failed'
            WHEN canceled_at IS NOT NULL THEN 'Canceled'
            WHEN cancel_requested_at IS NOT NULL THEN 'CancelRequested'
            WHEN finalizing_at IS NOT NULL THEN 'Finalizing'
            WHEN running_at IS NOT NULL THEN 'Running'
            WHEN preparing_at IS NOT NULL THEN 'Preparing'
            WHEN queued_at IS NOT NULL THEN 'Queued'
            ELSE 'NotStarted'
        END) STORED,
    ended_at timestamptz GENERATED ALWAYS AS (least(completed_at, failed_at, canceled_at)) STORED
);
CREATE INDEX runs_experiment_idx ON runstream_data.runs (experiment, created_at);
CREATE INDEX runs_parent_idx ON runstream_data.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_target_status_idx ON runstream_data.runs (compute_target, status);

-- One row per producer (SDK process / rank) of a run: liveness, drops and seq gaps.
CREATE TABLE runstream_data.producers (
    run_id         text NOT NULL,
    producer_id    text NOT NULL,
    rank           integer NOT NULL,
    events         bigint NOT NULL,
    max_seq        bigint NOT NULL,
    dropped_events bigint NOT NULL DEFAULT 0,
    first_seen_at  timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    PRIMARY KEY (run_id, producer_id)
);

-- Tags: one row per (run, key); the newest write wins (same producer: higher seq;
-- different producers: later ts, then producer_id).
CREATE TABLE runstream_data.tags (
    run_id      text NOT NULL,
    key         text NOT NULL,
    value       text,
    set_at      timestamptz NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (run_id, key)
);

-- Artifacts: the newest reference per (run, name) wins, by the same rule as tags.
CREATE TABLE runstream_data.artifacts (
    run_id       text NOT NULL,
    name         text NOT NULL,
    kind         text NOT NULL,
    sha256       text NOT NULL,
    size_bytes   bigint NOT NULL,
    content_type text NOT NULL,
    rank         integer NOT NULL,
    producer_id  text NOT NULL,
    seq          bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (run_id, name)
);

-- Typed values of lists, rows and tables: nums[i] is the number (bool 0/1, int, float;
-- NaN for strings), kinds is one ASCII byte per value (f, i, b, s), texts[i] the string
-- for kind s (NULL otherwise).
CREATE TABLE runstream_data.list_values (
    run_id      text NOT NULL,
    name        text NOT NULL,
    rank        integer NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    logged_at   timestamptz NOT NULL,
    n           integer NOT NULL,
    nums        float8[] NOT NULL,
    kinds       bytea NOT NULL,
    texts       text[] NOT NULL
);
CREATE INDEX list_values_run_idx ON runstream_data.list_values (run_id, name);

-- One row per column of one log_row / log_table call ("block").
CREATE TABLE runstream_data.table_columns (
    run_id      text NOT NULL,
    name        text NOT NULL,
    source      text NOT NULL CHECK (source IN ('row', 'table')),
    rank        integer NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    logged_at   timestamptz NOT NULL,
    column_idx  integer NOT NULL,
    column_name text NOT NULL,
    n           integer NOT NULL,
    nums        float8[] NOT NULL,
    kinds       bytea NOT NULL,
    texts       text[] NOT NULL
);
CREATE INDEX table_columns_run_idx ON runstream_data.table_columns (run_id, name);

CREATE TABLE runstream_data.log_lines (
    run_id      text NOT NULL,
    stream      text NOT NULL,
    rank        integer NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    logged_at   timestamptz NOT NULL,
    lines       text[] NOT NULL
);
CREATE INDEX log_lines_run_idx ON runstream_data.log_lines (run_id, logged_at);

-- Poison messages, also sent to the DLQ topic; one row per source offset.
CREATE TABLE runstream_data.dead_letters (
    topic      text NOT NULL,
    partition  integer NOT NULL,
    "offset"   bigint NOT NULL,
    reason     text NOT NULL,
    detail     text NOT NULL,
    key        bytea,
    dead_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
