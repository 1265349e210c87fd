"""The tracker service: submits MIDI tasks, keeps their registry, recovers them by polling."""
