"""A JSON object that names a key twice is refused wherever JSON enters, with SOS-4001 naming the key and its
path, and nothing is written: HTTP bodies (derived operations and the routes with their own bodies), raw message
bytes published on every backend and through the client, SOS-dialect fields, policy documents and the CLI.

Each row sends the same kind of input through one entry point: before the check, the last copy won there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import sos_kernel
from sos_kernel.cli import main
from sos_kernel.contracts import from_sos_fields, parse_message
from sos_kernel.errors import SchemaViolation
from sos_kernel.governance.policy import load_policy

from .conftest import SERVER_ADMIN, TENANT, Remote

pytestmark = pytest.mark.anyio

SEND = '{{"type":"send","source":"agent:alice","target":"agent:bob","payload":{payload}}}'
"""A send from alice to bob, its payload spliced in as JSON text."""
REPEATED_TEXT = SEND.format(payload='{"text":"pay 1","text":"pay 1000000"}')
"""A message whose payload repeats ``text``: Python would read the last copy, other parsers the first."""


def refusal_of(loc: str) -> dict[str, Any]:
    """The ``details`` every entry point answers for a repeated key at ``loc``."""
    key = loc.rsplit(".", 1)[-1]
    return {"errors": [{"loc": loc, "msg": f"repeated key {key!r}", "type": "json_duplicate_key"}]}


def assert_refused(error: dict[str, Any], loc: str) -> None:
    """``error`` (an envelope's inside) is the SOS-4001 refusal of a repeated key at ``loc``, naming it."""
    assert error["code"] == "SOS-4001", error
    assert error["details"] == refusal_of(loc), error
    key, where = loc.rsplit(".", 1)[-1], loc.rpartition(".")[0] or "(root)"
    assert f"the object at {where} repeats the key {key!r}" in error["message"], error


# -- HTTP: every route that takes a body ------------------------------------------------------------------------


Probe = Callable[[Remote], Awaitable[Any]]


async def _nothing(remote: Remote) -> None:
    return None


async def _bob_inbox(remote: Remote) -> int:
    return len(await remote.kernel.tenant(TENANT).bus.history("agent:bob"))


async def _tenants(remote: Remote) -> list[str]:
    return sorted(t.slug for t in await remote.kernel.tenants.list())


async def _tokens(remote: Remote) -> int:
    return len(await remote.kernel.tenant(TENANT).tokens.list())


async def _usage(remote: Remote) -> int:
    return len(await remote.kernel.tenant(TENANT).ledger.usage())


async def _policy(remote: Remote) -> Any:
    return await remote.kernel.tenant(TENANT).governance.get_policy(TENANT)


async def _accounts(remote: Remote) -> int:
    return len(await remote.kernel.tenant(TENANT).ledger.balances())


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    token: str
    body: str
    loc: str
    written: Probe = _nothing


USAGE = (
    '{"id":"u-1","tenant":"acme","provider":"anthropic","model":"claude","occurred_at":"2026-11-01T10:00:00Z",'
    '"input_tokens":1000,"cost_micros":42,"cost_micros":4200000}'
)
ROUTES = [
    Route(
        "publish payload",
        "/v1/bus/publish",
        "alice",
        f'{{"message":{REPEATED_TEXT}}}',
        "message.payload.text",
        _bob_inbox,
    ),
    Route(
        "publish argument",
        "/v1/bus/publish",
        "alice",
        '{{"message":{},"message":{}}}'.format(
            SEND.format(payload='{"text":"a"}'), SEND.format(payload='{"text":"b"}')
        ),
        "message",
        _bob_inbox,
    ),
    Route(
        "open account",
        "/v1/ledger/open_account",
        "admin",
        '{"owner":"agent:alice","currency":"USD","currency":"EUR"}',
        "currency",
        _accounts,
    ),
    Route(
        "transfer amount",
        "/v1/ledger/transfer",
        "admin",
        '{"id":"t-1","debit":"agent:alice","credit":"agent:bob","amount":1,"amount":1000000,"currency":"USD"}',
        "amount",
        _accounts,
    ),
    Route(
        "policy",
        "/v1/governance/set_policy",
        "admin",
        '{"tenant":"acme","policy":{"name":"p","rules":[{"id":"r","effect":"allow","effect":"deny","actions":["*"]}]}}',
        "policy.rules.0.effect",
        _policy,
    ),
    Route("tenant", "/v1/tenants", "server", '{"slug":"globex","slug":"initech"}', "slug", _tenants),
    Route("token", "/v1/tokens", "admin", '{"agent":"agent:zed","agent":"agent:alice"}', "agent", _tokens),
    Route("usage", "/usage", "alice", USAGE, "cost_micros", _usage),
    Route(
        "ack",
        "/v1/bus/ack",
        "alice",
        '{"address":"agent:alice","group":"g","position":"1-0","position":"2-0","lease_token":"x"}',
        "position",
    ),
    Route(
        "nack",
        "/v1/bus/nack",
        "alice",
        '{"address":"agent:alice","group":"g","position":"1-0","lease_token":"x","delay_s":0,"delay_s":5}',
        "delay_s",
    ),
    Route(
        "chat stream",
        "/v1/engine/chat/stream",
        "alice",
        '{"messages":[{"role":"user","content":"hi","content":"bye"}]}',
        "messages.0.content",
    ),
]


def _token(remote: Remote, who: str) -> str:
    return {"alice": remote.alice, "admin": remote.admin, "server": SERVER_ADMIN}[who]


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
async def test_a_body_repeating_a_key_is_refused_and_nothing_is_written(remote: Remote, route: Route) -> None:
    before = await route.written(remote)
    headers = {**remote.auth(_token(remote, route.token)), "content-type": "application/json"}
    response = await remote.http.post(route.path, content=route.body.encode(), headers=headers)
    assert response.status_code == 422, response.text
    assert_refused(response.json()["error"], route.loc)
    assert await route.written(remote) == before


# -- the same message text, whichever way it comes in -----------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """The error envelope a failed ``sos --json ...`` prints."""
    code = main(["--json", *args])
    _, err = capsys.readouterr()
    assert code != 0, err
    return dict(json.loads(err.strip().splitlines()[-1])["error"])


async def test_one_refusal_in_process_over_http_and_in_the_cli(
    remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = []
    with pytest.raises(SchemaViolation) as info:
        await remote.kernel.tenant(TENANT).bus.publish(REPEATED_TEXT.encode())
    found.append(info.value.to_wire()["error"])
    with pytest.raises(SchemaViolation) as info:
        await remote.client(remote.alice).bus.publish(REPEATED_TEXT.encode())
    found.append(info.value.to_wire()["error"])
    response = await remote.http.post(
        "/v1/bus/publish", json={"message": REPEATED_TEXT}, headers=remote.auth(remote.alice)
    )
    found.append(response.json()["error"])
    (tmp_path / "m.json").write_text(REPEATED_TEXT)
    found.append(_cli(capsys, "parse", str(tmp_path / "m.json")))
    with pytest.raises(SchemaViolation) as info:
        parse_message(REPEATED_TEXT)
    found.append(info.value.to_wire()["error"])
    assert all(f == found[0] for f in found), found
    assert_refused(found[0], "payload.text")
    assert await _bob_inbox(remote) == 0


# -- Bus.publish of raw JSON bytes: every backend and the client ------------------------------------------------


PUBLISHED = [
    (
        "envelope",
        '{"type":"send","source":"agent:alice","source":"agent:mallory","target":"agent:bob","payload":{"text":"hi"}}',
        "source",
    ),
    ("payload", REPEATED_TEXT, "payload.text"),
    (
        "deep",
        '{"type":"task_completed","source":"agent:alice","payload":{"task_id":"t-1","status":"done",'
        '"result":{"lines":[{"n":1},{"n":2,"n":3}]}}}',
        "payload.result.lines.1.n",
    ),
    ("escaped", SEND.format(payload='{"text":"a","\\u0074ext":"b"}'), "payload.text"),
]


@pytest.mark.parametrize(("case", "raw", "loc"), PUBLISHED, ids=[p[0] for p in PUBLISHED])
@pytest.mark.parametrize("form", ["bytes", "str"])
async def test_publishing_raw_json_that_repeats_a_key_writes_nothing(
    api: Any, case: str, raw: str, loc: str, form: str
) -> None:
    with pytest.raises(SchemaViolation) as info:
        await api.bus.publish(raw.encode() if form == "bytes" else raw)
    assert_refused(info.value.to_wire()["error"], loc)
    assert await api.bus.history("agent:bob") == []
    assert await api.bus.history("sos:channel:tasks") == []


# -- SOS-dialect fields, policy files, CLI arguments ------------------------------------------------------------


def test_an_sos_field_repeating_a_key_is_refused() -> None:
    fields = {"type": "send", "source": "agent:alice", "target": "agent:bob", "payload": '{"text":"a","text":"b"}'}
    with pytest.raises(SchemaViolation) as info:
        from_sos_fields(fields)
    assert_refused(info.value.to_wire()["error"], "text")


POLICIES = [
    ("json", '{"name":"p","rules":[{"id":"r","effect":"allow","actions":["*"],"actions":["ledger.*"]}]}'),
    ("yaml", 'name: p\nrules:\n  - id: r\n    effect: allow\n    actions: ["*"]\n    actions: ["ledger.*"]\n'),
]


@pytest.mark.parametrize(("kind", "text"), POLICIES, ids=[p[0] for p in POLICIES])
def test_a_policy_document_repeating_a_key_is_refused(kind: str, text: str) -> None:
    with pytest.raises(SchemaViolation) as info:
        load_policy(text, format=kind)
    assert_refused(info.value.to_wire()["error"], "rules.0.actions")


MERGED_YAML = """name: p
limits:
  - &a {id: x1, actions: [ledger.transfer], window_s: 60, spend_micros_max: 1}
  - &c {id: x2, actions: [ledger.hold], window_s: 60, spend_micros_max: 999999999}
  - <<: [*a, *c]
    id: x3
"""
"""A YAML policy merging two limits into a third: refused as not plain data, like a repeated key."""


def _merged_refusal() -> dict[str, Any]:
    """The refusal ``load_policy`` gives ``MERGED_YAML``: what every other entry point must answer."""
    with pytest.raises(SchemaViolation) as info:
        load_policy(MERGED_YAML, format="yaml")
    error = dict(info.value.to_wire()["error"])
    assert error["code"] == "SOS-4001"
    assert error["details"] == {
        "errors": [{"loc": "limits.0", "msg": "an anchor (&a) is not plain data", "type": "yaml_anchor"}]
    }
    return error


async def test_a_yaml_policy_that_is_not_plain_data_is_refused_alike_in_process_and_over_http(
    remote: Remote,
) -> None:
    found = []
    with pytest.raises(SchemaViolation) as info:
        await remote.kernel.tenant(TENANT).governance.set_policy(TENANT, MERGED_YAML)
    found.append(info.value.to_wire()["error"])
    with pytest.raises(SchemaViolation) as info:
        await remote.client(remote.admin).governance.set_policy(TENANT, MERGED_YAML)
    found.append(info.value.to_wire()["error"])
    response = await remote.http.post(
        "/v1/governance/set_policy",
        json={"tenant": TENANT, "policy": MERGED_YAML},
        headers=remote.auth(remote.admin),
    )
    assert response.status_code == 422, response.text
    found.append(response.json()["error"])
    assert found == [_merged_refusal()] * 3, found
    assert await _policy(remote) is None


def test_the_cli_refuses_a_yaml_policy_that_is_not_plain_data_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(MERGED_YAML)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert _cli(capsys, "--url", url, "policy", "set", str(tmp_path / "p.yaml")) == _merged_refusal()
    assert anyio.run(_cli_wrote, url) == (None, False)


CLI = [
    ("policy set", ["policy", "set", "{file}"], '{"name":"p","name":"q"}', "name"),
    ("parse", ["parse", "{file}"], REPEATED_TEXT, "payload.text"),
    (
        "memory metadata",
        ["memory", "remember", "agent:alice/notes", "hi", "--metadata", "{text}"],
        '{"kind":"bill","kind":"note"}',
        "kind",
    ),
    ("memory where", ["memory", "recall", "agent:alice/notes", "hi", "--where", "{text}"], '{"k":1,"k":2}', "k"),
    (
        "task result",
        ["task", "submit", "t-1", "--claim-token", "x", "--result", "{text}"],
        '{"pages":4,"pages":40}',
        "pages",
    ),
    (
        "task evidence",
        ["task", "submit", "t-1", "--claim-token", "x", "--evidence", "{text}"],
        '{"kind":"url","url":"https://a","url":"https://b"}',
        "url",
    ),
]


async def _cli_wrote(url: str) -> tuple[Any, bool]:
    async with sos_kernel.open(url) as kernel:
        policy = await kernel.governance.get_policy("default")
        memories = await kernel.memory.recall("agent:alice/notes", "hi")
        return policy, bool(memories)


@pytest.mark.parametrize(("case", "argv", "text", "loc"), CLI, ids=[c[0] for c in CLI])
def test_the_cli_refuses_json_repeating_a_key_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, argv: list[str], text: str, loc: str
) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    file = tmp_path / "input.json"
    file.write_text(text)
    args = [a.format(file=file, text=text) for a in argv]
    assert anyio.run(_cli_wrote, url) == (None, False)  # the kernel exists: only the input can be refused
    error = _cli(capsys, "--url", url, *args)
    assert_refused(error, loc)
    assert anyio.run(_cli_wrote, url) == (None, False)
