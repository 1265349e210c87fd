"""Local development environment: a real Kafka broker from Maven jars, the whole pipeline
in one command, and a sample callback sender. Not part of the deployed services."""
