-- Every run ends (issue 15). Compatible changes only.
--
-- A run whose process was killed without a word (SIGKILL, the OOM killer, a lost host)
-- shows NotResponding after not_responding_after; after fail_after_no_heartbeat with no
-- event at all the workers end it Failed, "no heartbeat for 30 min" (ingest/worker/
-- silence.py, which looks it up here; change it with UPDATE ... SET value = '2 hours').
INSERT INTO runstream_data.settings (key, value)
VALUES ('fail_after_no_heartbeat', '30 minutes')
ON CONFLICT (key) DO NOTHING;

-- What the workers look for: open runs by their newest event.
CREATE INDEX runs_open_last_event_idx ON runstream_data.runs (last_event_at)
    WHERE status IN ('Running', 'Finalizing');

-- runstream.runs: error is also shown for a Canceled run — why it was canceled
-- ("terminated by SIGTERM", "KeyboardInterrupt (Ctrl-C)"); the worker keeps the text of
-- the earliest Failed or Canceled event (ingest/worker/status.py). Otherwise as in 0009.
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
       CASE WHEN r.status IN ('Failed', 'Canceled') THEN r.error END AS error,
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
