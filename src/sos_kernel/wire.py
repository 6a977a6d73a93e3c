"""The JSON form of every value the remote API returns, and its way back.

The server encodes results with :func:`encode`; ``mumega_sdk`` rebuilds the same classes with the ``load_*``
functions, so a remote call returns what the in-process call returns (``Transfer``, ``PublishReceipt``,
``SkillCard``...), equal field by field. Timestamps travel as ISO 8601 text with their offset (exact to the
microsecond), contract models as their wire form (``to_wire()``), dataclasses as objects of their fields.

This module needs neither FastAPI nor httpx: both sides import it. :func:`json_value` is the kernel's one parser
of JSON from outside (a key repeated in an object is SOS-4001); every layer above the contracts parses with it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from ._json import loads as json_value
from .bus import DeadLetter, PublishReceipt
from .contracts import AgentCard, Message, SkillCard, TypeCatalogue, UsageEvent, WireModel
from .errors import BackendFailure
from .identity.keys import PublicKey
from .identity.models import IssuedToken, Principal, Tenant, TokenInfo
from .ledger import Account, Balance, Price, Rate, Transfer, Transmutation, UsageSummaryRow
from .memory import Hit, MemoryRecord, NamespaceInfo
from .registry import RegisteredAgent
from .skills import Invocation

__all__ = [
    "encode",
    "json_bytes",
    "json_value",
    "load",
    "load_account",
    "load_balance",
    "load_dead_letter",
    "load_hit",
    "load_invocation",
    "load_issued_token",
    "load_memory",
    "load_message",
    "load_price",
    "load_principal",
    "load_rate",
    "load_receipt",
    "load_registered_agent",
    "load_skill_card",
    "load_tenant",
    "load_token_info",
    "load_transfer",
    "load_transmutation",
    "load_usage_event",
    "load_usage_summary_row",
]


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of a JSON-ready value (no NaN or infinity: JSON has none). Never fails on text: a string
    that is not valid Unicode (a lone surrogate, stored before the guard refused them) is sent as its ``\\uXXXX``
    escape, so reading old data answers rather than failing."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON's ASCII form escapes it
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def encode(value: Any) -> Any:
    """A JSON-ready form of a value: dataclasses, contract models, datetimes, mappings and sequences; bytes (a
    message as JSON text) as text, which the receiving service parses."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, WireModel):
        return value.to_wire()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} for the wire")


def _when(value: Any) -> datetime:
    if not isinstance(value, str):
        raise BackendFailure(f"expected an ISO 8601 timestamp, got {value!r}")
    return datetime.fromisoformat(value)


def _maybe_when(value: Any) -> datetime | None:
    return None if value is None else _when(value)


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}
"""Declared field names per result class (a handful of classes, filled once each)."""


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


