-- When a dead letter was redriven and by whom: the console's timeline says so without
-- reading Kafka. The source topic stays the proof (dlq.redriven_from headers): a redrive
-- checks it before sending, and records here what it sent or found sent before.
ALTER TABLE dead_letters ADD COLUMN redriven_at timestamptz, ADD COLUMN redriven_by text;
