"""Replay benchmark: archived callbacks through Kafka against the renderer alone."""
