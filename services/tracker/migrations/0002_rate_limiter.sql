-- The provider's rate limit, shared by every tracker replica: a sliding log of slots.

CREATE TABLE rate_limit_slots (
    limiter text NOT NULL,
    slot integer NOT NULL CHECK (slot >= 0),
    used_at timestamptz NOT NULL DEFAULT 'epoch',
    PRIMARY KEY (limiter, slot)
);
CREATE INDEX rate_limit_slots_by_use ON rate_limit_slots (limiter, used_at);

-- One row per grant: what lets anyone check that no window held more than the limit.
CREATE TABLE provider_calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    limiter text NOT NULL,
    granted_at timestamptz NOT NULL,
    owner text NOT NULL,
    waited_seconds double precision NOT NULL
);
CREATE INDEX provider_calls_by_time ON provider_calls (limiter, granted_at);
