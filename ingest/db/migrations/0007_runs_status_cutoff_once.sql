-- runstream.runs: the NotResponding cutoff is computed once per query, not once per row.
--
-- runstream_data.not_responding_after() reads the settings table, so PostgreSQL cannot
-- inline it and ran it for every row a filter on status looked at (about 10 us each: half
-- a second for /v1/runs?status=Running over 50,000 runs). As an uncorrelated scalar
-- subquery it becomes an InitPlan, evaluated once. Same columns, same values (a
-- compatible change); runstream.compute_targets, built on this view, gains too.
CREATE OR REPLACE VIEW runstream.runs AS
SELECT r.run_id,
       r.experiment,
       r.parent_run_id,
       r.display_name,
       CASE WHEN r.status = 'Running'
                 AND r.last_event_at < (SELECT now() - runstream_data.not_responding_after())
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
