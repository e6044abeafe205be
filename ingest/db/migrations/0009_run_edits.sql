-- After-the-fact edits of a run's metadata (event schema v2: Tag.target) and typed metrics
-- (Artifact.metric). Compatible changes only: columns added at the ends of views.
--
-- Tags gain tombstones: remove_tags writes a row with removed = true, by the same
-- newest-write-wins rule as a tag, so a later tag of the key brings it back and replays
-- in any order end in the same state.
ALTER TABLE runstream_data.tags ADD COLUMN removed boolean NOT NULL DEFAULT false;

-- Properties, display name and description set after a run started (add_properties,
-- run.display_name = ..., run.description = ...), from any producer, also after the run
-- ended. One row per (run, field, key); key is '' for display_name and description.
--   display_name, description: the newest write wins (same producer: higher seq; other
--     producers: later set_at, then producer_id), as for tags;
--   property: the first write wins (the reverse order), so a property never changes once
--     set; the properties given when the run started (runs.properties) win over both.
CREATE TABLE runstream_data.run_edits (
    run_id      text NOT NULL,
    field       text NOT NULL CHECK (field IN ('property', 'display_name', 'description')),
    key         text NOT NULL,
    value       text NOT NULL,
    set_at      timestamptz NOT NULL,
    producer_id text NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (run_id, field, key)
);

-- A typed metric (log_confusion_matrix, log_accuracy_table, log_residuals,
-- log_predictions) is an artifact holding Azure ML's JSON, with its schema type here.
ALTER TABLE runstream_data.artifacts ADD COLUMN metric text;

-- runstream.runs: display_name and properties include the edits; removed tags are gone;
-- new last column: description (NULL until set).
CREATE OR REPLACE VIEW runstream.runs AS
SELECT r.run_id,
       r.experiment,
       r.parent_run_id,
       coalesce((SELECT e.value FROM runstream_data.run_edits e
                 WHERE e.run_id = r.run_id AND e.field = 'display_name' AND e.key = ''),
                r.display_name) AS display_name,
       CASE WHEN r.status = 'Running'
                 AND r.last_event_at < (SELECT now() - runstream_data.not_responding_after())
            THEN 'NotResponding' ELSE r.status END AS status,
       r.compute_target,
       r.created_at,
       r.queued_at,
       r.running_at AS started_at,
       r.ended_at,
       coalesce((SELECT jsonb_object_agg(t.key, t.value) FROM runstream_data.tags t
                 WHERE t.run_id = r.run_id AND NOT t.removed), '{}'::jsonb) AS tags,
       r.workspace,
       r.preparing_at,
       r.finalizing_at,
       r.cancel_requested_at,
       CASE WHEN r.status = 'Failed' THEN r.error END AS error,
       coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM runstream_data.run_edits e
                 WHERE e.run_id = r.run_id AND e.field = 'property'), '{}'::jsonb)
           || r.properties AS properties,
       r.last_event_at,
       r.last_heartbeat_at,
       coalesce((SELECT sum(p.dropped_events) FROM runstream_data.producers p
                 WHERE p.run_id = r.run_id), 0)::bigint AS dropped_events,
       (SELECT e.value FROM runstream_data.run_edits e
        WHERE e.run_id = r.run_id AND e.field = 'description' AND e.key = '') AS description
FROM runstream_data.runs r;

-- runstream.tags: removed tags are left out.
CREATE OR REPLACE VIEW runstream.tags AS
SELECT t.run_id, r.experiment, t.key, t.value, t.set_at
FROM runstream_data.tags t
JOIN runstream_data.runs r ON r.run_id = t.run_id
WHERE NOT t.removed;

-- runstream.artifacts: new last column metric (the typed metric's schema type, or NULL).
CREATE OR REPLACE VIEW runstream.artifacts AS
SELECT a.run_id, r.experiment, a.name, a.kind, a.sha256, a.size_bytes, a.content_type,
       a.rank, a.created_at, a.metric
FROM runstream_data.artifacts a
JOIN runstream_data.runs r ON r.run_id = a.run_id;
