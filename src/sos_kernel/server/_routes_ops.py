"""The routes of every declared operation (:mod:`sos_kernel.operations`), derived, none written by hand.

An operation ``name`` of service ``svc`` is served at ``/v1/<svc>/<name>``: ``POST`` takes its arguments as one
JSON object, ``GET`` as query parameters (read with the parameter's declared type). Each argument is checked
against its declared type, then handed to the session as it came (so the service refuses a bad value with the
in-process message); values JSON cannot carry (timestamps, keys, capabilities, messages) are rebuilt first. The
answer is the result's wire form (:func:`sos_kernel.wire.encode`); keyed operations honour ``Idempotency-Key``.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from fastapi import APIRouter, Request
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.responses import Response

from .. import _trace
from ..audit import Audit
from ..bus import Bus, DeadLetter
from ..contracts import Message, TypeCatalogue, validation_details
from ..errors import BackendFailure, InvalidArgument, SchemaViolation, SOSError
from ..governance import Governance
from ..ledger import Ledger
from ..memory import Memory
from ..operations import Operation, declared, operation_hints
from ..providers import Engine, Providers
from ..registry import Registry
from ..skills import Skills
from ..tasks import Tasks
from ..wire import load
from ._bodies import parse_json
from ._http import SessionDep, answer, keyed, state_of

__all__ = ["SERVICES", "Arguments", "arguments_schema", "operations_router"]

SERVICES: tuple[type, ...] = (Bus, Registry, Ledger, Skills, Providers, Engine, Tasks, Memory, Governance, Audit)
"""The service classes whose declared operations are served."""

log = logging.getLogger("sos_kernel.server")
_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}
_INT_RE = re.compile(r"-?[0-9]+")


def _strip_none(hint: Any) -> Any:
    if get_origin(hint) in (Union, UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


def _is_list(hint: Any) -> bool:
    return get_origin(_strip_none(hint)) in (list, tuple, Sequence)


def _from_query(hint: Any, raw: str) -> Any:
    """A query value read as its parameter's type; left as text when it is not one (the service refuses it)."""
    target = _strip_none(hint)
    if target is bool:
        return {"true": True, "false": False}.get(raw.lower(), raw)
    if target is int:
        return int(raw) if _INT_RE.fullmatch(raw) else raw
    if target is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


_SCALARS = (str, int, float, bool)


def _scalar(hint: Any) -> bool:
    """Whether ``hint`` takes only JSON scalars (the service checks these itself, with its own messages)."""
    if hint in _SCALARS or get_origin(hint) is Literal or hint is type(None):
        return True
    return get_origin(hint) in (Union, UnionType) and all(_scalar(a) for a in get_args(hint))


def _carries_messages(hint: Any) -> bool:
    # messages are checked by the tenant's catalogue (custom types included), not by the base model's schema
    if isinstance(hint, type) and issubclass(hint, Message | DeadLetter):
        return True
    return any(_carries_messages(a) for a in get_args(hint))


def _adapter(hint: Any) -> TypeAdapter[Any] | None:
    if _scalar(hint) or hint is Any or _carries_messages(hint):
        return None
    try:
        return TypeAdapter(hint)
    except Exception:  # a type pydantic cannot check: the service checks it
        return None


