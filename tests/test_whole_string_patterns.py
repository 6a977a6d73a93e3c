"""Every name and id is validated as a whole string: ``x`` passes, ``x\\n`` (which looks the same) does not.

With Python's ``re``, ``$`` also matches just before a trailing newline, so ``re.match(r"^agent:[a-z]+$", ...)``
accepts ``"agent:bob\\n"``. These tests hold the rule:

- a static check that no compiled pattern of the package ending in ``$`` is used with ``match`` or ``search``;
- a table of every validator, fed a valid value and the same value with ``\\n`` appended (version *ranges* are
  not names: they are whitespace-separated expressions, so a trailing newline there is a separator);
- the pydantic patterns (Rust regex, where ``$`` is the end of the text), checked on a sample of each;
- operations through the API, in-process and over HTTP, refusing such names with the same error;
- the JSON Schema patterns of user-registered types, which must end at the end of the text as JSON Schema's do.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter, ValidationError

import mumega_sdk
import sos_kernel
from sos_kernel.backends.redis import _entry_id
from sos_kernel.bus.service import _check_name, check_address
from sos_kernel.cli._target import token_tenant
from sos_kernel.contracts import AgentCard, SkillCard, TypeCatalogue, parse_message
from sos_kernel.contracts._schema_patterns import ecma_anchored
from sos_kernel.contracts.a2a import agent_card_to_a2a
from sos_kernel.errors import SOSError
from sos_kernel.kernel import check_tenant
from sos_kernel.ledger.service import check_currency, check_owner, check_transfer_id
from sos_kernel.server._streams import is_temporary_group
from sos_kernel.skills.semver import Version

from .conftest import Api

REPO = Path(__file__).resolve().parents[1]
_END_DOLLAR = re.compile(r"(?<!\\)\$")


def _modules() -> Iterator[Any]:
    for package in (sos_kernel, mumega_sdk):
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".integrations." in info.name or info.name.endswith(".__main__"):
                continue  # optional third-party frameworks; they compile no validation patterns
            yield importlib.import_module(info.name)


def _dollar_patterns() -> list[tuple[str, str, str]]:
    found = []
    for module in _modules():
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and _END_DOLLAR.search(value.pattern):
                found.append((module.__name__, name, inspect.getsource(module)))
    return found


def test_no_pattern_ending_in_dollar_is_used_with_match_or_search() -> None:
    offenders = []
    for module, name, source in _dollar_patterns():
        if re.search(rf"\b{re.escape(name)}\.(match|search)\(", source):
            offenders.append(f"{module}.{name}")
    assert offenders == [], f"use .fullmatch (or end the pattern with \\Z): {offenders}"


def test_no_module_level_re_match_or_search_calls() -> None:
    calls = []
    for path in (REPO / "src").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bre\.(match|search)\(", line):
                calls.append(f"{path.relative_to(REPO)}:{number}")
    assert calls == [], f"compile the pattern and use .fullmatch: {calls}"


def _agent() -> dict[str, Any]:
    return AgentCard(name="bob", tool="sdk", type="service", role="executor").to_wire()


# --- every validator ------------------------------------------------------------------------------------------------


def _refuses(check: Callable[[str], Any]) -> Callable[[str], bool]:
    def accepts(value: str) -> bool:
        try:
            result = check(value)
        except (SOSError, ValidationError):
            return False
        return result is not None and result is not False

    return accepts


def _custom_type(name: str) -> Any:
    return TypeCatalogue().register(name, {"type": "object"})


def _a2a_key(key: str) -> Any:
    card = AgentCard(name="bob", tool="sdk", type="service", role="executor")
    return agent_card_to_a2a(card, url="https://a.example/a2a", public_key=key)


def _a2a_protocol(version: str) -> Any:
    endpoint = {"url": "https://a.example/a2a", "protocol_version": version}
    return agent_card_to_a2a(AgentCard(name="bob", tool="sdk", type="service", role="executor"), endpoints=[endpoint])


def _message_base() -> dict[str, Any]:
    return {
        "type": "send",
        "source": "agent:alice",
        "target": "agent:bob",
        "timestamp": "2026-01-31T12:00:00Z",
        "version": "1.0",
        "message_id": "0b7c0a63-6d3e-4a53-9c63-93f4b1a3f0c1",
        "payload": {"text": "hi", "content_type": "text/plain"},
    }


def _message_field(field: str) -> Callable[[str], Any]:
    return lambda value: parse_message(json.dumps({**_message_base(), field: value}))


def _skill_field(field: str) -> Callable[[str], Any]:
    base = {
        "schema_version": "1",
        "id": "summarise",
        "name": "Summarise",
        "version": "1.0.0",
        "author_agent": "agent:author",
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": "skills/summarise.py", "backend": "local-python"},
    }
    return lambda value: SkillCard.from_wire({**base, field: value})


def _agent_card_field(field: str) -> Callable[[str], Any]:
    return lambda value: AgentCard.from_wire({**_agent(), field: value})


VALIDATORS: list[tuple[str, Callable[[str], Any], str]] = [
    ("tenant slug", check_tenant, "acme"),
    ("bus address (agent)", check_address, "agent:bob"),
    ("bus address (channel)", check_address, "sos:channel:jobs"),
    ("bus group name", lambda v: _check_name(v, "group"), "workers"),
    ("ledger owner", check_owner, "agent:bob"),
    ("ledger system owner", check_owner, "system:treasury"),
    ("currency", check_currency, "USD"),
    ("transfer id", check_transfer_id, "a"),
    ("skill version", Version.parse, "1.2.3"),
    ("token tenant (cli)", token_tenant, "sk-acme-" + "0" * 32),
    ("temporary group", lambda v: is_temporary_group("sos:channel:x", v), "tmp-" + "a" * 32),
    ("redis stream id", _entry_id, "1700000000000-0"),
    ("custom type name", _custom_type, "acme.invoice"),
    ("a2a public key", _a2a_key, "ab" * 32),
    ("a2a protocol version", _a2a_protocol, "1.0"),
    ("message source", _message_field("source"), "agent:alice"),
    ("message target", _message_field("target"), "sos:channel:jobs"),
    ("message id", _message_field("message_id"), "0b7c0a63-6d3e-4a53-9c63-93f4b1a3f0c1"),
    ("message version", _message_field("version"), "1.0"),
    ("message trace id", _message_field("trace_id"), "0af7651916cd43dd8448eb211c80319c"),
    ("message timestamp", _message_field("timestamp"), "2026-01-31T12:00:00Z"),
    ("skill id", _skill_field("id"), "summarise"),
    ("skill card version", _skill_field("version"), "1.0.0"),
    ("skill author", _skill_field("author_agent"), "agent:author"),
    ("agent card name", _agent_card_field("name"), "bob"),
]


@pytest.mark.parametrize(("check", "good"), [(c, g) for _, c, g in VALIDATORS], ids=[n for n, _, _ in VALIDATORS])
def test_every_validator_takes_the_value_and_refuses_it_with_a_trailing_newline(
    check: Callable[[str], Any], good: str
) -> None:
    accepts = _refuses(check)
    assert accepts(good)
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        assert not accepts(bad), repr(bad)


@pytest.mark.anyio
async def test_tokens_refuse_an_agent_with_a_trailing_newline(kernel: sos_kernel.Kernel) -> None:
    await kernel.tenants.create("acme")
    with pytest.raises(SOSError) as info:
        await kernel.tenant("acme").tokens.issue(agent="agent:bob\n")
    assert info.value.code == "SOS-4005"
    with pytest.raises(SOSError):
        await kernel.tenants.create("beta\n")
    assert [t.slug for t in await kernel.tenants.list()] == ["acme"]


# --- the pydantic patterns ------------------------------------------------------------------------------------------


def _schema_patterns() -> list[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in (REPO / "schemas").rglob("*.json"):
        walk(json.loads(path.read_text()))
    return sorted(found)


SCHEMA_PATTERNS = _schema_patterns()


def test_the_schemas_carry_patterns() -> None:
    assert len(SCHEMA_PATTERNS) >= 10


@pytest.mark.parametrize("pattern", SCHEMA_PATTERNS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_schema_pattern_refuses_a_trailing_newline_in_pydantic(pattern: str, data: st.DataObject) -> None:
    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(strict=True, pattern=pattern)])
    value = data.draw(st.from_regex(pattern, fullmatch=True).filter(lambda v: "\n" not in v))
    assert adapter.validate_python(value) == value
    with pytest.raises(ValidationError):
        adapter.validate_python(value + "\n")
    with pytest.raises(ValidationError):
        adapter.validate_json(json.dumps(value + "\n"))


# --- through the API, in-process and over HTTP ----------------------------------------------------------------------


async def _open_bob(api: Api, owner: str = "agent:bob", currency: str = "USD") -> Any:
    return await api.ledger.open_account(owner, currency)


async def _transfer(api: Api, transfer_id: str) -> Any:
    await api.ledger.open_account("system:mint", "USD", allow_negative=True)
    await api.ledger.open_account("agent:bob", "USD")
    return await api.ledger.transfer(id=transfer_id, debit="system:mint", credit="agent:bob", amount=1, currency="USD")


def _skill(**fields: str) -> dict[str, Any]:
    card = {
        "schema_version": "1",
        "id": "summarise",
        "name": "Summarise",
        "version": "1.0.0",
        "author_agent": "agent:author",
        "created_at": "2026-11-01T00:00:00Z",
        "input_schema": {"type": "object"},
        "output_schema": {"type": "object"},
        "runtime": {"entry_point": "skills/summarise.py", "backend": "local-python"},
    }
    return {**card, **fields}


OPERATIONS: list[tuple[str, Callable[[Api, str], Any], str, str]] = [
    ("ledger owner", lambda api, v: _open_bob(api, owner=v), "agent:bob", "SOS-4005"),
    ("ledger currency", lambda api, v: _open_bob(api, currency=v), "USD", "SOS-4005"),
    ("transfer id", _transfer, "t-1", "SOS-4005"),
    ("bus target", lambda api, v: api.bus.send("agent:alice", v, "hi"), "agent:bob", "SOS-4001"),
    ("bus channel", lambda api, v: api.bus.send("agent:alice", v, "hi"), "sos:channel:jobs", "SOS-4001"),
    ("bus source", lambda api, v: api.bus.send(v, "agent:bob", "hi"), "agent:alice", "SOS-4003"),
    ("bus history address", lambda api, v: api.bus.history(v), "agent:bob", "SOS-4005"),
    ("skill id", lambda api, v: api.skills.publish(_skill(id=v)), "summarise", "SOS-4001"),
    ("skill version", lambda api, v: api.skills.publish(_skill(version=v)), "1.0.0", "SOS-4001"),
    ("agent card name", lambda api, v: api.registry.register({**_agent(), "name": v}), "bob", "SOS-4001"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("operation", "good", "code"), [o[1:] for o in OPERATIONS], ids=[o[0] for o in OPERATIONS])
async def test_operations_refuse_names_with_a_trailing_newline_with_the_same_error(
    api: Api, operation: Callable[[Api, str], Any], good: str, code: str
) -> None:
    with pytest.raises(SOSError) as info:
        await operation(api, good + "\n")
    assert info.value.code == code
    await operation(api, good)


# --- user-registered types: JSON Schema patterns --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "anchored"),
    [
        ("^[a-z]+$", r"^[a-z]+\Z"),
        (r"^a\$$", r"^a\$\Z"),
        ("^[$]$", r"^[$]\Z"),
        (r"^[\]$]+$", r"^[\]$]+\Z"),
        ("^(a$|b$)", r"^(a\Z|b\Z)"),
        ("abc", "abc"),
    ],
)
def test_schema_patterns_anchor_dollar_at_the_end_of_the_text(pattern: str, anchored: str) -> None:
    assert ecma_anchored(pattern) == anchored


def test_a_custom_types_schema_pattern_refuses_a_trailing_newline() -> None:
    catalogue = TypeCatalogue()
    name = {"type": "string", "pattern": "^[a-z]+$"}
    tags = {"type": "object", "propertyNames": name}
    catalogue.register("acme.ref", {"type": "object", "properties": {"ref": name, "tags": tags}, "required": ["ref"]})
    message = {**_message_base(), "type": "acme.ref"}
    assert catalogue.parse({**message, "payload": {"ref": "abc", "tags": {"x": 1}}}).payload == {
        "ref": "abc",
        "tags": {"x": 1},
    }
    for payload in ({"ref": "abc\n"}, {"ref": "abc", "tags": {"x\n": 1}}):
        with pytest.raises(SOSError) as info:
            catalogue.parse({**message, "payload": payload})
        assert info.value.code == "SOS-4001"
