-- Typed tags and properties (issue 15; event schema v3: Tag.value_type and
-- Lifecycle.property_types). Compatible changes only: columns added, the views' columns
-- keep their names and types (runstream.tags gains a last column).
--
-- A tag or property given as a number or boolean (run.tag("epochs", 10), properties=
-- {"lr": 0.1}) keeps its text in `value` — what events of schema v1/v2 carry and what
-- was stored before — and its value as JSON in `typed_value` (NULL: the value is text).
-- runs.properties is a jsonb map already: the workers write JSON numbers and booleans into
-- it. Events of schema v1/v2 have no types: their values stay text.
ALTER TABLE runstream_data.tags ADD COLUMN typed_value jsonb;
ALTER TABLE runstream_data.run_edits ADD COLUMN typed_value jsonb;

-- Whether a tag's or property's value (jsonb: string, number, boolean or null) matches the
-- text of a filter (GET /v1/runs?tag=key:text, ?property=key:text; ingest/db/queries.py):
-- a string equal to the text; a number equal to the text read as a number (10 matches
-- "10" and "10.0", 0.1 matches "0.1" and "1e-1"); a boolean whose name is the text in any
-- case ("true", "True"); null (a tag without value) never — `key` alone asks for the key.
-- The CASE keeps the numeric cast from text that is not a number.
CREATE FUNCTION runstream_data.value_matches(v jsonb, f text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE jsonb_typeof(v)
    WHEN 'string' THEN v #>> '{}' = f
    WHEN 'number' THEN
        CASE WHEN length(f) <= 100
                  AND f ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?\s*$'
             THEN (v #>> '{}')::numeric = f::numeric
             ELSE false END
    WHEN 'boolean' THEN lower(f) = v #>> '{}'
    ELSE false END
$$;

-- runstream.runs: tags and properties with their types (a number or boolean as given, text
-- as text). Otherwise as in 0014.
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
       coalesce((SELECT jsonb_object_agg(t.key, coalesce(t.typed_value, to_jsonb(t.value)))
                 FROM runstream_data.tags t
                 WHERE t.run_id = r.run_id AND NOT t.removed), '{}'::jsonb) AS tags,
       r.workspace,
       r.preparing_at,
       r.finalizing_at,
       r.cancel_requested_at,
       CASE WHEN r.status IN ('Failed', 'Canceled') THEN r.error END AS error,
       coalesce((SELECT jsonb_object_agg(e.key, coalesce(e.typed_value, to_jsonb(e.value)))
                 FROM runstream_data.run_edits e
                 WHERE e.run_id = r.run_id AND e.field = 'property'), '{}'::jsonb)
           || r.properties AS properties,
       r.last_event_at,
       r.last_heartbeat_at,
       coalesce((SELECT sum(p.dropped_events) FROM runstream_data.producers p
                 WHERE p.run_id = r.run_id), 0)::bigint AS dropped_events,
       (SELECT e.value FROM runstream_data.run_edits e
        WHERE e.run_id = r.run_id AND e.field = 'description' AND e.key = '') AS description
FROM runstream_data.runs r;

-- runstream.tags: new last column value_json, the value with its type (JSON: a string,
-- number, boolean or null); `value` stays its text.
CREATE OR REPLACE VIEW runstream.tags AS
SELECT t.run_id, r.experiment, t.key, t.value, t.set_at,
       coalesce(t.typed_value, to_jsonb(t.value)) AS value_json
FROM runstream_data.tags t
JOIN runstream_data.runs r ON r.run_id = t.run_id
WHERE NOT t.removed;