class _Arguments:
    """How one operation's arguments are read from a request."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        hints, self.result = operation_hints(op)
        params = op.signature.parameters.values()
        self.named = {p.name: hints.get(p.name, Any) for p in params if p.kind is not p.VAR_KEYWORD}
        self.required = [p.name for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
        self.extra = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        unchecked = op.wire.unchecked if op.wire is not None else ()
        self.adapters = {name: None if name in unchecked else _adapter(hint) for name, hint in self.named.items()}

    def raw(self, request: Request, body: Any) -> dict[str, Any]:
        if self.op.wire is not None and self.op.wire.method == "GET":
            query = request.query_params
            return {
                k: (
                    [_from_query(self.named.get(k), v) for v in query.getlist(k)]
                    if _is_list(self.named.get(k))
                    else _from_query(self.named.get(k), query[k])
                )
                for k in query
            }
        if not isinstance(body, dict):
            raise SchemaViolation("the request body must be a JSON object of the operation's arguments")
        return body

    def decode(self, raw: Mapping[str, Any], catalogue: TypeCatalogue) -> dict[str, Any]:
        unknown = [k for k in raw if k not in self.named]
        if unknown and (self.extra is None or "self" in unknown or not all(k.isidentifier() for k in unknown)):
            raise InvalidArgument(
                f"unknown argument {unknown[0]!r} to {self.op.name} (it takes: {', '.join(self.named) or 'none'})",
                details={"argument": unknown[0]},
            )
        missing = [k for k in self.required if k not in raw]
        if missing:
            raise InvalidArgument(
                f"missing argument {missing[0]!r} to {self.op.name}", details={"argument": missing[0]}
            )
        return {k: self._value(k, v, catalogue) for k, v in raw.items()}

    def _value(self, name: str, value: Any, catalogue: TypeCatalogue) -> Any:
        hint, adapter = self.named.get(name, Any), self.adapters.get(name)
        if _scalar(hint) and isinstance(value, list | dict):
            raise InvalidArgument(f"bad argument {name!r}: expected a single value, got a JSON {type(value).__name__}")
        try:
            if adapter is not None:
                adapter.validate_python(value)  # a type check only: the service gets the value as sent
            return load(hint, value, catalogue)
        except ValidationError as exc:
            # a contract model that fails its schema is SOS-4001, as in-process; any other bad type SOS-4005
            cls = SchemaViolation if _has_model(hint) else InvalidArgument
            details = {"argument": name, **validation_details(exc)}
            raise cls(f"bad argument {name!r}: {_first(exc)}", details=details) from None
        except (BackendFailure, ValueError, TypeError, KeyError) as exc:
            raise InvalidArgument(f"bad argument {name!r}: {exc}", details={"argument": name}) from None


def _has_model(hint: Any) -> bool:
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return True
    return any(_has_model(a) for a in get_args(hint))


def _first(exc: ValidationError) -> str:
    errors = exc.errors()
    return str(errors[0].get("msg", "invalid")) if errors else "invalid"


def _endpoint(op: Operation) -> Callable[..., Awaitable[Response]]:
    arguments = _Arguments(op)
    wire = op.wire

    async def endpoint(request: Request, session: SessionDep) -> Response:
        body: Any = {}
        if wire is not None and wire.method == "POST":
            body = parse_json(await request.body())
        kwargs = arguments.decode(arguments.raw(request, body), state_of(request).kernel.catalogue)

        async def call() -> Any:
            result = await getattr(getattr(session, op.service), op.name)(**kwargs)
            collect = getattr(result, "collect_reply", None)  # a stream asked for as one answer: read it whole
            return await collect() if collect is not None else result

        if wire is not None and wire.keyed:
            # a replay answers without calling the service: the token and its scope are checked here first
            await session.need(op.access.scope)
            return await keyed(request, session, call)
        return answer(await call())

    async def observed(request: Request, session: SessionDep) -> Response:
        # the one place every derived operation passes: its span and its latency (metrics) are taken here
        started, outcome, trace_id = time.perf_counter(), "ok", None
        attributes = {"sos.operation": name, "sos.tenant": session.tenant}
        try:
            with _trace.span(f"sos.http.{name}", attributes, carrier=request.headers):
                trace_id = _trace.current_trace_id() if _trace.enabled() else None
                return await endpoint(request, session)
        except SOSError as exc:
            outcome = exc.code
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            took_s = time.perf_counter() - started
            state_of(request).kernel.events.timed(name, took_s, outcome)
            if log.isEnabledFor(logging.INFO):
                _log_operation(name, session, outcome, took_s, trace_id)

    name = f"{op.service}.{op.name}"
    observed.__name__ = f"{op.service}_{op.name}"
    observed.__doc__ = inspect.getdoc(op.function)
    return observed


def _log_operation(name: str, session: Any, outcome: str, took_s: float, trace_id: str | None) -> None:
    fields = {
        "operation": name,
        "tenant": session.tenant,
        "agent": session.agent,
        "outcome": outcome,
        "duration_ms": round(took_s * 1000, 3),
        "trace_id": trace_id,
    }
    log.info("%s %s", name, outcome, extra=fields)


_COMPONENTS = "#/components/schemas/{model}"


def _schema(hint: Any, defs: dict[str, Any], ref_template: str = _COMPONENTS) -> dict[str, Any]:
    try:
        schema = TypeAdapter(hint).json_schema(ref_template=ref_template, mode="serialization")
    except Exception:  # a type without a JSON Schema (bytes in a union...): any value
        return {}
    defs.update(schema.pop("$defs", {}))
    return schema


def arguments_schema(op: Operation, defs: dict[str, Any], ref_template: str = _COMPONENTS) -> dict[str, Any]:
    """The JSON Schema of ``op``'s arguments as one object (its definitions added to ``defs``, referenced with
    ``ref_template``): what a ``POST`` body carries, and what an MCP tool takes."""
    args = _Arguments(op)
    properties = {name: _schema(hint, defs, ref_template) for name, hint in args.named.items()}
    body: dict[str, Any] = {"type": "object", "properties": properties, "required": args.required}
    if args.extra is None:
        body["additionalProperties"] = False
    return body


def _openapi(op: Operation, defs: dict[str, Any]) -> dict[str, Any]:
    args = _Arguments(op)
    body = arguments_schema(op, defs)
    properties = body["properties"]
    wire = op.wire
    errors = sorted({cls.code for cls in (wire.errors if wire else ())})
    extra: dict[str, Any] = {
        "responses": {
            "200": {
                "description": "The result",
                "content": {"application/json": {"schema": _schema(args.result, defs)}},
            },
            "4XX": {
                "description": f"The SOS error envelope; besides bad input and auth: {', '.join(errors) or 'none'}",
                "content": {"application/json": {"schema": _ENVELOPE}},
            },
        },
        "x-sos-errors": errors,
    }
    if wire is not None and wire.method == "GET":
        extra["parameters"] = [
            {"name": name, "in": "query", "required": name in args.required, "schema": properties[name]}
            for name in args.named
        ]
    else:
        extra["requestBody"] = {"required": bool(args.required), "content": {"application/json": {"schema": body}}}
    return extra


Arguments = _Arguments
"""How one operation's arguments are read and checked (shared with :mod:`sos_kernel.mcp`)."""


def operations_router(defs: dict[str, Any]) -> APIRouter:
    """One route per declared operation of :data:`SERVICES`; their JSON Schema definitions are added to ``defs``."""
    router = APIRouter()
    for cls in SERVICES:
        for op in declared(cls).values():
            if op.wire is None:
                continue
            router.add_api_route(
                op.path,
                _endpoint(op),
                methods=[op.wire.method],
                summary=op.wire.summary or op.name,
                tags=[op.service],
                response_class=Response,
                openapi_extra=_openapi(op, defs),
            )
    return router
