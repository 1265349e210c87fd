"""The Suno MIDI callback pipeline: ingest, processor and archiver, and what they share."""
