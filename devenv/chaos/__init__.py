"""Chaos runs: real load through the real processes while a conductor kills and freezes
each of them in turn, then a ledger proving that no result was lost (docs/chaos.md)."""

from .ledger import Ledger
from .plan import TARGETS, Fault, schedule
from .run import CI, SOAK, Sizing, run

__all__ = ["CI", "SOAK", "TARGETS", "Fault", "Ledger", "Sizing", "run", "schedule"]
