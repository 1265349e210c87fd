-- Dead letters in the registry, so the console shows them per task and lists the tasks that
-- have some at a million tasks. The console's indexer copies each record of the dead-letter
-- topic here; the topic stays the record of truth (and holds the bytes: a row keeps their
-- size and SHA-256).
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    -- where the record is on the dead-letter topic: indexing it twice finds it there
    dlq_topic text NOT NULL,
    dlq_partition integer NOT NULL,
    dlq_offset bigint NOT NULL,
    dlq_timestamp timestamptz NOT NULL,
    -- the record's key (a task id, or a request id on the requests topic); NULL when keyless
    task_id text,
    reason text,
    error text,
    source_topic text,
    source_partition integer,
    source_offset bigint,
    source_timestamp timestamptz,
    consumer_group text,
    failed_at timestamptz,
    -- every header as text, as the record had them
    headers jsonb NOT NULL,
    value_bytes integer NOT NULL,
    value_sha256 text NOT NULL,
    indexed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dead_letters_by_task ON dead_letters (task_id);

-- How many dead letters carry the task's id or request id as their key: the list reads it
-- for every row, and its filter is a scan of a partial index instead of a probe per task.
ALTER TABLE tasks ADD COLUMN dead_letters integer NOT NULL DEFAULT 0;
CREATE INDEX tasks_listing_dead_lettered ON tasks (created_at DESC, id DESC)
    WHERE dead_letters > 0;
CREATE INDEX tasks_listing_dead_lettered_by_state ON tasks (state, created_at DESC, id DESC)
    WHERE dead_letters > 0;

-- The count is kept from both sides, since a dead letter may come before its task (a
-- callback dead-lettered by the processor before the tracker records it). Two concurrent
-- transactions, one writing a dead letter and one its task, would each miss the other's
-- uncommitted row, so both sides take advisory lock (16, 0) before they look at the other
-- table (the registry's task-id locks use first key 14): the task writers share it (one
-- lock per transaction however many rows, and they never wait for each other), a dead
-- letter takes it alone, so it counts on every task committed before it and every task
-- written after it sees it. A dead letter is rare and its transaction short: the writers
-- of tasks wait for it a moment. A task's writer holds the task's row when its trigger
-- takes the lock, so a dead letter locks the rows it counts on first: both take the row
-- and the lock in the same order.
CREATE FUNCTION dead_letters_count_into_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.task_id IS NOT NULL THEN
        PERFORM 1 FROM tasks WHERE task_id = NEW.task_id OR request_id = NEW.task_id
            FOR UPDATE;
        PERFORM pg_advisory_xact_lock(16, 0);
        UPDATE tasks SET dead_letters = dead_letters + 1
            WHERE task_id = NEW.task_id OR request_id = NEW.task_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER dead_letters_counted AFTER INSERT ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION dead_letters_count_into_task();

CREATE FUNCTION tasks_count_dead_letters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.task_id IS NOT DISTINCT FROM OLD.task_id
            AND NEW.request_id IS NOT DISTINCT FROM OLD.request_id THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(16, 0);
    NEW.dead_letters := (
        SELECT count(*) FROM dead_letters
        WHERE task_id = NEW.task_id OR task_id = NEW.request_id
    );
    RETURN NEW;
END
$$;
CREATE TRIGGER tasks_dead_letters BEFORE INSERT OR UPDATE OF task_id, request_id ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_count_dead_letters();
