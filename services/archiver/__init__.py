"""Keeps every raw callback byte-exact, forever, and can replay them."""
