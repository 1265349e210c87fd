"""What a simulated provider does: its account, its timing, its faults, and per-task scripts.

Plain frozen values, so a test states the whole behaviour it relies on in one place and
the CLI builds the same objects from flags.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "API_FAULT_CODES",
    "CallbackPlan",
    "Faults",
    "Outcome",
    "Script",
    "SimConfig",
    "SimConfigError",
    "parse_callback_plan",
]

Outcome = Literal["success", "empty", "failure"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("success", "empty", "failure")

#: Answers the provider gives instead of doing the work: rate (429, 430), maintenance (455),
#: internal error (500). A fault ratio may be set for each.
API_FAULT_CODES: Final = frozenset({429, 430, 455, 500})

#: The provider's generation time (FACTS.md: roughly 30-90 s), used with ``realistic``.
REALISTIC_DELAY: Final = (30.0, 90.0)


class SimConfigError(ValueError):
    """A simulator setting or script that makes no sense; the message says which and why."""


@dataclass(frozen=True, slots=True)
class CallbackPlan:
    """How a task's callback goes out: once, never (every attempt dropped), twice, or late."""

    mode: Literal["deliver", "drop", "twice", "delay"] = "deliver"
    delay_seconds: float = 0.0

    def __str__(self) -> str:
        return f"delay:{self.delay_seconds:g}" if self.mode == "delay" else self.mode


_DELAY = re.compile(r"delay:(\d+(?:\.\d+)?)")


def parse_callback_plan(text: str) -> CallbackPlan:
    """``deliver`` | ``drop`` | ``twice`` | ``delay:<seconds>``."""
    if text in ("deliver", "drop", "twice"):
        return CallbackPlan(text)  # type: ignore[arg-type]
    if match := _DELAY.fullmatch(text):
        return CallbackPlan("delay", float(match.group(1)))
    raise SimConfigError(
        f"callback plan {text!r} is not one of deliver, drop, twice, delay:<seconds>"
    )


@dataclass(frozen=True, slots=True)
class Script:
    """The scripted fate of every task generated from one source task id."""

    outcome: Outcome = "success"
    callback: CallbackPlan = field(default_factory=CallbackPlan)
    #: ``task_id`` (id at top level) or ``data`` (id inside ``data``); None: the seed picks.
    shape: Literal["task_id", "data"] | None = None
    #: Generation time of these tasks (None: the configured one); a task that must stay
    #: pending, as for an expiry, gets one longer than the test.
    completion_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise SimConfigError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        if self.shape not in (None, "task_id", "data"):
            raise SimConfigError(f"shape {self.shape!r} is not task_id or data")
        if self.completion_seconds is not None:
            _check_seconds("completion_seconds", self.completion_seconds)


def _check_seconds(name: str, value: float) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value >= 0):
        raise SimConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")


def _check_ratio(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise SimConfigError(f"{name} must be a ratio between 0 and 1, not {value!r}")


@dataclass(frozen=True, slots=True)
class Faults:
    """Global fault ratios, drawn from the seed; a task's script overrides its own draws."""

    #: Tasks whose callbacks are never delivered (record-info still has the result).
    drop: float = 0.0
    #: Tasks whose callback is delivered twice.
    duplicate: float = 0.0
    #: Tasks whose callback goes out ``delay_seconds`` late.
    delay: float = 0.0
    delay_seconds: float = 30.0
    #: Unscripted tasks that fail, or succeed with no instruments.
    failure: float = 0.0
    empty: float = 0.0
    #: API requests answered with one of :data:`API_FAULT_CODES` instead of being served.
    api: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    #: API requests answered ``slow_seconds`` late.
    slow: float = 0.0
    slow_seconds: float = 5.0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "delay", "failure", "empty", "slow"):
            _check_ratio(name, getattr(self, name))
        for code, ratio in self.api.items():
            if code not in API_FAULT_CODES:
                codes = ", ".join(map(str, sorted(API_FAULT_CODES)))
                raise SimConfigError(f"API fault code {code} is not one of {codes}")
            _check_ratio(f"API fault {code}", ratio)
        if sum(self.api.values()) > 1.0:
            raise SimConfigError("the API fault ratios add up to more than 1")
        if self.failure + self.empty > 1.0:
            raise SimConfigError("the failure and empty ratios add up to more than 1")
        for name in ("delay_seconds", "slow_seconds"):
            _check_seconds(name, getattr(self, name))
        object.__setattr__(self, "api", MappingProxyType(dict(self.api)))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated provider account and its behaviour."""

    #: Deterministic draws (task ids, notes, shapes, faults) come from this seed.
    seed: int = 0
    #: The API key clients must send as ``Authorization: Bearer <key>``; None accepts any.
    api_key: str | None = "sim-api-key"
    #: The account's webhook HMAC key; None sends callbacks unsigned, as the provider
    #: does when the account has no key enabled.
    webhook_key: bytes | None = None
    #: Seconds from ``generate`` until the task ends; ``realistic`` draws 30-90 s instead.
    completion_seconds: float = 2.0
    realistic: bool = False
    #: Mirror the body's ``code`` in the HTTP status (``mirror``) or answer HTTP 200 with the
    #: code in the body only (``ok``): clients must cope with both.
    error_status: Literal["mirror", "ok"] = "mirror"
    #: The provider's rate limit over all API calls together (20 requests per 10 s).
    rate_limit_requests: int = 20
    rate_limit_window_seconds: float = 10.0
    #: One callback attempt's timeout; the provider gives a receiver 15 s.
    callback_timeout_seconds: float = 15.0
    #: Attempts in a row before the provider gives up on a delivery.
    callback_attempts: int = 3
    #: Pause between attempts (undocumented by the provider).
    callback_retry_seconds: float = 1.0
    #: Pause between the two deliveries of a task delivered twice.
    duplicate_gap_seconds: float = 0.5
    faults: Faults = field(default_factory=Faults)
    #: Scripts by source task id, set before the task is generated (the control API adds more).
    scripts: Mapping[str, Script] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.error_status not in ("mirror", "ok"):
            raise SimConfigError(f"error_status {self.error_status!r} is not mirror or ok")
        if self.rate_limit_requests < 1:
            raise SimConfigError("rate_limit_requests must be at least 1")
        if self.callback_attempts < 1:
            raise SimConfigError("callback_attempts must be at least 1")
        for name in (
            "completion_seconds",
            "rate_limit_window_seconds",
            "callback_timeout_seconds",
            "callback_retry_seconds",
            "duplicate_gap_seconds",
        ):
            _check_seconds(name, getattr(self, name))
        if self.callback_timeout_seconds == 0:
            raise SimConfigError("callback_timeout_seconds must be more than 0")
        object.__setattr__(self, "scripts", MappingProxyType(dict(self.scripts)))
