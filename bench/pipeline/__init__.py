"""The whole pipeline under load: sustained rate vs the ingest alone; send-to-file latency."""
