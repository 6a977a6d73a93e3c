"""The type catalogue and :func:`parse_message`.

``parse_message`` enforces SOS v0.4.1's publish-time order: no ``type`` → SOS-4002; a ``type`` the catalogue does
not know → SOS-4004 (naming the known types and the closest match); the message fails its schema → SOS-4001
(field paths in ``details["errors"]``); ``source`` is not an ``agent:<name>`` address → SOS-4003. It returns a
fully valid message or raises; it never returns a partial one.

A deployment can register its own types under a namespaced name (``acme.deploy_request``), either as a pydantic
model of the payload or as a JSON Schema (Draft 2020-12) of the payload. Anything else is SOS-4004.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar, cast, get_args

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model, field_validator
from pydantic_core import PydanticCustomError

from .._json import loads
from ..errors import InvalidArgument, InvalidSource, LimitExceeded, MissingType, SchemaViolation, UnknownType
from ..refusals import bad_address
from ._schema_patterns import anchored_validator_class
from ._types import ADDRESS_PATTERN, AGENT_ADDRESS_PATTERN, WIRE_CONTEXT_KEY, WireRequired
from .messages import CORE_TYPES, EXTENSION_TYPES, Message
from .sos import SOS_DIALECT, check_type, decode_sos_fields, sos_lenient

__all__ = [
    "CUSTOM_TYPE_NAME_PATTERN",
    "DEFAULT_CATALOGUE",
    "MESSAGE_BYTES_MAX",
    "TypeCatalogue",
    "build_message",
    "from_sos_fields",
    "parse_message",
    "sos_error_for",
    "validation_details",
]

MESSAGE_BYTES_MAX = 32 << 20
"""``parse_message`` refuses encoded input above 32 MiB outright (the bus applies its own, smaller limits)."""
ERRORS_IN_DETAILS_MAX = 50
CUSTOM_TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
_CUSTOM_NAME_RE = re.compile(CUSTOM_TYPE_NAME_PATTERN)
_WIRE = MappingProxyType({WIRE_CONTEXT_KEY: True})


def validation_details(exc: ValidationError) -> dict[str, Any]:
    """JSON-safe details of a pydantic error: ``{"errors": [{"loc": "payload.text", "msg", "type"}]}``."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False)[:ERRORS_IN_DETAILS_MAX]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        errors.append({"loc": loc, "msg": err["msg"], "type": err["type"]})
    return {"errors": errors}


_ADDRESS_FIELDS = {"source": AGENT_ADDRESS_PATTERN, "target": ADDRESS_PATTERN}
"""The envelope's address fields and their patterns."""


def _address_fields(exc: ValidationError) -> list[str]:
    """The address fields that break their pattern, when nothing else is wrong with the message."""
    errs = exc.errors(include_url=False, include_input=False)
    if not errs or any(len(e["loc"]) != 1 or e["type"] != "string_pattern_mismatch" for e in errs):
        return []
    fields = [str(e["loc"][0]) for e in errs]
    return fields if all(f in _ADDRESS_FIELDS for f in fields) else []


def sos_error_for(exc: ValidationError, type_name: str, data: Mapping[str, Any]) -> SchemaViolation | InvalidSource:
    """The SOS error for a message that failed validation: SOS-4003 when only ``source`` is wrong, else 4001; a
    wrong address reads as every refused address does (:func:`sos_kernel.refusals.bad_address`)."""
    fields = _address_fields(exc)
    if fields == ["source"]:
        source = data.get("source")
        found = bad_address(
            "source",
            source,
            agent_only=True,
            cls=InvalidSource,
            source=str(source)[:200],
            pattern=AGENT_ADDRESS_PATTERN,
        )
        return cast(InvalidSource, found)
    details = validation_details(exc)
    if fields:
        field, pattern = fields[0], _ADDRESS_FIELDS[fields[0]]
        agent_only = pattern == AGENT_ADDRESS_PATTERN
        found = bad_address(
            field, data.get(field), agent_only=agent_only, cls=SchemaViolation, pattern=pattern, **details
        )
        return cast(SchemaViolation, found)
    first = details["errors"][0] if details["errors"] else {"loc": "?", "msg": "invalid"}
    return SchemaViolation(f"{type_name} message fails its schema at {first['loc']}: {first['msg']}", details=details)


M = TypeVar("M", bound=Message)
C = TypeVar("C", bound=WireRequired)


