"""Export an SOS Agent Card as an A2A (Agent2Agent protocol) v1.0 AgentCard.

:func:`agent_card_to_a2a` returns the ProtoJSON (camelCase) dict form of an A2A ``lf.a2a.v1.AgentCard``, the
shape the official ``a2a-sdk`` (1.x) parses with ``google.protobuf.json_format.ParseDict(d, AgentCard())`` -- with
no unknown fields, so a strict parse succeeds -- and with every field the A2A spec marks REQUIRED set and
non-empty, so ``a2a.utils.proto_utils.validate_proto_required_fields`` passes too.

A2A v1.0 has no top-level ``url``: where an agent is reached is the ordered ``supportedInterfaces`` list (the
first is preferred), each a ``url``, a ``protocolBinding`` (``JSONRPC``, ``HTTP+JSON`` or ``GRPC``) and a
``protocolVersion``. A card needs at least one, so exporting without a ``url`` or ``endpoints`` is an error.

SOS facts with no A2A field (tool, type, role, model, project, squads, the declared skills, the signing key) travel
in one entry of ``capabilities.extensions`` whose ``uri`` is :data:`A2A_EXTENSION_URI`; its ``params`` hold only
strings and lists of strings, so they survive the protobuf ``Struct`` round trip unchanged. Local details (host,
cwd, pid, session, tenant) are never exported.

This module does not import ``a2a-sdk``; it only builds plain JSON-safe dicts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from ..errors import InvalidArgument

__all__ = [
    "A2A_EXTENSION_URI",
    "A2A_PROTOCOL_VERSION",
    "A2A_TRANSPORTS",
    "DEFAULT_INPUT_MODES",
    "DEFAULT_OUTPUT_MODES",
    "A2ASource",
    "agent_card_to_a2a",
]


class A2ASource(Protocol):
    """The fields of an :class:`~sos_kernel.contracts.AgentCard` the export reads (structural: the card's module
    imports this one)."""

    @property
    def agent_card_version(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tool(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def summary(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def project(self) -> str | None: ...
    @property
    def skills(self) -> Sequence[str] | None: ...
    @property
    def squads(self) -> Sequence[str] | None: ...


A2A_EXTENSION_URI: Final = "https://sos-kernel.dev/ext/agent-card/v1"
"""The ``uri`` of the ``capabilities.extensions`` entry that carries the SOS-specific facts."""

A2A_PROTOCOL_VERSION: Final = "1.0"
"""The A2A protocol version an interface claims unless its endpoint says otherwise."""

A2A_TRANSPORTS: Final = ("JSONRPC", "HTTP+JSON", "GRPC")
"""The core A2A protocol bindings; the first is the default."""

DEFAULT_INPUT_MODES: Final = ("text/plain", "application/json")
"""Media types an exported card declares it accepts."""

DEFAULT_OUTPUT_MODES: Final = ("text/plain", "application/json")
"""Media types an exported card declares it produces."""

_HTTP_TRANSPORTS: Final = frozenset({"JSONRPC", "HTTP+JSON"})
_ENDPOINT_KEYS: Final = frozenset({"url", "transport", "tenant", "protocol_version"})
_PROTOCOL_VERSION_RE: Final = re.compile(r"^\d+\.\d+$")
_PUBLIC_KEY_RE: Final = re.compile(r"^[0-9a-fA-F]{64}$")
_WHITESPACE_RE: Final = re.compile(r"\s")


def _bad(message: str, field: str) -> InvalidArgument:
    return InvalidArgument(message, details={"field": field})


def _check_text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(f"{field} must be a non-empty string, got {value!r}", field)
    return value


def _check_url(value: object, field: str, *, http: bool) -> str:
    text = _check_text(value, field)
    if _WHITESPACE_RE.search(text):
        raise _bad(f"{field} must not contain whitespace: {text!r}", field)
    parts = urlsplit(text)
    if http and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise _bad(f"{field} must be an absolute http(s) URL, got {text!r}", field)
    if not parts.scheme:
        raise _bad(f"{field} must be an absolute URL with a scheme, got {text!r}", field)
    return text


def _transport(value: object, field: str) -> str:
    text = _check_text(value, field)
    for known in A2A_TRANSPORTS:
        if text.upper() == known:
            return known
    raise _bad(f"{field} must be one of {', '.join(A2A_TRANSPORTS)}, got {text!r}", field)


def _interface(endpoint: Mapping[str, str], index: int) -> dict[str, str]:
    where = f"endpoints[{index}]"
    if not isinstance(endpoint, Mapping):
        raise _bad(f"{where} must be a mapping with 'url' and 'transport', got {endpoint!r}", where)
    unknown = sorted(set(endpoint) - _ENDPOINT_KEYS)
    if unknown:
        raise _bad(f"{where} has unknown keys {unknown}; allowed: {sorted(_ENDPOINT_KEYS)}", where)
    if "url" not in endpoint:
        raise _bad(f"{where} has no 'url'", f"{where}.url")
    binding = _transport(endpoint.get("transport", A2A_TRANSPORTS[0]), f"{where}.transport")
    iface = {
        "url": _check_url(endpoint["url"], f"{where}.url", http=binding in _HTTP_TRANSPORTS),
        "protocolBinding": binding,
        "protocolVersion": A2A_PROTOCOL_VERSION,
    }
    if "protocol_version" in endpoint:
        version = _check_text(endpoint["protocol_version"], f"{where}.protocol_version")
        if not _PROTOCOL_VERSION_RE.fullmatch(version):
            raise _bad(f"{where}.protocol_version must look like '1.0', got {version!r}", f"{where}.protocol_version")
        iface["protocolVersion"] = version
    if "tenant" in endpoint:
        iface["tenant"] = _check_text(endpoint["tenant"], f"{where}.tenant")
    return iface


def _interfaces(url: str | None, endpoints: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence):
        raise _bad(f"endpoints must be a sequence of mappings, got {endpoints!r}", "endpoints")
    candidates: list[dict[str, str]] = []
    if url is not None:
        candidates.append(
            {
                "url": _check_url(url, "url", http=True),
                "protocolBinding": A2A_TRANSPORTS[0],
                "protocolVersion": A2A_PROTOCOL_VERSION,
            }
        )
    candidates.extend(_interface(endpoint, i) for i, endpoint in enumerate(endpoints))
    if not candidates:
        raise _bad("an A2A AgentCard needs a reachable url: pass url= or endpoints=", "url")
    unique: list[dict[str, str]] = []
    for iface in candidates:
        if iface not in unique:
            unique.append(iface)
    return unique


def _key_facts(public_key: str | None, key_id: str | None) -> dict[str, str]:
    facts: dict[str, str] = {}
    if public_key is not None:
        if not isinstance(public_key, str) or not _PUBLIC_KEY_RE.fullmatch(public_key):
            raise _bad("public_key must be a 32-byte Ed25519 public key as 64 hex digits", "public_key")
        public_key = public_key.lower()
        # The key id rule of sos_kernel.identity: the first 16 hex digits of the SHA-256 of the raw key.
        derived = hashlib.sha256(bytes.fromhex(public_key)).hexdigest()[:16]
        if key_id is not None and key_id != derived:
            raise _bad(f"key_id {key_id!r} does not match public_key (its key id is {derived!r})", "key_id")
        facts["key_id"] = derived
        facts["public_key"] = public_key
        facts["public_key_alg"] = "Ed25519"
    elif key_id is not None:
        facts["key_id"] = _check_text(key_id, "key_id")
    return facts


def _description(card: A2ASource) -> str:
    if card.summary is not None and card.summary.strip():
        return card.summary
    return f"SOS {card.role} agent '{card.name}' ({card.tool}, {card.type})"


def _skills(card: A2ASource, description: str) -> list[dict[str, Any]]:
    if not card.skills:
        # A2A requires at least one skill: describe the agent's role as its one skill.
        return [{"id": card.role, "name": card.role, "description": description, "tags": [card.role, card.tool]}]
    return [
        {
            "id": skill,
            "name": skill,
            "description": f"The '{skill}' skill of SOS {card.role} agent '{card.name}'.",
            "tags": list(dict.fromkeys([skill, card.role])),
        }
        for skill in card.skills
    ]


def _provider(organization: str, organization_url: str | None, interfaces: list[dict[str, str]]) -> dict[str, str]:
    org = _check_text(organization, "organization")
    if organization_url is not None:
        return {"organization": org, "url": _check_url(organization_url, "organization_url", http=True)}
    preferred = urlsplit(interfaces[0]["url"])
    if preferred.scheme not in ("http", "https") or not preferred.netloc:
        raise _bad("pass organization_url: the preferred interface has no http(s) origin to use", "organization_url")
    return {"organization": org, "url": f"{preferred.scheme}://{preferred.netloc}"}


def agent_card_to_a2a(
    card: A2ASource,
    *,
    url: str | None = None,
    endpoints: Sequence[Mapping[str, str]] = (),
    public_key: str | None = None,
    key_id: str | None = None,
    version: str = "1.0.0",
    organization: str | None = None,
    organization_url: str | None = None,
) -> dict[str, Any]:
    """The A2A v1.0 AgentCard (ProtoJSON dict) for ``card``.

    Guaranteed of the result: a new, JSON-serialisable dict that ``a2a-sdk`` parses strictly (no unknown fields)
    as ``a2a.types.AgentCard``, with every A2A REQUIRED field set and non-empty; it is already in canonical form
    (``MessageToDict`` of the parsed card gives it back unchanged):

    * ``name`` is ``card.name``; ``description`` is ``card.summary``, or when that is missing or blank,
      ``"SOS <role> agent '<name>' (<tool>, <type>)"``; ``version`` is ``version``.
    * ``supportedInterfaces``: ``url`` first (binding ``JSONRPC``), then each of ``endpoints`` in order, exact
      duplicates dropped. An endpoint is ``{"url", "transport"}`` with optional ``"tenant"`` and
      ``"protocol_version"``; ``transport`` defaults to ``JSONRPC``, is one of ``JSONRPC``, ``HTTP+JSON``,
      ``GRPC`` (any case) and is written canonically; ``protocolVersion`` defaults to :data:`A2A_PROTOCOL_VERSION`.
      HTTP bindings need an absolute http(s) URL; ``GRPC`` any URL with a scheme.
    * ``capabilities``: ``streaming``, ``pushNotifications`` and ``extendedAgentCard`` are ``false`` (SOS does not
      know them), and ``extensions`` holds exactly one entry, ``uri`` :data:`A2A_EXTENSION_URI`, not required
      (``required`` omitted, i.e. false), whose ``params`` are ``agent_card_version``, ``name``, ``tool``,
      ``type``, ``role``, ``squads`` and ``skills`` (lists, empty when the card has none), plus ``model`` and
      ``project`` when set, plus the key: ``key_id``, ``public_key`` (lower-case hex) and ``public_key_alg``
      (``"Ed25519"``) when ``public_key`` is given, or ``key_id`` alone when only it is given. Every param is a
      string or a list of strings.
    * ``defaultInputModes`` / ``defaultOutputModes`` are :data:`DEFAULT_INPUT_MODES` / :data:`DEFAULT_OUTPUT_MODES`.
    * ``skills``: one per card skill, in order, ``{"id": skill, "name": skill, "description", "tags": [skill,
      role]}`` (the role once if it equals the skill). A card without skills, since A2A requires at least one,
      gets a single skill named after its role (``id`` and ``name`` the role, the card's description, ``tags``
      ``[role, tool]``); ``params["skills"]`` stays ``[]`` so the two cases can be told apart.
    * ``provider`` only when ``organization`` is given: ``{"organization", "url"}`` where ``url`` is
      ``organization_url`` or, by default, the origin (``scheme://host``) of the preferred interface.

    Raises:
        InvalidArgument: no ``url`` and no ``endpoints`` (A2A has no card without a reachable interface); a
            malformed URL, endpoint, transport, version or organization; a ``public_key`` that is not 64 hex
            digits; a ``key_id`` that is not the id of ``public_key`` (the first 16 hex digits of its SHA-256).
    """
    interfaces = _interfaces(url, endpoints)
    description = _description(card)
    params: dict[str, Any] = {
        "agent_card_version": card.agent_card_version,
        "name": card.name,
        "tool": card.tool,
        "type": card.type,
        "role": card.role,
        "squads": list(card.squads or []),
        "skills": list(card.skills or []),
    }
    if card.model is not None:
        params["model"] = card.model
    if card.project is not None:
        params["project"] = card.project
    params.update(_key_facts(public_key, key_id))

    result: dict[str, Any] = {
        "name": card.name,
        "description": description,
        "supportedInterfaces": interfaces,
        "version": _check_text(version, "version"),
        "capabilities": {
            "streaming": False,
            "pushNotifications": False,
            "extendedAgentCard": False,
            "extensions": [
                {
                    "uri": A2A_EXTENSION_URI,
                    "description": "SOS Agent Card facts: tool, type, role, model, project, squads, skills, key.",
                    "params": params,
                }
            ],
        },
        "defaultInputModes": list(DEFAULT_INPUT_MODES),
        "defaultOutputModes": list(DEFAULT_OUTPUT_MODES),
        "skills": _skills(card, description),
    }
    if organization is not None:
        result["provider"] = _provider(organization, organization_url, interfaces)
    return result
