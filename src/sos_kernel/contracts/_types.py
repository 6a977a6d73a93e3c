"""Shared field types and the wire base model.

Patterns are SOS v0.4.1's, character for character. Strings, integers and booleans are strict (a JSON ``"1"`` is
not an integer, ``true`` is not ``1``) because the reference schemas are; an integral float such as ``3.0`` is an
integer as JSON Schema says.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from .._json import loads

AGENT_NAME_PATTERN = r"^[a-z][a-z0-9-]*$"
AGENT_ADDRESS_PATTERN = r"^agent:[a-z][a-z0-9-]*$"
CHANNEL_ADDRESS_PATTERN = r"^sos:channel:[a-z][a-z0-9:_-]*$"
ADDRESS_PATTERN = r"^(agent:[a-z][a-z0-9-]*|sos:channel:[a-z][a-z0-9:_-]*)$"
REPLY_CHANNEL_PATTERN = r"^(agent:[a-z][a-z0-9-]*|sos:channel:[a-z][a-z0-9-]*)$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID_LOWER_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
VERSION_PATTERN = r"^\d+\.\d+(\.\d+)?$"
TASK_ID_PATTERN = r"^[a-zA-Z0-9_-]+$"
TRACE_ID_PATTERN = r"^[0-9a-f]{32}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
CURRENCY_PATTERN = r"^[A-Z0-9]{2,10}$"
ERROR_CODE_PATTERN = r"^SOS-[A-Z0-9]{4,}$"

AGENT_ADDRESS_RE = re.compile(AGENT_ADDRESS_PATTERN)
KERNEL_AGENT = "agent:kernel"
"""The address the kernel speaks as (the source of its task, skill, receipt and governance messages)."""
RESERVED_AGENTS = frozenset({KERNEL_AGENT})
"""Agent addresses no token is issued for and no registry card may take: a consumer trusting a message's
``source`` as the kernel's must never see an agent's there."""
ADDRESS_RE = re.compile(ADDRESS_PATTERN)


def _integral_float_to_int(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; pydantic's strict int does not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _nonzero_trace_id(value: str) -> str:
    if value == "0" * 32:
        raise PydanticCustomError("trace_id_zero", "an all-zero trace_id is invalid (W3C trace context)")
    return value


def _utc_rfc3339(value: datetime) -> str:
    try:
        text = value.astimezone(UTC).isoformat()
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is valid RFC 3339 but has no UTC form in Python; keep its own offset.
        return value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _rfc3339_text(value: Any) -> Any:
    # The wire carries RFC 3339 text, as the reference schemas say; on its own pydantic would also take
    # numbers ("timestamp": 1700000000), numeric strings and space-separated forms.
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339_RE.fullmatch(value)):
        return value
    raise PydanticCustomError("timestamp_format", "expected an RFC 3339 date-time string like 2026-01-31T12:00:00Z")


Str = Annotated[str, Field(strict=True)]
IntegralFloat = BeforeValidator(_integral_float_to_int)
"""Put last in ``Annotated[int, Field(strict=True, ge=...), IntegralFloat]``: JSON's ``3.0`` is the integer 3.