def parse_card(model: type[C], data: C | Mapping[str, Any], label: str) -> C:
    """Validate wire data as a card (``AgentCard``, ``SkillCard``, ``UsageEvent``...), raising SOS-4001 with the
    field paths instead of pydantic's exception; a model instance passes through."""
    if isinstance(data, model):
        return data
    try:
        return model.from_wire(dict(data))
    except ValidationError as exc:
        details = validation_details(exc)
        first = details["errors"][0] if details["errors"] else {"loc": "?", "msg": "invalid"}
        raise SchemaViolation(f"{label} fails its schema at {first['loc']}: {first['msg']}", details=details) from None


def build_message(model: type[M], fields: Mapping[str, Any]) -> M:
    """Construct ``model`` from Python values (defaults filled, ``None`` meaning absent), raising SOS errors.

    This is how the bus helpers (``send``, ``ask``...) build messages: bad arguments give SOS-4001/4003, not
    pydantic's exception.
    """
    data = {k: v for k, v in fields.items() if v is not None}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise sos_error_for(exc, str(model.model_fields["type"].default), data) from None


class TypeCatalogue:
    """The message types a kernel accepts: the 8 core types, our extensions, and registered custom types.

    Thread-compatible: register types at start-up, then share the catalogue. The built-in default is read-only;
    ``TypeCatalogue()`` gives a new, extendable one.
    """

    def __init__(self, *, frozen: bool = False) -> None:
        self._types: dict[str, type[Message]] = {**CORE_TYPES, **EXTENSION_TYPES}
        self._frozen = frozen
        self._verbatim: dict[type[Message], bool] = {}
        self._build_adapter()

    @property
    def names(self) -> tuple[str, ...]:
        """Every known type name, sorted."""
        return tuple(sorted(self._types))

    def get(self, name: str) -> type[Message]:
        """The model of a type; raises SOS-4004 for an unknown one."""
        found = self._types.get(name)
        if found is None:
            raise self._unknown(name)
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def register(self, name: str, payload: type[BaseModel] | Mapping[str, Any]) -> type[Message]:
        """Register a custom type whose payload is a pydantic model or a JSON Schema (Draft 2020-12).

        ``name`` must be namespaced (``acme.deploy_request``) so it can never collide with a kernel type.
        Registering the same name twice is an error. Returns the message model built for the type.
        """
        if self._frozen:
            raise InvalidArgument("the default catalogue is read-only; use TypeCatalogue() to add types")
        if not isinstance(name, str) or not _CUSTOM_NAME_RE.fullmatch(name) or len(name) > 100:
            raise InvalidArgument(
                f"custom type name {name!r} must be namespaced like 'acme.deploy_request'",
                details={"pattern": CUSTOM_TYPE_NAME_PATTERN},
            )
        if name in self._types:
            raise InvalidArgument(f"message type {name!r} is already registered")
        model = _custom_message_model(name, payload)
        self._types[name] = model
        self._build_adapter()
        return model

    def parse(self, data: bytes | bytearray | str | Mapping[str, Any] | BaseModel) -> Message:
        """Validate wire data into a message; see :func:`parse_message`."""
        kind = type(data)  # exact-type checks first: the common inputs skip the ABC isinstance machinery
        if kind is bytes or kind is str:
            return self._parse_text(data)  # type: ignore[arg-type]
        if kind is dict:
            try:
                return self._adapter.validate_python(data, context=_WIRE)
            except ValidationError:
                return self._slow_parse(data)
        if isinstance(data, Message):
            if data.type not in self._types:
                raise self._unknown(data.type)
            return data
        if isinstance(data, bytes | bytearray | str):
            return self._parse_text(data)
        if isinstance(data, Mapping):
            mapping = data if isinstance(data, dict) else dict(data)
            try:
                return self._adapter.validate_python(mapping, context=_WIRE)
            except ValidationError:
                return self._slow_parse(mapping)
        if isinstance(data, BaseModel):
            return self.parse(data.model_dump(mode="json"))
        raise SchemaViolation(
            f"a message is a JSON object, not {type(data).__name__}",
            details={"errors": [{"loc": "(root)", "msg": "expected a JSON object", "type": "dict_type"}]},
        )

    def parse_encoded(self, data: bytes | bytearray | str | Mapping[str, Any] | BaseModel) -> tuple[Message, bytes]:
        """:meth:`parse`, plus the message's wire bytes: what a store keeps and a consumer parses back.

        Wire text that validated is its own encoding whenever parsing it again gives the same message, that is
        when every field its type fills with a fresh value (``message_id``, ``timestamp``) is one the wire must
        carry: the text is then kept as given (re-encoding it would cost as much as validating it). Anything
        else is encoded with :meth:`~sos_kernel.contracts.WireModel.to_json`. Raises what :meth:`parse` raises.
        """
        parsed = self.parse(data)
        kind = type(data)
        if kind is bytes or kind is str:
            stable = self._verbatim.get(type(parsed))
            if stable is None:
                stable = self._verbatim[type(parsed)] = _replays_verbatim(type(parsed))
            if stable:
                return parsed, data if kind is bytes else data.encode()  # type: ignore[return-value,union-attr]
        return parsed, parsed.to_json()

    def parse_dialect(
        self, data: bytes | bytearray | str | Mapping[str, Any] | BaseModel, dialect: str | None
    ) -> Message:
        """:meth:`parse` after the leniency of ``dialect`` (None: strict; ``"sos-0.4"``: see
        :mod:`sos_kernel.contracts.sos`). SOS-4005 for an unknown dialect."""
        if dialect is None or isinstance(data, BaseModel):
            return self.parse(data)
        if dialect != SOS_DIALECT:
            raise InvalidArgument(
                f"unknown dialect {dialect!r} (known: {SOS_DIALECT!r})", details={"dialect": str(dialect)[:100]}
            )
        if isinstance(data, bytes | bytearray | str):
            if len(data) > MESSAGE_BYTES_MAX:
                return self._parse_text(data)  # raises the size error
            data = self._load_json(data)
        if not isinstance(data, Mapping):
            return self._slow_parse(data)
        name = check_type(data)
        model = self._types.get(name)
        if model is None:
            raise self._unknown(data.get("type"))
        return self.parse(sos_lenient(data, model))

    def _parse_text(self, data: bytes | bytearray | str) -> Message:
        if len(data) > MESSAGE_BYTES_MAX:  # characters for str input: a cheap bound before any decoding
            raise LimitExceeded(
                f"message is {len(data)} long; parse_message takes at most {MESSAGE_BYTES_MAX} bytes",
                details={"limit": "MESSAGE_BYTES_MAX", "max": MESSAGE_BYTES_MAX, "size": len(data)},
            )
        value = self._load_json(data)  # a key repeated in any object is refused here
        if type(value) is dict:
            try:
                return self._adapter.validate_python(value, context=_WIRE)
            except ValidationError:
                pass
        return self._slow_parse(value)

    # -- internals ----------------------------------------------------------------------------------------

    def _build_adapter(self) -> None:
        members = tuple(self._types.values())
        # Discriminated on "type": one dict lookup picks the model, in Rust, on the hot path.
        union: Any = Annotated[_union_of(members), Field(discriminator="type")]
        self._adapter: TypeAdapter[Message] = TypeAdapter(union)

    @staticmethod
    def _load_json(data: bytes | bytearray | str) -> Any:
        try:
            return loads(data)
        except ValueError as exc:  # UnicodeDecodeError included
            raise SchemaViolation(
                f"message is not valid JSON: {exc}",
                details={"errors": [{"loc": "(root)", "msg": str(exc), "type": "json_invalid"}]},
            ) from None

    def _slow_parse(self, data: Any) -> Message:
        # The fast path failed: find out why, in SOS's order, and raise the one right error.
        if not isinstance(data, Mapping):
            raise SchemaViolation(
                f"a message is a JSON object, not {type(data).__name__}",
                details={"errors": [{"loc": "(root)", "msg": "expected a JSON object", "type": "dict_type"}]},
            )
        if data.get("type") in (None, ""):  # SOS counts a null or empty type as missing
            raise MissingType(
                "message has no 'type' field; set it to one of: " + ", ".join(self.names),
                details={"known_types": list(self.names)},
            )
        name = data["type"]
        model = self._types.get(name) if isinstance(name, str) else None
        if model is None:
            raise self._unknown(name)
        try:
            return model.model_validate(data, context=_WIRE)
        except ValidationError as exc:
            raise sos_error_for(exc, name, data) from None

    def _unknown(self, name: object) -> UnknownType:
        text = name if isinstance(name, str) else repr(name)
        close = difflib.get_close_matches(text, self.names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return UnknownType(
            f"unknown message type {text[:100]!r}{hint} (known: {', '.join(self.names)})",
            details={"type": text[:100], "known_types": list(self.names), "closest": close[0] if close else None},
        )


_SAME_EVERY_TIME = frozenset({list, dict, set, frozenset, tuple})
"""Default factories whose value never varies: a field they fill reads back the same from text that omits it."""


def _replays_verbatim(model: type[BaseModel], seen: frozenset[type[BaseModel]] = frozenset()) -> bool:
    # True when no field of the model, or of a model nested in it, is filled with a varying value (a fresh id,
    # the current time) unless the wire carries it; for such a model, text that validated parses back equal.
    if model in seen:
        return True
    required = model.wire_required if issubclass(model, WireRequired) else frozenset()
    for name, field in model.model_fields.items():
        factory = field.default_factory
        if factory is not None and factory not in _SAME_EVERY_TIME and name not in required:
            return False
        for nested in _annotation_models(field.annotation):
            if not _replays_verbatim(nested, seen | {model}):
                return False
    return True


def _annotation_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _annotation_models(arg)]


