"""What the three services have in common: settings, the Avro contract, Kafka wiring,
storage, logging and metrics. Nothing here knows about one service in particular."""
