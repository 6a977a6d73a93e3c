"""The one error tree of sos-kernel.

Every failure the kernel reports is an :class:`SOSError` with a stable ``code`` (``"SOS-4004"``), an HTTP
status, a ``retryable`` flag, a ``message`` that says what to do, and JSON-safe ``details``. The same classes are
raised in-process and, through ``mumega_sdk``, on the far side of HTTP: the server writes
``{"error": {"code", "message", "details"}}`` and :func:`from_wire` turns it back into the same class.

Bands: 4xxx bad input (fix it, do not retry) · 5xxx auth · 6xxx runtime · 7xxx economy. Codes that SOS v0.4.1
defines keep SOS's number and meaning; codes we added are marked ``(new)``::

    SOSError
    ├── InputError                      SOS-4000  (new) bad input not covered by a narrower code
    │   ├── SchemaViolation             SOS-4001  message or card fails its schema (422)
    │   ├── MissingType                 SOS-4002  message has no "type" (422)
    │   ├── InvalidSource               SOS-4003  "source" is not an agent:<name> address (422)
    │   ├── UnknownType                 SOS-4004  "type" is not in the catalogue (422)
    │   ├── InvalidArgument             SOS-4005  (new) an API argument is malformed (400)
    │   ├── InvalidURL                  SOS-4006  (new) a kernel URL names no known backend (400)
    │   ├── IdempotencyConflict         SOS-4009  (new) an id was reused with different content (409)
    │   ├── LimitExceeded               SOS-4010  (new) a size, count or depth limit was exceeded (413)
    │   ├── ChunkIntegrityError         SOS-4011  (new) chunks do not reassemble to their SHA-256 (422)
    │   ├── NotFound                    SOS-4040  (new) the named record does not exist (404)
    │   └── MethodNotAllowed            SOS-4050  (new) the HTTP route does not take this method (405)
    ├── AuthError                       SOS-5000  (new) authentication or authorisation failure
    │   ├── MissingToken                SOS-5001  no bearer token (401)
    │   ├── InvalidToken                SOS-5002  token unknown or revoked (401)
    │   ├── TokenExpired                SOS-5003  token expired (401)
    │   ├── Forbidden                   SOS-5004  lacks scope or capability (403)
    │   ├── RateLimited                 SOS-5005  too many requests (429, retryable)
    │   └── TenantInactive              SOS-5006  (new) tenant suspended or cancelled (403)
    ├── KernelRuntimeError              SOS-6000  (new) runtime failure not covered by a narrower code
    │   ├── DeliveryFailed              SOS-6001  the bus could not deliver (503, retryable)
    │   ├── AgentNotFound               SOS-6002  no such agent (404)
    │   ├── AgentOffline                SOS-6003  agent heartbeat expired (503, retryable)
    │   ├── AskTimeout                  SOS-6004  (new) no reply before the ask's timeout (504, retryable)
    │   ├── KernelClosed                SOS-6005  (new) the kernel or subscription is closed (503)
    │   ├── SquadNotFound               SOS-6010  no such squad (404)
    │   ├── TaskNotFound                SOS-6011  no such task (404)
    │   ├── TaskAlreadyClaimed          SOS-6012  task claimed by someone else (409)
    │   ├── IllegalTransition           SOS-6013  (new) a task cannot move between these states (409)
    │   ├── SkillNotFound               SOS-6020  no such skill (404)
    │   ├── SkillInvocationFailed       SOS-6021  the skill failed (500)
    │   ├── ProviderNotFound            SOS-6040  (new) no provider of that id, model or tier (404)
    │   ├── ProviderUnavailable         SOS-6041  (new) every eligible provider failed or is open (503, retryable)
    │   ├── ProviderRejected            SOS-6042  (new) a provider refused the request itself (422)
    │   ├── CallInProgress              SOS-6043  (new) a call with this id is running elsewhere (409, retryable)
    │   ├── BackendUnavailable          SOS-6030  (new) the storage engine cannot be reached (503, retryable)
    │   ├── BackendFailure              SOS-6031  (new) the storage engine failed the operation (500)
    │   ├── MissingDependency           SOS-6032  (new) an optional extra is not installed (500)
    │   ├── NotReplicated               SOS-6033  (new) a write not confirmed by replicas in time (503, retryable)
    │   └── InvariantViolation          SOS-6099  (new) an internal invariant broke; a bug (500)
    └── EconomyError                    SOS-7000  (new) economy rule not covered by a narrower code
        ├── InsufficientFunds           SOS-7001  balance too low (402)
        ├── WalletNotFound              SOS-7002  no such account (404)
        ├── LedgerWriteFailed           SOS-7010  the ledger could not write (500, retryable)
        ├── SettlementRejected          SOS-7020  settlement refused (409)
        ├── CurrencyMismatch            SOS-7030  accounts or amounts in different currencies (422)
        └── UsageNotPersisted           SOS-7040  usage event not stored (500, retryable)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AgentNotFound",
    "AgentOffline",
    "AskTimeout",
    "AuthError",
    "BackendFailure",
    "BackendUnavailable",
    "CallInProgress",
    "ChunkIntegrityError",
    "CurrencyMismatch",
    "DeliveryFailed",
    "EconomyError",
    "Forbidden",
    "IdempotencyConflict",
    "IllegalTransition",
    "InputError",
    "InsufficientFunds",
    "InvalidArgument",
    "InvalidSource",
    "InvalidToken",
    "InvalidURL",
    "InvariantViolation",
    "KernelClosed",
    "KernelRuntimeError",
    "LedgerWriteFailed",
    "LimitExceeded",
    "MethodNotAllowed",
    "MissingDependency",
    "MissingToken",
    "MissingType",
    "NotFound",
    "NotReplicated",
    "ProviderNotFound",
    "ProviderRejected",
    "ProviderUnavailable",
    "RateLimited",
    "SOSError",
    "SchemaViolation",
    "SettlementRejected",
    "SkillInvocationFailed",
    "SkillNotFound",
    "SquadNotFound",
    "TaskAlreadyClaimed",
    "TaskNotFound",
    "TenantInactive",
    "TokenExpired",
    "UnknownType",
    "UsageNotPersisted",
    "WalletNotFound",
    "all_error_classes",
    "error_class",
    "from_wire",
]

DOCS_ERRORS_PAGE = "docs/errors.md"

_REGISTRY: dict[str, type[SOSError]] = {}


class SOSError(Exception):
    """Root of every error the kernel raises.

    ``code`` is stable and documented in ``docs/errors.md``; ``http_status`` is what the server answers;
    ``retryable`` says whether the same call may succeed later unchanged; ``details`` is a JSON-safe mapping
    (field paths, limits, the known values) that never contains a secret.
    """

    code: ClassVar[str] = "SOS-6000"  # replaced in every band and error class
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    title: ClassVar[str] = "kernel error"

    def __init__(self, message: str | None = None, *, details: Mapping[str, Any] | None = None) -> None:
        self.message = message or self.title
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code")
        if code is None:
            return
        if code in _REGISTRY and _REGISTRY[code] is not cls:
            raise TypeError(f"error code {code} is already used by {_REGISTRY[code].__name__}")
        _REGISTRY[code] = cls

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"

    @property
    def doc_url(self) -> str:
        """Where this code is explained: a path and anchor in the project's docs."""
        return f"{DOCS_ERRORS_PAGE}#{self.code.lower()}"

    def to_wire(self) -> dict[str, Any]:
        """The SOS error envelope: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


# --- 4xxx: bad input; fix the input, do not retry -------------------------------------------------------------


class InputError(SOSError):
    """The request is malformed; the same request will fail again."""

    http_status = 422
    code = "SOS-4000"
    title = "invalid input"


class SchemaViolation(InputError):
    """A message or card fails its schema. ``details["errors"]`` lists ``{"loc", "msg", "type"}`` per field."""

    code = "SOS-4001"
    title = "message fails its schema"


class MissingType(InputError):
    """A message has no ``type`` field."""

    code = "SOS-4002"
    title = "message has no 'type' field"


class InvalidSource(InputError):
    """A message's ``source`` is not an ``agent:<name>`` address, or is not the caller's own."""

    code = "SOS-4003"
    title = "invalid message source"


class UnknownType(InputError):
    """A message's ``type`` is not registered in the type catalogue."""

    code = "SOS-4004"
    title = "unknown message type"