def _union_of(members: tuple[type[Message], ...]) -> Any:
    from typing import Union

    return Union[members]  # noqa: UP007 - a runtime-built union of models


def _custom_message_model(name: str, payload: type[BaseModel] | Mapping[str, Any]) -> type[Message]:
    type_field: Any = (Literal[name], name)
    if isinstance(payload, type) and issubclass(payload, BaseModel) and payload.model_config.get("extra") != "forbid":
        raise InvalidArgument(
            "a custom payload model must refuse unknown fields: subclass sos_kernel.contracts.WireModel or set "
            "model_config = ConfigDict(extra='forbid')"
        )
    if isinstance(payload, type) and issubclass(payload, BaseModel):
        return cast(
            type[Message],
            create_model(f"Custom_{name.replace('.', '_')}", __base__=Message, type=type_field, payload=(payload, ...)),
        )
    if isinstance(payload, Mapping):
        return _schema_message_model(name, dict(payload), type_field)
    raise InvalidArgument("a custom type's payload is a pydantic model class or a JSON Schema mapping")


def _schema_message_model(name: str, schema: dict[str, Any], type_field: Any) -> type[Message]:
    # Imported here, not at the top: with its format extras installed, importing jsonschema costs ~2 s (it compiles
    # a grammar), which every process paid at ``import sos_kernel`` although only custom schema types need it.
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgument(f"the JSON Schema for {name!r} is not valid: {exc.message}") from None
    validator = anchored_validator_class()(schema, format_checker=jsonschema.FormatChecker())

    def _check(cls: type[Message], value: Any) -> Any:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path) or "(root)"
            raise PydanticCustomError("json_schema", "{where}: {msg}", {"where": where, "msg": errors[0].message})
        return value

    return cast(
        type[Message],
        create_model(
            f"Custom_{name.replace('.', '_')}",
            __base__=Message,
            __validators__={"_payload_schema": cast(Any, field_validator("payload")(classmethod(_check)))},
            type=type_field,
            payload=(Any, ...),
        ),
    )


