"""SOS v0.4.1's dialect: what its running code accepts beyond its schemas, and its flat Redis encoding.

``parse_message(data, dialect="sos-0.4")`` first applies exactly the leniency of SOS v0.4.1's runtime, then the
strict checks every message gets:

- ``version`` may be absent: it is ``"1.0"``;
- ``target`` may be absent on ``task_created``, ``task_claimed``, ``task_completed`` and ``agent_joined``: it is
  the type's default (``sos:channel:tasks``, ``sos:channel:system:events``); ``source`` may be absent on
  ``agent_joined``: it is ``agent:kernel``;
- an explicit ``null`` in an optional field of the envelope, of the payload or of a model inside the payload is
  the field left out (``null`` where it has a meaning, ``agent_joined.payload.tenant_id``, is kept; free-form
  objects such as ``result`` or ``agent_card`` are data and kept as they are);
- a top-level ``project`` (a string, written by SOS's MCP server and HTTP bridge for project-scoped tokens) is
  the header ``sos-project`` of a ``send``; on other types it names the scope the message was written in and
  is dropped after its check (the bridge takes the scope from the stream the entry came from);
- ``payload.remember`` (a boolean the MCP ``remember`` tool adds to a ``send``) is the header ``sos-remember``
  (``"true"``/``"false"``).

Nothing else is relaxed: unknown fields, wrong types, a missing ``timestamp``, ``message_id`` or ``payload`` are
refused as in the strict default. A ``type`` that is missing, ``null`` or ``""`` is SOS-4002 in both modes.

``from_sos_fields(fields)`` (beside ``parse_message`` in :mod:`~sos_kernel.contracts.catalogue`) reads one entry
of SOS's streams (flat fields, string values, nested values as JSON text) and ``to_sos_fields(message)`` writes a
message the way SOS's producers do: one string field per top-level key, ``null`` left out at the top level,
``payload`` as JSON text with every optional field present (``null`` when unset), booleans as ``"1"``/``"0"``.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from .._json import loads
from ..errors import LimitExceeded, MissingType, SchemaViolation
from ._types import WireModel
from .messages import AgentJoinedMessage, Message, SendMessage

__all__ = [
    "SOS_DIALECT",
    "SOS_FIELDS_MAX",
    "SOS_FIELD_BYTES_MAX",
    "SOS_PROJECT_HEADER",
    "SOS_REMEMBER_HEADER",
    "sos_lenient",
    "to_sos_fields",
]

SOS_DIALECT = "sos-0.4"
"""The dialect name ``parse_message`` takes for SOS v0.4.1's runtime leniency."""
SOS_PROJECT_HEADER = "sos-project"
SOS_REMEMBER_HEADER = "sos-remember"
SOS_FIELDS_MAX = 64
"""Fields one SOS stream entry may have (SOS writes at most a dozen)."""
SOS_FIELD_BYTES_MAX = 1 << 20
"""Bytes of one field's value in an SOS stream entry (a payload as JSON text)."""

_DEFAULT_TARGETS = frozenset({"task_created", "task_claimed", "task_completed", "agent_joined"})
_INT_RE = re.compile(r"^-?\d{1,18}$")


def _fail(loc: str, msg: str, kind: str) -> SchemaViolation:
    return SchemaViolation(f"{loc}: {msg}", details={"errors": [{"loc": loc, "msg": msg, "type": kind}]})


def check_type(data: Mapping[str, Any]) -> str:
    """The message's type name; SOS-4002 when it is missing, ``null`` or ``""`` (SOS counts those as missing)."""
    name = data.get("type")
    if name is None or name == "":
        raise MissingType("message has no 'type' field (or it is null or empty)", details={"type": name})
    return name if isinstance(name, str) else repr(name)


def sos_lenient(data: Mapping[str, Any], model: type[Message]) -> dict[str, Any]:
    """``data`` with SOS v0.4.1's runtime leniency applied for ``model`` (see the module docstring); pure."""
    out = _drop_nulls(dict(data), model)
    out.setdefault("version", "1.0")
    name = out.get("type")
    if name in _DEFAULT_TARGETS:
        out.setdefault("target", model.model_fields["target"].default)
    if name == AgentJoinedMessage.model_fields["type"].default:
        out.setdefault("source", AgentJoinedMessage.model_fields["source"].default)
    headers: dict[str, str] = {}
    if "project" in out:
        project = out.pop("project")
        if not isinstance(project, str):
            raise _fail("project", "the project scope must be a string", "string_type")
        headers[SOS_PROJECT_HEADER] = project
    payload = out.get("payload")
    if model is SendMessage and isinstance(payload, dict) and "remember" in payload:
        payload = dict(payload)
        remember = payload.pop("remember")
        if not isinstance(remember, bool):
            raise _fail("payload.remember", "remember must be true or false", "bool_type")
        headers[SOS_REMEMBER_HEADER] = "true" if remember else "false"
        out["payload"] = payload
    if headers and model is SendMessage:
        given = out.get("headers")
        out["headers"] = {**(given if isinstance(given, dict) else {}), **headers}
    return out