class InvalidArgument(InputError):
    """An argument to a kernel API is malformed (a bad address, a negative timeout, a bad cursor...)."""

    code = "SOS-4005"
    http_status = 400
    title = "invalid argument"


class InvalidURL(InputError):
    """A kernel URL does not name a known backend."""

    code = "SOS-4006"
    http_status = 400
    title = "invalid kernel URL"


class IdempotencyConflict(InputError):
    """An idempotency key (message id, transfer id...) was reused with different content."""

    code = "SOS-4009"
    http_status = 409
    title = "idempotency key reused with different content"


class LimitExceeded(InputError):
    """A named limit (payload size, batch size, queue depth...) was exceeded; ``details`` names it."""

    code = "SOS-4010"
    http_status = 413
    title = "limit exceeded"


class ChunkIntegrityError(InputError):
    """Chunks of a large message are inconsistent or do not hash to the announced SHA-256."""

    code = "SOS-4011"
    title = "chunked message failed its integrity check"


class NotFound(InputError):
    """The named record (a dead letter, a message, a tenant...) does not exist."""

    code = "SOS-4040"
    http_status = 404
    title = "not found"


class MethodNotAllowed(InputError):
    """An HTTP route was called with a method it does not take (``details["allow"]`` lists those it takes)."""

    code = "SOS-4050"
    http_status = 405
    title = "method not allowed"


