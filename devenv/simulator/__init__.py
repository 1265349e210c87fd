"""A stand-in for the Suno API's MIDI operation (generate, record-info, callbacks) in tests,
demos and load runs, with its behaviour taken from the provider's pages, plus faults.

It never replaces a part of our own system: only the provider, which cannot be reached here.
"""

from __future__ import annotations

from .app import GENERATE_PATH, RECORD_INFO_PATH, ProviderError, create_app
from .config import (
    API_FAULT_CODES,
    CallbackPlan,
    Faults,
    Outcome,
    Script,
    SimConfig,
    SimConfigError,
)
from .control import CONTROL_PREFIX
from .delivery import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from .keys import STATE
from .state import SimState, SimTask

__all__ = [
    "API_FAULT_CODES",
    "CONTROL_PREFIX",
    "GENERATE_PATH",
    "RECORD_INFO_PATH",
    "SIGNATURE_HEADER",
    "STATE",
    "TIMESTAMP_HEADER",
    "CallbackPlan",
    "Faults",
    "Outcome",
    "ProviderError",
    "Script",
    "SimConfig",
    "SimConfigError",
    "SimState",
    "SimTask",
    "create_app",
    "signature",
]
