-- The submitter's query: requests nobody has tried to submit yet, oldest first. Without it
-- the submitter read the newest requests and skipped the claimed ones, so enough requests
-- of unknown outcome at the top would have hidden every new one from it.
CREATE INDEX tasks_claimable ON tasks (created_at)
    WHERE state = 'requested' AND submit_started_at IS NULL;
