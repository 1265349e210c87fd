"""The callback receiver: verify, dedupe, publish to Kafka, answer only once durable."""