# --- 5xxx: authentication and authorisation -------------------------------------------------------------------


class AuthError(SOSError):
    """The caller is not known or not allowed."""

    http_status = 401
    code = "SOS-5000"
    title = "not authorised"


class MissingToken(AuthError):
    """No bearer token was presented."""

    code = "SOS-5001"
    title = "no bearer token"


class InvalidToken(AuthError):
    """The token is unknown or revoked."""

    code = "SOS-5002"
    title = "invalid token"


class TokenExpired(AuthError):
    """The token has expired; issue a new one."""

    code = "SOS-5003"
    title = "token expired"


class Forbidden(AuthError):
    """The principal lacks the scope or capability for this action."""

    code = "SOS-5004"
    http_status = 403
    title = "forbidden"


class RateLimited(AuthError):
    """Too many requests; retry after ``details["retry_after_s"]``."""

    code = "SOS-5005"
    http_status = 429
    retryable = True
    title = "rate limited"


class TenantInactive(AuthError):
    """The tenant is suspended or cancelled; its data is kept but every operation is refused."""

    code = "SOS-5006"
    http_status = 403
    title = "tenant is not active"


# --- 6xxx: runtime -------------------------------------------------------------------------------------------


class KernelRuntimeError(SOSError):
    """The request was valid but the kernel could not carry it out."""

    http_status = 500
    code = "SOS-6000"
    title = "runtime error"


class DeliveryFailed(KernelRuntimeError):
    """The bus could not store or deliver a message."""

    code = "SOS-6001"
    http_status = 503
    retryable = True
    title = "bus delivery failed"


class AgentNotFound(KernelRuntimeError):
    """No agent of that name is registered."""

    code = "SOS-6002"
    http_status = 404
    title = "agent not found"


class AgentOffline(KernelRuntimeError):
    """The agent is registered but its heartbeat expired."""

    code = "SOS-6003"
    http_status = 503
    retryable = True
    title = "agent offline"


class AskTimeout(KernelRuntimeError):
    """No reply to an ``ask`` arrived before its timeout."""

    code = "SOS-6004"
    http_status = 504
    retryable = True
    title = "ask timed out"


class KernelClosed(KernelRuntimeError):
    """The kernel, session or subscription was closed before the call."""

    code = "SOS-6005"
    http_status = 503
    title = "kernel closed"


class SquadNotFound(KernelRuntimeError):
    """No squad of that id."""

    code = "SOS-6010"
    http_status = 404
    title = "squad not found"


class TaskNotFound(KernelRuntimeError):
    """No task of that id."""

    code = "SOS-6011"
    http_status = 404
    title = "task not found"


class TaskAlreadyClaimed(KernelRuntimeError):
    """The task is already claimed by another worker."""

    code = "SOS-6012"
    http_status = 409
    title = "task already claimed"


class IllegalTransition(KernelRuntimeError):
    """The task's current state does not lead to the asked one (the details name ``from`` and ``to``)."""

    code = "SOS-6013"
    http_status = 409
    title = "illegal task transition"


class SkillNotFound(KernelRuntimeError):
    """No skill (or no version in the requested range) of that id."""

    code = "SOS-6020"
    http_status = 404
    title = "skill not found"


class SkillInvocationFailed(KernelRuntimeError):
    """The skill ran and failed."""

    code = "SOS-6021"
    http_status = 500
    title = "skill invocation failed"


class ProviderNotFound(KernelRuntimeError):
    """No registered provider has that id, or none matches the model or tier asked for."""

    code = "SOS-6040"
    http_status = 404
    title = "provider not found"


