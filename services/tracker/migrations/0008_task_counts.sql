-- Tasks by state, kept by triggers, so the console's counts (polled every 5 s by each open
-- list) and the tracker's gauges read a few dozen rows instead of counting every task.
-- Each state's count is spread over 32 slot rows, and a writer adds to the slot of its
-- connection (its backend pid), so concurrent writers of tasks seldom wait on one row; a
-- reader sums the slots. Exact: every insert, state change and delete of a task commits
-- or rolls back with its counts.
CREATE TABLE task_counts (
    state text NOT NULL,
    slot smallint NOT NULL,
    tasks bigint NOT NULL,
    PRIMARY KEY (state, slot)
);

-- Writes to tasks wait until the counts below are committed with their triggers: a task
-- written meanwhile would be counted twice or not at all.
LOCK TABLE tasks IN SHARE MODE;
INSERT INTO task_counts (state, slot, tasks)
SELECT state, slot, 0
FROM unnest(ARRAY['requested', 'submitted', 'completed', 'failed', 'empty', 'expired']) AS state,
     generate_series(0, 31) AS slot;
UPDATE task_counts SET tasks = counted.tasks
FROM (SELECT state, count(*) AS tasks FROM tasks GROUP BY state) AS counted
WHERE task_counts.state = counted.state AND task_counts.slot = 0;

-- Inserts and deletes by statement (a bulk insert adds once per state, not once per row),
-- state changes by row (an UPDATE of other columns, a poll, costs nothing).
CREATE FUNCTION task_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts SET tasks = task_counts.tasks + changed.tasks
    FROM (SELECT state, count(*) AS tasks FROM changed_rows GROUP BY state) AS changed
    WHERE task_counts.state = changed.state AND task_counts.slot = pg_backend_pid() % 32;
    RETURN NULL;
END
$$;
CREATE FUNCTION task_counts_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts SET tasks = task_counts.tasks - changed.tasks
    FROM (SELECT state, count(*) AS tasks FROM changed_rows GROUP BY state) AS changed
    WHERE task_counts.state = changed.state AND task_counts.slot = pg_backend_pid() % 32;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_counted_in AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_add();
CREATE TRIGGER tasks_counted_out AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_remove();

-- One statement for both rows (scanned in the primary key's order). Two transactions on
-- one slot (backend pids 32 apart) writing several states could still lock its rows in
-- opposite orders: PostgreSQL then aborts one as a deadlock, an error the registry's
-- callers retry.
CREATE FUNCTION task_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts
    SET tasks = tasks + CASE WHEN state = NEW.state THEN 1 ELSE -1 END
    WHERE state IN (OLD.state, NEW.state) AND slot = pg_backend_pid() % 32;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_counted_moved AFTER UPDATE OF state ON tasks
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION task_counts_move();

CREATE FUNCTION task_counts_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_counts SET tasks = 0;
    RETURN NULL;
END
$$;
CREATE TRIGGER tasks_counted_truncated AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_counts_clear();
