-- The console's task list at a million tasks: keyset pagination on (created_at DESC, id DESC),
-- of all tasks or of one state, and prefix search on the task and request ids.
-- The indexes of 0001 ordered by created_at alone: a page boundary inside one instant
-- (tasks created by one statement share now()) had to sort, so they are replaced.
DROP INDEX tasks_by_creation;
DROP INDEX tasks_by_state;
CREATE INDEX tasks_listing ON tasks (created_at DESC, id DESC);
CREATE INDEX tasks_listing_by_state ON tasks (state, created_at DESC, id DESC);
-- text_pattern_ops compares bytes whatever the database's collation, so a prefix is a range
-- of the index (the UNIQUE indexes of 0001 use the collation's order, useless for it).
CREATE INDEX tasks_task_id_prefix ON tasks (task_id text_pattern_ops);
CREATE INDEX tasks_request_id_prefix ON tasks (request_id text_pattern_ops);