def _fields(cls: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    # Only the declared fields: a server may add computed keys (``available``...) for human readers.
    names = _field_names(cls)
    return {k: v for k, v in data.items() if k in names}


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise BackendFailure(f"the server answered a {type(data).__name__} where a {what} object was expected")
    return data


def load_message(data: Any, catalogue: TypeCatalogue) -> Message:
    """A bus message, validated by ``catalogue``."""
    return catalogue.parse(_object(data, "message"))


def load_receipt(data: Any) -> PublishReceipt:
    """A :class:`PublishReceipt`."""
    return PublishReceipt(**_fields(PublishReceipt, _object(data, "receipt")))


def load_dead_letter(data: Any, catalogue: TypeCatalogue) -> DeadLetter:
    """A :class:`DeadLetter`."""
    raw = dict(_fields(DeadLetter, _object(data, "dead letter")))
    raw["message"] = None if raw["message"] is None else load_message(raw["message"], catalogue)
    raw["dead_at"] = _when(raw["dead_at"])
    return DeadLetter(**raw)


def load_account(data: Any) -> Account:
    """A ledger :class:`Account`."""
    raw = dict(_fields(Account, _object(data, "account")))
    raw["created_at"] = _when(raw["created_at"])
    return Account(**raw)


def load_balance(data: Any) -> Balance:
    """A ledger :class:`Balance`."""
    return Balance(**_fields(Balance, _object(data, "balance")))


def load_transfer(data: Any) -> Transfer:
    """A ledger :class:`Transfer`."""
    raw = dict(_fields(Transfer, _object(data, "transfer")))
    raw["timestamp"] = _when(raw["timestamp"])
    raw["expires_at"] = _maybe_when(raw.get("expires_at"))
    raw["metadata"] = dict(raw.get("metadata") or {})
    return Transfer(**raw)


def load_transmutation(data: Any) -> Transmutation:
    """A ledger :class:`Transmutation`."""
    raw = dict(_fields(Transmutation, _object(data, "transmutation")))
    legs = [load_transfer(leg) for leg in raw["legs"]]
    if len(legs) != 2:
        raise BackendFailure("a transmutation has two legs")
    raw["legs"] = (legs[0], legs[1])
    return Transmutation(**raw)


def load_price(data: Any) -> Price:
    """A ledger :class:`Price`."""
    return Price(**_fields(Price, _object(data, "price")))


def load_rate(data: Any) -> Rate:
    """A ledger :class:`Rate`."""
    raw = dict(_fields(Rate, _object(data, "rate")))
    raw["valid_from"] = _maybe_when(raw.get("valid_from"))
    raw["valid_until"] = _maybe_when(raw.get("valid_until"))
    return Rate(**raw)


def load_usage_event(data: Any) -> UsageEvent:
    """A :class:`UsageEvent` as stored."""
    return UsageEvent.model_validate(_object(data, "usage event"))


def load_usage_summary_row(data: Any) -> UsageSummaryRow:
    """One row of a usage summary."""
    return UsageSummaryRow(**_fields(UsageSummaryRow, _object(data, "usage summary row")))


def load_registered_agent(data: Any) -> RegisteredAgent:
    """A :class:`RegisteredAgent`."""
    raw = dict(_fields(RegisteredAgent, _object(data, "registered agent")))
    raw["card"] = AgentCard.model_validate(raw["card"])
    raw["registered_at"] = _when(raw["registered_at"])
    raw["last_seen"] = _when(raw["last_seen"])
    key = raw.get("public_key")
    raw["public_key"] = PublicKey(**_fields(PublicKey, key)) if isinstance(key, Mapping) else None
    raw["endpoints"] = tuple(dict(e) for e in raw.get("endpoints") or ())
    return RegisteredAgent(**raw)


def load_skill_card(data: Any) -> SkillCard:
    """A :class:`SkillCard` with its kernel-kept earnings and verification."""
    return SkillCard.model_validate(_object(data, "skill card"))


def load_invocation(data: Any) -> Invocation:
    """A skill :class:`Invocation`."""
    raw = dict(_fields(Invocation, _object(data, "invocation")))
    raw["payouts"] = {str(k): int(v) for k, v in dict(raw["payouts"]).items()}
    raw["transfers"] = tuple(load_transfer(t) for t in raw["transfers"])
    return Invocation(**raw)


def load_memory(data: Any) -> MemoryRecord:
    """A :class:`MemoryRecord`."""
    raw = dict(_fields(MemoryRecord, _object(data, "memory")))
    raw["created_at"] = _when(raw["created_at"])
    raw["expires_at"] = _maybe_when(raw.get("expires_at"))
    raw["metadata"] = dict(raw.get("metadata") or {})
    return MemoryRecord(**raw)


def load_hit(data: Any) -> Hit:
    """A recall :class:`Hit`."""
    raw = dict(_fields(Hit, _object(data, "hit")))
    raw["score"] = float(raw["score"])
    raw["metadata"] = dict(raw.get("metadata") or {})
    return Hit(**raw)


def load_principal(data: Any) -> Principal:
    """A :class:`Principal` (``GET /v1/session``)."""
    raw = dict(_fields(Principal, _object(data, "principal")))
    raw["scopes"] = frozenset(raw["scopes"])
    return Principal(**raw)


def load_tenant(data: Any) -> Tenant:
    """A :class:`Tenant`."""
    raw = dict(_fields(Tenant, _object(data, "tenant")))
    raw["created_at"] = _when(raw["created_at"])
    raw["channels"] = tuple(raw.get("channels") or ())
    return Tenant(**raw)


def load_issued_token(data: Any) -> IssuedToken:
    """An :class:`IssuedToken` (with its secret)."""
    raw = dict(_fields(IssuedToken, _object(data, "issued token")))
    raw["scopes"] = tuple(raw["scopes"])
    raw["expires_at"] = _maybe_when(raw.get("expires_at"))
    return IssuedToken(**raw)


def load_token_info(data: Any) -> TokenInfo:
    """A :class:`TokenInfo` (never a secret)."""
    raw = dict(_fields(TokenInfo, _object(data, "token")))
    raw["scopes"] = tuple(raw["scopes"])
    raw["created_at"] = _when(raw["created_at"])
    raw["expires_at"] = _maybe_when(raw.get("expires_at"))
    raw["revoked_at"] = _maybe_when(raw.get("revoked_at"))
    return TokenInfo(**raw)


# -- by type: what the derived routes and the client use ------------------------------------------------------------

_LOADERS: dict[type[Any], Callable[[Any], Any]] = {
    PublishReceipt: load_receipt,
    Account: load_account,
    Balance: load_balance,
    Transfer: load_transfer,
    Transmutation: load_transmutation,
    Price: load_price,
    Rate: load_rate,
    UsageSummaryRow: load_usage_summary_row,
    RegisteredAgent: load_registered_agent,
    Invocation: load_invocation,
    MemoryRecord: load_memory,
    Hit: load_hit,
    NamespaceInfo: lambda data: NamespaceInfo(**_fields(NamespaceInfo, _object(data, "namespace"))),
    Principal: load_principal,
    Tenant: load_tenant,
    IssuedToken: load_issued_token,
    datetime: _when,
    PublicKey: lambda data: PublicKey(**_fields(PublicKey, _object(data, "public key"))),
}


def load(hint: Any, data: Any, catalogue: TypeCatalogue) -> Any:
    """``data`` (decoded JSON) rebuilt as the type ``hint`` names, for the kernel's result and argument types.

    Plain JSON types, literals and unions that take a mapping pass unchanged (the service checks them, so a remote
    call is refused with the in-process message); a list of the wrong shape passes unchanged for the same reason.
    Raises ``BackendFailure``, ``ValueError``, ``TypeError`` or pydantic's ``ValidationError`` for data that cannot
    be the type.
    """
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return _load_union(args, data, catalogue)
    if origin in (dict, Mapping, collections.abc.Mapping) and len(args) == 2 and isinstance(data, Mapping):
        return {str(k): load(args[1], v, catalogue) for k, v in data.items()}
    if origin in (list, tuple, Sequence, collections.abc.Sequence) and isinstance(data, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(data):
                raise BackendFailure(f"expected {len(args)} items, got {len(data)}")
            return tuple(load(a, d, catalogue) for a, d in zip(args, data, strict=True))
        item = args[0] if args else Any
        return [load(item, d, catalogue) for d in data]
    if not isinstance(hint, type):
        return data  # Any, Literal, a bare alias
    if data is None:
        return None
    if issubclass(hint, Message):
        return _typed_message(hint, data, catalogue)
    loader = _LOADERS.get(hint)
    if loader is not None:
        return loader(data)
    if issubclass(hint, DeadLetter):
        return load_dead_letter(data, catalogue)
    if issubclass(hint, BaseModel):
        return hint.model_validate(data)
    return data


def _load_union(args: tuple[Any, ...], data: Any, catalogue: TypeCatalogue) -> Any:
    members = [a for a in args if a is not type(None)]
    if data is None and len(members) < len(args):
        return None
    if any(get_origin(a) in (Mapping, collections.abc.Mapping, dict) or a in (bytes, str) for a in members):
        return data  # the service takes the mapping (or the JSON text) itself
    if len(members) == 1:
        return load(members[0], data, catalogue)
    return data


def _typed_message(hint: type[Any], data: Any, catalogue: TypeCatalogue) -> Any:
    message = catalogue.parse(_object(data, "message"))
    if not isinstance(message, hint):
        raise BackendFailure(f"expected a {hint.__name__}, got a {message.type!r} message")
    return message
