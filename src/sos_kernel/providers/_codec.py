"""Breaker states as compact JSON, the same bytes in every store."""

from __future__ import annotations

import json

from .breaker import BreakerState

__all__ = ["dump_breaker", "load_breaker"]


def dump_breaker(s: BreakerState) -> str:
    """``[state, failures, since, probes]``."""
    return json.dumps([s.state, s.failures, s.since, s.probes], separators=(",", ":"))


def load_breaker(text: str | bytes) -> BreakerState:
    """The state :func:`dump_breaker` wrote."""
    state, failures, since, probes = json.loads(text)
    return BreakerState(state, int(failures), float(since), int(probes))
