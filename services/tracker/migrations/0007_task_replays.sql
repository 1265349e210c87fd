-- Every replay of a task, for the console's timeline. The tracker reads every callback
-- event, so it sees each replayed one whoever published it (the console, for an operator,
-- or suno-archiver replay) and records it here; the records of one replay (one per
-- archived body) share its replay id (header replay.id).
CREATE TABLE task_replays (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    -- header replay.id; a replay published without one: its record's topic/partition/offset
    replay_id text NOT NULL,
    body_sha256 text NOT NULL,
    -- the replayed record's timestamp: when it was published
    replayed_at timestamptz NOT NULL,
    -- headers replay.by (the console's operator) and replay.via (console, cli); NULL: unknown
    replayed_by text,
    replayed_via text,
    -- a record read twice is one row
    UNIQUE (task, replay_id, body_sha256)
);

-- What replays led to: the processor's notes events of replayed bodies. The tracker reads
-- them on another topic than the replayed callbacks, in either order, so the console pairs
-- them when it reads: a replayed body's first rendering after it was replayed.
CREATE TABLE task_replay_renderings (
    task bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    body_sha256 text NOT NULL,
    -- the notes event's processed_at: a notes event read twice is one row
    rendered_at timestamptz NOT NULL,
    state text NOT NULL,
    note_count integer NOT NULL,
    midi_written boolean NOT NULL,
    PRIMARY KEY (task, body_sha256, rendered_at)
);
