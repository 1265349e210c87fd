"""Turns callback events into a MIDI file per task and a typed notes event."""
