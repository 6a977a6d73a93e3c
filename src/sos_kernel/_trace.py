"""OpenTelemetry spans, when ``opentelemetry-api`` is installed (the ``otel`` extra); no-ops when it is not.

Only the API is used here: an application that installs the SDK and a tracer provider gets the spans, others pay
one failed import at start-up. The bus carries the W3C trace id in the envelope's ``trace_id``: a message
published inside a span is stamped with that span's trace id, and spans about a message (its publish, its
delivery, the work it wakes) are started in that trace, so a publish and its delivery join one trace even across
processes and hosts. Span attributes are ids and routing only, never message text or tokens.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import trace as _otel
except ImportError:  # the otel extra is not installed: every span is a no-op
    _otel = None  # type: ignore[assignment]

__all__ = [
    "TRACER_NAME",
    "TRACING_RECHECK_S",
    "current_trace_id",
    "enabled",
    "inject",
    "refresh",
    "span",
    "use_provider",
]

TRACER_NAME = "sos_kernel"
_SPAN_ID_MASK = (1 << 64) - 1
TRACING_RECHECK_S = 0.5
"""How long "no tracer provider is set" is trusted before it is asked again (OpenTelemetry reads the environment
on each ask): a global provider set later is seen within this; :func:`use_provider` and :func:`refresh` at once."""
_provider: Any = None
_on = False
_recheck_at = -math.inf


def use_provider(provider: Any) -> Any:
    """Record the kernel's spans with ``provider`` (an OpenTelemetry ``TracerProvider``) instead of the global
    one; ``None`` goes back to the global provider. Returns the previous choice. Takes effect at once."""
    global _provider
    previous, _provider = _provider, provider
    refresh()
    return previous


def refresh() -> bool:
    """Decide again whether spans are recorded (a kernel opening calls it); returns :func:`enabled`'s answer."""
    global _on, _recheck_at
    _on = _otel is not None and (
        _provider is not None or not isinstance(_otel.get_tracer_provider(), _otel.ProxyTracerProvider)
    )
    _recheck_at = time.monotonic() + TRACING_RECHECK_S
    return _on


def enabled() -> bool:
    """Whether spans are recorded: ``opentelemetry-api`` is importable and a tracer provider is set (globally or
    by :func:`use_provider`); until then the kernel's hot paths skip span work entirely.

    Decided once per provider change, not per call: once set, a global provider stays (OpenTelemetry sets it once
    per process), so only "none yet" is asked again, at most every ``TRACING_RECHECK_S``."""
    if _on:
        return True
    if _otel is None or time.monotonic() < _recheck_at:
        return False
    return refresh()


def _tracer() -> Any:
    if _provider is not None:
        return _provider.get_tracer(TRACER_NAME)
    return _otel.get_tracer(TRACER_NAME)


def current_trace_id() -> str | None:
    """The active span's trace id as 32 hex digits (the envelope's ``trace_id``), None outside a valid span."""
    if _otel is None:
        return None
    context = _otel.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def _parent(trace_id: str | None, message_id: str | None) -> Any:
    """A remote parent in the message's trace (span id derived from the message id), when no span is active."""
    if _otel is None or trace_id is None or current_trace_id() is not None:
        return None
    span_id = (int(message_id.replace("-", "")[16:], 16) if message_id else 1) & _SPAN_ID_MASK or 1
    context = _otel.SpanContext(
        trace_id=int(trace_id, 16),
        span_id=span_id,
        is_remote=True,
        trace_flags=_otel.TraceFlags(_otel.TraceFlags.SAMPLED),
    )
    return _otel.set_span_in_context(_otel.NonRecordingSpan(context))


@contextlib.contextmanager
def span(
    name: str,
    attributes: Mapping[str, str | int | bool | None] | None = None,
    *,
    trace_id: str | None = None,
    message_id: str | None = None,
    carrier: Mapping[str, str] | None = None,
) -> Iterator[None]:
    """A span named ``name``: a child of the W3C ``traceparent`` in ``carrier`` (request headers) if given, else
    of the active span, else in ``trace_id``'s trace. A no-op until spans are :func:`enabled`."""
    if _otel is None or not enabled():
        yield
        return
    tracer = _tracer()
    clean = {k: v for k, v in (attributes or {}).items() if v is not None}
    if carrier is not None:
        from opentelemetry import propagate

        parent = propagate.extract(carrier)
    else:
        parent = _parent(trace_id, message_id)
    with tracer.start_as_current_span(name, context=parent, attributes=clean):
        yield


def inject() -> dict[str, str]:
    """The active span's W3C trace context as headers (``traceparent``), for a request that continues the trace;
    empty when spans are not :func:`enabled` or no span is active."""
    if _otel is None or not enabled():
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