class ProviderUnavailable(KernelRuntimeError):
    """Every eligible provider failed (timeout, 5xx, connection) or has its circuit breaker open; retry later."""

    code = "SOS-6041"
    http_status = 503
    retryable = True
    title = "provider unavailable"


class ProviderRejected(KernelRuntimeError):
    """A provider refused the request itself (a 4xx such as a bad parameter): resending it will not help."""

    code = "SOS-6042"
    http_status = 422
    title = "provider rejected the request"


class CallInProgress(KernelRuntimeError):
    """An engine call with this id is running in another process or request; retry after it ends."""

    code = "SOS-6043"
    http_status = 409
    retryable = True
    title = "call in progress"


class BackendUnavailable(KernelRuntimeError):
    """The storage engine cannot be reached (connection refused, database locked too long)."""

    code = "SOS-6030"
    http_status = 503
    retryable = True
    title = "backend unavailable"


class NotReplicated(BackendUnavailable):
    """A write the engine's primary took was not confirmed by its replicas in time (``durability=replicated``).

    The write may or may not survive a failover; the same call again (same operation id) is a replay that succeeds
    once the write is replicated, never a second write."""

    code = "SOS-6033"
    http_status = 503
    retryable = True
    title = "write not replicated in time"


class BackendFailure(KernelRuntimeError):
    """The storage engine reported an error for this operation."""

    code = "SOS-6031"
    http_status = 500
    title = "backend failure"


class MissingDependency(KernelRuntimeError):
    """An optional extra is not installed; ``details["pip"]`` is the command that fixes it."""

    code = "SOS-6032"
    http_status = 500
    title = "optional dependency missing"


class InvariantViolation(KernelRuntimeError):
    """An internal invariant broke. This is a bug; please report it with ``details``."""

    code = "SOS-6099"
    http_status = 500
    title = "internal invariant violated"


# --- 7xxx: economy -------------------------------------------------------------------------------------------


class EconomyError(SOSError):
    """A ledger or settlement rule refused the operation."""

    http_status = 422
    code = "SOS-7000"
    title = "economy error"


class InsufficientFunds(EconomyError):
    """The debit account would go below zero."""

    code = "SOS-7001"
    http_status = 402
    title = "insufficient funds"


class WalletNotFound(EconomyError):
    """No account for that owner and currency."""

    code = "SOS-7002"
    http_status = 404
    title = "wallet not found"


class LedgerWriteFailed(EconomyError):
    """The ledger could not write; the same request (same id) may be retried safely."""

    code = "SOS-7010"
    http_status = 500
    retryable = True
    title = "ledger write failed"


class SettlementRejected(EconomyError):
    """A settlement was refused (a hold already resolved, a capture above the held amount...)."""

    code = "SOS-7020"
    http_status = 409
    title = "settlement rejected"


class CurrencyMismatch(EconomyError):
    """The accounts or amounts are in different currencies."""

    code = "SOS-7030"
    http_status = 422
    title = "currency mismatch"


class UsageNotPersisted(EconomyError):
    """A usage event could not be stored; retry with the same event id."""

    code = "SOS-7040"
    http_status = 500
    retryable = True
    title = "usage event not persisted"


def all_error_classes() -> list[type[SOSError]]:
    """Every concrete error class, ordered by code."""
    return [_REGISTRY[code] for code in sorted(_REGISTRY)]


def error_class(code: str) -> type[SOSError]:
    """The class for a code like ``"SOS-4004"``; unknown codes map to the band's base class, then ``SOSError``."""
    found = _REGISTRY.get(code)
    if found is not None:
        return found
    band = code[4:5] if code.startswith("SOS-") else ""
    return {"4": InputError, "5": AuthError, "6": KernelRuntimeError, "7": EconomyError}.get(band, SOSError)


def from_wire(body: Mapping[str, Any]) -> SOSError:
    """Rebuild the error from a ``{"error": {"code", "message", "details"}}`` envelope."""
    inner = body.get("error", body)
    if not isinstance(inner, Mapping):
        return SOSError("malformed error envelope", details={"body": repr(body)[:500]})
    code = str(inner.get("code", ""))
    cls = error_class(code)
    details = inner.get("details")
    err = cls(str(inner.get("message", "")), details=details if isinstance(details, Mapping) else None)
    if cls.code != code and code:
        err.details.setdefault("code", code)
    return err