def _drop_nulls(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    # Only in the fields of contract models: a free-form object's nulls are data.
    nullable: frozenset[str] = getattr(model, "nullable", frozenset())
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None and key not in nullable and key in model.model_fields:
            continue
        inner = _field_model(model, key)
        if inner is not None and isinstance(value, dict):
            value = _drop_nulls(value, inner)
        out[key] = value
    return out


@functools.cache
def _field_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    field = model.model_fields.get(name)
    return _model_of(field.annotation) if field is not None else None


@functools.cache
def _field_scalar(model: type[BaseModel], name: str) -> Literal["int", "bool"] | None:
    field = model.model_fields.get(name)
    return _scalar_of(field.annotation) if field is not None else None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The contract model an annotation holds (through ``X | None`` and ``Annotated``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, WireModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _scalar_of(annotation: Any) -> Literal["int", "bool"] | None:
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        for arg in get_args(annotation):
            found = _scalar_of(arg)
            if found is not None:
                return found
    return None


def decode_sos_fields(fields: Mapping[Any, Any], model: type[Message] | None) -> dict[str, Any]:
    """SOS's flat fields as a message dict: text kept, ``{``/``[`` text read as JSON (as SOS's readers do),
    integer and boolean fields of ``model`` read back from their string form. SOS-4010 past the bounds."""
    if len(fields) > SOS_FIELDS_MAX:
        raise LimitExceeded(
            f"an SOS entry with {len(fields)} fields; at most {SOS_FIELDS_MAX}",
            details={"limit": "SOS_FIELDS_MAX", "max": SOS_FIELDS_MAX, "size": len(fields)},
        )
    out: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        key, value = _str(raw_key, "field name"), _str(raw_value, "field value")
        if len(value) > SOS_FIELD_BYTES_MAX:
            raise LimitExceeded(
                f"SOS field {key[:100]!r} is {len(value)} long; at most {SOS_FIELD_BYTES_MAX}",
                details={"limit": "SOS_FIELD_BYTES_MAX", "max": SOS_FIELD_BYTES_MAX, "size": len(value)},
            )
        out[key] = _decode_value(key, value, model)
    return out


def _str(value: Any, what: str) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise _fail("(root)", f"an SOS {what} is not UTF-8 text", "string_unicode") from None
    if not isinstance(value, str):
        raise _fail("(root)", f"an SOS {what} is a string, not {type(value).__name__}", "string_type")
    return value


def _decode_value(key: str, value: str, model: type[Message] | None) -> Any:
    if value[:1] in ("{", "["):
        try:
            return loads(value)  # a repeated key is refused (SOS-4001), not kept as text
        except ValueError:
            return value  # SOS's readers keep text that does not parse; the schema check judges it
    kind = _field_scalar(model, key) if model is not None else None
    if kind == "int" and _INT_RE.fullmatch(value):
        return int(value)
    if kind == "bool" and value in ("1", "0"):
        return value == "1"
    return value


def to_sos_fields(message: Message) -> dict[str, str]:
    """``message`` as SOS's producers write it to a stream: one string field per top-level key (``null`` left
    out), ``payload`` and other nested values as JSON text with the payload's optional fields as ``null``,
    booleans as ``"1"``/``"0"``. The headers ``sos-project`` and ``sos-remember`` go back to ``project`` and
    ``payload.remember``."""
    wire = message.to_wire()
    payload = getattr(message, "payload", None)
    if isinstance(payload, BaseModel):
        wire["payload"] = payload.model_dump(mode="json", by_alias=True)
    headers = wire.get("headers")
    if isinstance(headers, dict):
        headers = dict(headers)
        project = headers.pop(SOS_PROJECT_HEADER, None)
        remember = headers.pop(SOS_REMEMBER_HEADER, None)
        if project is not None:
            wire["project"] = project
        if remember is not None and isinstance(wire.get("payload"), dict):
            wire["payload"]["remember"] = remember == "true"
        if headers:
            wire["headers"] = headers
        else:
            del wire["headers"]
    return {key: _flat(value) for key, value in wire.items() if value is not None}


def _flat(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)
