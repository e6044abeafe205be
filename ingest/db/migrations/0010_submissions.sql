-- Submitted runs and the agents that run them (issue 10; ingest/db/jobs.py).
--
-- A submission is a durable queue entry: experiment.submit commits it here before it
-- returns. Agents lease entries (one lease per run at a time, FOR UPDATE SKIP LOCKED),
-- renew the lease while the run lives and release it when it ends. A lease that is not
-- renewed expires: the run goes back to the queue (attempt + 1) while attempts remain,
-- else it is finished as Failed ("agent lost"). Run statuses still travel as events;
-- this table only decides who runs what.
--   state: queued → leased → finished, or queued → canceled.
CREATE TABLE runstream_data.submissions (
    run_id           text PRIMARY KEY,
    workspace        text NOT NULL,
    experiment       text NOT NULL,
    target           text NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 100),
    attempt          integer NOT NULL DEFAULT 0,
    display_name     text,
    spec             jsonb NOT NULL,
    snapshot_sha256  text NOT NULL,
    snapshot_bytes   bigint NOT NULL,
    submitted_at     timestamptz NOT NULL DEFAULT now(),
    -- FIFO tie-break within a priority: the order submissions were committed in.
    queue_seq        bigserial NOT NULL,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'leased', 'finished', 'canceled')),
    agent_id         text,
    leased_at        timestamptz,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    outcome          text CHECK (outcome IN ('Completed', 'Failed', 'Canceled')),
    exit_code        integer,
    error            text,
    ended_at         timestamptz
);
-- What an agent leases next: its target's queued runs by priority, then submission order.
CREATE INDEX submissions_queue_idx ON runstream_data.submissions
    (target, priority DESC, queue_seq) WHERE state = 'queued';
-- What the reaper looks at: leases in force.
CREATE INDEX submissions_leased_idx ON runstream_data.submissions
    (lease_expires_at) WHERE state = 'leased';

CREATE TABLE runstream_data.agents (
    agent_id          text PRIMARY KEY,
    target            text NOT NULL,
    slots             integer NOT NULL CHECK (slots >= 1),
    hostname          text NOT NULL,
    pid               integer NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
CREATE INDEX agents_target_idx ON runstream_data.agents (target, last_heartbeat_at);

-- The try of a submitted run its statuses belong to (event schema v2 Lifecycle.attempt).
-- A Lifecycle event of a higher attempt starts the status columns afresh (a retry after
-- the agent was lost goes back to Queued); events of an older attempt no longer move
-- them. A constant default: no table rewrite.
ALTER TABLE runstream_data.runs ADD COLUMN attempt integer NOT NULL DEFAULT 0;
