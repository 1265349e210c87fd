"""Benchmarks of the processor's pure core against pretty_midi, and of its event-loop use."""