After the ``Field`` so its bounds stay ``minimum``/``maximum`` in the exported JSON Schema.
"""
Int = Annotated[int, BeforeValidator(_integral_float_to_int), Field(strict=True)]
NonNegInt = Annotated[int, Field(strict=True, ge=0), IntegralFloat]
Bool = Annotated[bool, Field(strict=True)]
Number = Annotated[float, Field(strict=True)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), PlainSerializer(_utc_rfc3339, return_type=str)]
UUIDStr = Annotated[str, StringConstraints(strict=True, pattern=UUID_PATTERN)]
AgentName = Annotated[str, StringConstraints(strict=True, pattern=AGENT_NAME_PATTERN)]
AgentAddress = Annotated[str, StringConstraints(strict=True, pattern=AGENT_ADDRESS_PATTERN)]
Address = Annotated[str, StringConstraints(strict=True, pattern=ADDRESS_PATTERN)]
ReplyChannel = Annotated[str, StringConstraints(strict=True, pattern=REPLY_CHANNEL_PATTERN)]
Version = Annotated[str, StringConstraints(strict=True, pattern=VERSION_PATTERN)]
TaskId = Annotated[str, StringConstraints(strict=True, pattern=TASK_ID_PATTERN)]
TraceId = Annotated[str, StringConstraints(strict=True, pattern=TRACE_ID_PATTERN), AfterValidator(_nonzero_trace_id)]
"""A W3C trace id: 32 lower-case hex digits, not all zero."""
Sha256Hex = Annotated[str, StringConstraints(strict=True, pattern=SHA256_PATTERN)]
Currency = Annotated[str, StringConstraints(strict=True, pattern=CURRENCY_PATTERN)]
Ref = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=500)]
"""A reference to something outside the message: ``task:<id>``, a message id, a URL, a path, a digest."""


def _finite_numbers(value: Any) -> Any:
    # JSON has no NaN or Infinity, but pydantic's JSON parser reads them into free-form fields, and on the way
    # out they would silently become null.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError("finite_number", "NaN and Infinity are not JSON numbers")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_finite_numbers)]
"""A free-form JSON object (a task result, a card snapshot, metadata)."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


WIRE_CONTEXT_KEY = "sos_wire"
"""Validation context flag: the data came off the wire, so the reference schema's required fields must be there."""


class WireModel(BaseModel):
    """Base of every contract model: unknown fields are refused, instances are immutable.

    ``None`` means "absent": ``to_wire()`` / ``to_json()`` (``exclude_none=True``) leave such fields out, and wire
    data may not carry an explicit ``null`` except in the fields listed in ``nullable`` (where SOS gives ``null`` a
    meaning, e.g. a tenant-less agent; those models derive from :class:`KeepsNulls`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_stray_nulls(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get(WIRE_CONTEXT_KEY) and isinstance(data, dict):
            cls._refuse_stray_nulls(data)
        return data

    @classmethod
    def _refuse_stray_nulls(cls, data: dict[str, Any]) -> None:
        if None in data.values():
            bad = [k for k, v in data.items() if v is None and k not in cls.nullable]
            if bad:
                null = PydanticCustomError("null_not_allowed", "null is not allowed here; leave the field out")
                errors = [InitErrorDetails(type=null, loc=(k,), input=None) for k in bad]
                raise ValidationError.from_exception_data(cls.__name__, errors)

    def to_wire(self) -> dict[str, Any]:
        """The exact JSON-ready dict SOS expects: no extra keys, RFC 3339 UTC timestamps, ids as strings."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> bytes:
        """The wire form encoded as compact UTF-8 JSON."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class KeepsNulls(WireModel):
    """A model with ``nullable`` fields: an explicit ``null`` that was set survives ``exclude_none`` output."""

    @model_serializer(mode="wrap")
    def _keep_explicit_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.nullable & self.model_fields_set:
            if getattr(self, name) is None:
                data[name] = None
        return data


class WireRequired(WireModel):
    """A top-level contract: Python construction fills defaults, wire parsing requires ``wire_required``."""

    wire_required: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_stray_nulls(cls, data: Any, info: ValidationInfo) -> Any:
        # Replaces WireModel's validator of the same name, so one call checks both wire rules, missing fields
        # first (the order SOS reports them in).
        if info.context and info.context.get(WIRE_CONTEXT_KEY) and isinstance(data, dict):
            for name in cls.wire_required:
                if name not in data:
                    missing = sorted(cls.wire_required.difference(data))
                    # One "missing" error per field, located at the field, as for fields without a default.
                    errors = [InitErrorDetails(type="missing", loc=(n,), input=data) for n in missing]
                    raise ValidationError.from_exception_data(cls.__name__, errors)
            cls._refuse_stray_nulls(data)
        return data

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate wire data (a dict, or JSON text/bytes) strictly as this type; raises pydantic's error, or
        SOS-4001 for text whose object repeats a key (see :mod:`sos_kernel._json`)."""
        context = {WIRE_CONTEXT_KEY: True}
        if isinstance(data, str | bytes | bytearray):
            try:
                data = loads(data)
            except ValueError:  # not JSON: pydantic words it
                return cls.model_validate_json(data, context=context)
        return cls.model_validate(data, context=context)