DEFAULT_CATALOGUE = TypeCatalogue(frozen=True)
"""The read-only catalogue of the 8 core types and our extension types."""


def parse_message(
    data: bytes | bytearray | str | Mapping[str, Any] | BaseModel,
    *,
    catalogue: TypeCatalogue | None = None,
    dialect: str | None = None,
) -> Message:
    """Validate wire data (JSON bytes/str, a mapping, or a model) into the message of its type.

    ``dialect="sos-0.4"`` first applies exactly the leniency of SOS v0.4.1's running code (absent ``version``
    and default targets filled, optional ``null`` fields dropped, ``project`` and ``payload.remember`` read;
    see :mod:`sos_kernel.contracts.sos`); the default (None) is strict.

    Raises, in SOS's order: :class:`~sos_kernel.errors.MissingType` (SOS-4002),
    :class:`~sos_kernel.errors.UnknownType` (SOS-4004), :class:`~sos_kernel.errors.SchemaViolation`
    (SOS-4001, field paths in ``details["errors"]``), :class:`~sos_kernel.errors.InvalidSource` (SOS-4003);
    :class:`~sos_kernel.errors.LimitExceeded` (SOS-4010) above ``MESSAGE_BYTES_MAX``.
    """
    return (catalogue or DEFAULT_CATALOGUE).parse_dialect(data, dialect)


def from_sos_fields(fields: Mapping[Any, Any], *, catalogue: TypeCatalogue | None = None) -> Message:
    """The message one entry of SOS's Redis streams holds (``XRANGE``'s field map, bytes or text), read in the
    ``sos-0.4`` dialect. Raises what :func:`~sos_kernel.contracts.parse_message` raises."""
    cat = catalogue or DEFAULT_CATALOGUE
    name = fields.get("type", fields.get(b"type")) if isinstance(fields, Mapping) else None
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    model = cat.get(name) if isinstance(name, str) and name in cat else None
    return cat.parse_dialect(decode_sos_fields(fields, model), SOS_DIALECT)
