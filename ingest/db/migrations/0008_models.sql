-- Model registry (Azure ML v1 run.register_model / Model.register / Model(ws, name, version)):
-- versions 1, 2, 3… per (workspace, name). A version lists its files with their sha256 in
-- the content-addressed blob store, so it never changes under a reader.
--
-- Written by the API directly (not through Kafka), one transaction per registration
-- (ingest/db/models.py): pg_advisory_xact_lock(hashtextextended(workspace || '/' || name, 0))
-- serialises the registrations of one name, so max(version) + 1 read after taking the lock
-- is exact, with no retry loop; the primary key would refuse a duplicate anyway.
-- registration_id makes a retried registration idempotent: its insert does nothing
-- (ON CONFLICT (registration_id) DO NOTHING) and the first registration is read back.
-- Plain tables and a view: the same on plain PostgreSQL and TimescaleDB.

CREATE TABLE runstream_data.models (
    workspace       text NOT NULL,
    name            text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    run_id          text,
    experiment      text,
    path            text NOT NULL,
    -- [{"name": path relative to the parent of `path`, "sha256", "size_bytes"}], by name
    files           jsonb NOT NULL DEFAULT '[]'::jsonb,
    tags            jsonb NOT NULL DEFAULT '{}'::jsonb,
    properties      jsonb NOT NULL DEFAULT '{}'::jsonb,
    description     text,
    registration_id uuid NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, name, version)
);
-- Listings are newest first, keyset-paged on (created_at, workspace, name, version).
CREATE INDEX models_created_idx ON runstream_data.models (created_at, workspace, name, version);
CREATE INDEX models_run_idx ON runstream_data.models (run_id) WHERE run_id IS NOT NULL;

-- runstream.models: one row per registered model version.
--   workspace, name, version (1, 2, … per workspace and name), run_id and experiment (of
--   the run it was registered from; NULL for local files), path, files jsonb
--   [{name, sha256, size_bytes}], tags jsonb, properties jsonb, description, created_at.
CREATE VIEW runstream.models AS
SELECT m.workspace, m.name, m.version, m.run_id, m.experiment, m.path, m.files, m.tags,
       m.properties, m.description, m.created_at
FROM runstream_data.models m;
