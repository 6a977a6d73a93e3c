"""The three-state circuit breaker, as pure functions of (state, event, now).

A breaker is ``closed`` (calls pass; consecutive failures are counted), ``open`` (calls are refused until
``recovery_s`` has passed since it opened) or ``half_open`` (up to ``half_open_max`` probe calls pass; the first
success closes it, a failure opens it again). Failures are timeouts, 5xx answers and connection errors; a 4xx
answer proves the provider is up and counts as a success. A ``failure_threshold`` of 0 never opens.

The stores only persist a :class:`BreakerState` with a version and swap it when the version is unchanged, so every
process applies these same functions to the same shared state (one process's trips protect the others).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["CLOSED", "BreakerConfig", "BreakerState", "admit", "record"]

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """A provider's thresholds: failures to open, seconds open before a probe, probes at once, and how long a
    probe may run before another one is let through (its process may have died)."""

    failure_threshold: int = 5
    recovery_s: float = 30.0
    half_open_max: int = 1
    probe_lease_s: float = 65.0


@dataclass(frozen=True, slots=True)
class BreakerState:
    """``state``; ``failures`` in a row; ``since``: when it opened or its latest probe began; ``probes`` running."""

    state: State = "closed"
    failures: int = 0
    since: float = 0.0
    probes: int = 0


CLOSED = BreakerState()


def admit(s: BreakerState, cfg: BreakerConfig, now: float) -> BreakerState | None:
    """The state once one more call is let through, or None when the breaker refuses the call."""
    if s.state == "closed":
        return s
    if s.state == "open":
        if now - s.since < cfg.recovery_s:
            return None
        return BreakerState("half_open", s.failures, now, 1)
    if s.probes < max(1, cfg.half_open_max):
        return replace(s, probes=s.probes + 1)
    if now - s.since >= cfg.probe_lease_s:  # the probes never reported: let one more through
        return BreakerState("half_open", s.failures, now, 1)
    return None


def record(s: BreakerState, cfg: BreakerConfig, ok: bool, now: float) -> BreakerState:
    """The state after a call's outcome: a success closes the breaker; a failure counts, and opens it at the
    threshold (at once when half-open)."""
    if ok:
        return CLOSED
    if s.state == "half_open":
        return BreakerState("open", s.failures + 1, now, 0)
    if s.state == "open":
        return s
    failures = s.failures + 1
    if cfg.failure_threshold and failures >= cfg.failure_threshold:
        return BreakerState("open", failures, now, 0)
    return BreakerState("closed", failures, 0.0, 0)
