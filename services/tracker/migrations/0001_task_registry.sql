-- The task registry: one row per MIDI task, its transitions, deliveries and polls.

CREATE TABLE tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Ours, for tasks we submit; null for tasks seen only through their callback.
    request_id text UNIQUE,
    -- The provider's; null until the provider answered the submission.
    task_id text UNIQUE,
    source_task_id text,
    audio_id text,
    callback_url text,
    origin text NOT NULL CHECK (origin IN ('tracker', 'external')),
    state text NOT NULL
        CHECK (state IN ('requested', 'submitted', 'completed', 'failed', 'empty', 'expired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    requested_at timestamptz,
    submitted_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    empty_at timestamptz,
    expired_at timestamptz,
    -- Submission: an attempt once started is never started again on our own.
    submit_started_at timestamptz,
    submit_owner text,
    submit_outcome text CHECK (submit_outcome IN ('unknown', 'rejected')),
    submit_reason text,
    -- Polling: when the next record-info is due, and which replica holds the task.
    next_poll_at timestamptz,
    poll_count integer NOT NULL DEFAULT 0,
    last_polled_at timestamptz,
    lease_owner text,
    lease_until timestamptz,
    CHECK (request_id IS NOT NULL OR task_id IS NOT NULL),
    CHECK (task_id IS NOT NULL OR state IN ('requested', 'failed'))
);

-- The reconciler's query: submitted tasks by due time.
CREATE INDEX tasks_due_polls ON tasks (next_poll_at)
    WHERE state = 'submitted' AND next_poll_at IS NOT NULL;
-- Expiry, at-risk count, oldest open task.
CREATE INDEX tasks_open_by_submission ON tasks (submitted_at) WHERE state = 'submitted';
CREATE INDEX tasks_open_by_creation ON tasks (created_at)
    WHERE state IN ('requested', 'submitted');
-- Submissions started and never resolved: the operator's alert.
CREATE INDEX tasks_pending_submissions ON tasks (submit_started_at)
    WHERE state = 'requested' AND submit_started_at IS NOT NULL;
-- The console's listing, newest first, optionally by state.
CREATE INDEX tasks_by_state ON tasks (state, created_at DESC);
CREATE INDEX tasks_by_creation ON tasks (created_at DESC);

CREATE TABLE task_transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    from_state text,
    to_state text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    reason text
);
CREATE INDEX task_transitions_by_task ON task_transitions (task, id);

CREATE TABLE task_deliveries (
    task bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    body_sha256 text NOT NULL CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
    source text NOT NULL CHECK (source IN ('callback', 'poll')),
    -- The first time this body came this way; a repeat changes nothing.
    received_at timestamptz NOT NULL,
    verified boolean NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, body_sha256, source)
);

CREATE TABLE task_polls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now(),
    owner text NOT NULL,
    outcome text NOT NULL,
    detail text
);
CREATE INDEX task_polls_by_task ON task_polls (task, id);
