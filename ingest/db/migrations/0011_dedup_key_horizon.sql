-- Dedup keys with a horizon (issue 12). Until now every event kept one row in event_ids
-- forever, and the batch write inserted into that ever-growing primary key.
--
-- runstream_data.dedup_keys holds the keys from now on, partitioned by day (UTC) of the
-- EVENT's own time (ts: fixed in the encoded bytes, so a Kafka redelivery, a spool replay
-- or `runstream sync` computes the same day and meets the same key). The primary key
-- (event_id, day) decides exactly as before: two workers racing on an event serialise on
-- it and one wins. Partitions exist for every day of [oldest, newest] (dedup_window,
-- changed only together with the partitions); maintain_dedup_keys() (run hourly by every
-- worker) creates days ahead and DROPs the days older than the horizon:
--
--     horizon = dedup_kafka_retention + dedup_spool_hold     (settings; 7 + 7 days)
--
-- An event whose day falls outside the window (older than the horizon, or stamped beyond
-- the days created ahead: a producer clock that wrong) is "irregular": the write looks
-- its id up in every kept partition and, if absent, keys it under the day it is stored,
-- so a replay of it is recognised for a horizon after it was stored. Nothing is ever
-- rejected for its age.
--
-- The old table stays as it was (an older worker still running during the upgrade keeps
-- writing to it and nothing breaks): the batch write also checks an id is not there, so
-- replays of events stored before this migration stay exact. Once its newest row is older
-- than the oldest kept day, maintain_dedup_keys() TRUNCATEs it (the guarantee about those
-- events has lapsed by then anyway). A BRIN index makes that check cheap.

INSERT INTO runstream_data.settings (key, value) VALUES
    -- how long the events topic keeps messages (the local stack: log.retention.hours=168)
    ('dedup_kafka_retention', '7 days'),
    -- the longest a producer's spool may hold an event before it is sent (by the SDK when
    -- Kafka is back, or by `runstream sync`)
    ('dedup_spool_hold', '7 days'),
    -- how many days of partitions exist ahead of today (producer clocks running ahead)
    ('dedup_lookahead', '7 days')
ON CONFLICT (key) DO NOTHING;

CREATE TABLE runstream_data.dedup_keys (
    event_id uuid NOT NULL,
    day      date NOT NULL,
    PRIMARY KEY (event_id, day)
) PARTITION BY RANGE (day);

-- The days that have a partition: exactly [oldest, newest], one row.
CREATE TABLE runstream_data.dedup_window (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    oldest  date NOT NULL,
    newest  date NOT NULL,
    CHECK (oldest <= newest)
);

CREATE INDEX event_ids_ingested_at_brin ON runstream_data.event_ids USING brin (ingested_at);

-- Partition upkeep, idempotent; safe to call from every worker at once (one does the work,
-- the others return at once). ``at`` is the clock it maintains for (tests move it).
-- Never extends the window backwards: the oldest day only moves forward, the newest too.
CREATE FUNCTION runstream_data.maintain_dedup_keys(
    at timestamptz DEFAULT now(),
    OUT created integer, OUT dropped integer, OUT legacy_truncated boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    horizon interval := (SELECT value FROM runstream_data.settings
                         WHERE key = 'dedup_kafka_retention')::interval
                      + (SELECT value FROM runstream_data.settings
                         WHERE key = 'dedup_spool_hold')::interval;
    lookahead interval := (SELECT value FROM runstream_data.settings
                           WHERE key = 'dedup_lookahead')::interval;
    keep_from date := ((at - horizon) AT TIME ZONE 'UTC')::date;
    want_newest date := ((at + lookahead) AT TIME ZONE 'UTC')::date;
    w_oldest date;
    w_newest date;
    d date;
BEGIN
    created := 0;
    dropped := 0;
    legacy_truncated := false;
    IF NOT pg_try_advisory_xact_lock(hashtext('runstream_data.maintain_dedup_keys')) THEN
        RETURN;  -- another worker is at it right now
    END IF;
    -- Creating or dropping a partition locks the parent table: never queue the batch
    -- writes behind us for long; a timeout rolls all of this back, the next call redoes it.
    PERFORM set_config('lock_timeout', '2s', true);
    SELECT oldest, newest INTO w_oldest, w_newest FROM runstream_data.dedup_window FOR UPDATE;
    IF NOT FOUND THEN
        -- first call (the migration's): the whole window at once
        w_oldest := keep_from;
        w_newest := keep_from - 1;
        INSERT INTO runstream_data.dedup_window (oldest, newest) VALUES (keep_from, keep_from);
    END IF;
    want_newest := greatest(want_newest, w_newest);
    d := greatest(w_newest + 1, keep_from);
    WHILE d <= want_newest LOOP
        EXECUTE format('CREATE TABLE runstream_data.%I PARTITION OF runstream_data.dedup_keys '
                       'FOR VALUES FROM (%L) TO (%L)',
                       'dedup_keys_' || to_char(d, 'YYYYMMDD'), d, d + 1);
        created := created + 1;
        d := d + 1;
    END LOOP;
    d := w_oldest;
    WHILE d < keep_from AND d <= w_newest LOOP
        EXECUTE format('DROP TABLE runstream_data.%I', 'dedup_keys_' || to_char(d, 'YYYYMMDD'));
        dropped := dropped + 1;
        d := d + 1;
    END LOOP;
    UPDATE runstream_data.dedup_window
    SET oldest = greatest(w_oldest, keep_from), newest = want_newest;
    -- The pre-0011 keys: dropped whole once every one of them is older than the window.
    IF EXISTS (SELECT 1 FROM runstream_data.event_ids)
       AND NOT EXISTS (SELECT 1 FROM runstream_data.event_ids
                       WHERE ingested_at >= (greatest(w_oldest, keep_from)::timestamp
                                             AT TIME ZONE 'UTC')) THEN
        TRUNCATE runstream_data.event_ids;
        legacy_truncated := true;
    END IF;
END
$fn$;

SELECT runstream_data.maintain_dedup_keys();
