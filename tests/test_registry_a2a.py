"""SOS Agent Cards exported as A2A AgentCards parse with the official a2a-sdk."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from sos_kernel.contracts import AgentCard
from sos_kernel.contracts.a2a import A2A_EXTENSION_URI, A2A_PROTOCOL_VERSION, agent_card_to_a2a
from sos_kernel.errors import InvalidArgument

a2a_types = pytest.importorskip("a2a.types")
json_format = pytest.importorskip("google.protobuf.json_format")
proto_utils = pytest.importorskip("a2a.utils.proto_utils")
card_resolver = pytest.importorskip("a2a.client.card_resolver")

PUBLIC_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
KEY_ID = hashlib.sha256(bytes.fromhex(PUBLIC_KEY)).hexdigest()[:16]


def _plain_card() -> AgentCard:
    return AgentCard(name="bob", tool="sdk", type="remote", role="executor")


def _rich_card() -> AgentCard:
    return AgentCard(
        name="kasra",
        tool="claude-code",
        type="tmux",
        role="specialist",
        model="claude-opus-4",
        skills=["code-review", "specialist", "deploy_prod"],
        squads=["core", "infra"],
        project="mumega",
        summary="Reviews and ships code.",
        host="box-7",
        cwd="/home/kasra",
        pid=4242,
    )


def _parse_both(exported: dict[str, Any]) -> Any:
    """Parse ``exported`` strictly from the dict and from its JSON text; both must agree and be spec-complete."""
    from_dict = json_format.ParseDict(copy.deepcopy(exported), a2a_types.AgentCard())
    from_text = json_format.Parse(json.dumps(exported), a2a_types.AgentCard())
    assert from_dict == from_text
    assert json_format.MessageToDict(from_dict) == exported  # already canonical ProtoJSON
    proto_utils.validate_proto_required_fields(from_dict)  # raises when a REQUIRED field is missing or empty
    # The SDK's own card loader (what A2ACardResolver uses) reads it the same way.
    assert card_resolver.parse_agent_card(copy.deepcopy(exported)) == from_dict
    return from_dict


def _extension_params(parsed: Any) -> dict[str, Any]:
    matches = [ext for ext in parsed.capabilities.extensions if ext.uri == A2A_EXTENSION_URI]
    assert len(matches) == 1
    assert not matches[0].required
    params: dict[str, Any] = json_format.MessageToDict(matches[0].params)
    return params


def test_card_without_skills_with_url() -> None:
    card = _plain_card()
    exported = agent_card_to_a2a(card, url="https://agents.example.com/bob/a2a")
    json.dumps(exported)  # JSON-safe
    parsed = _parse_both(exported)

    assert parsed.name == "bob"
    assert parsed.description == "SOS executor agent 'bob' (sdk, remote)"
    assert parsed.version == "1.0.0"
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in parsed.supported_interfaces] == [
        ("https://agents.example.com/bob/a2a", "JSONRPC", A2A_PROTOCOL_VERSION)
    ]
    assert list(parsed.default_input_modes) == ["text/plain", "application/json"]
    assert list(parsed.default_output_modes) == ["text/plain", "application/json"]
    assert parsed.capabilities.HasField("streaming")
    assert not parsed.capabilities.streaming
    assert not parsed.capabilities.push_notifications
    assert not parsed.HasField("provider")
    # A2A requires a skill: the role stands in, and the extension says none were declared.
    assert [(s.id, list(s.tags)) for s in parsed.skills] == [("executor", ["executor", "sdk"])]
    assert _extension_params(parsed) == {
        "agent_card_version": "1.0.0",
        "name": "bob",
        "tool": "sdk",
        "type": "remote",
        "role": "executor",
        "squads": [],
        "skills": [],
    }


def test_card_with_skills_endpoints_key_and_provider() -> None:
    card = _rich_card()
    endpoints = [
        {"url": "https://kasra.example.com/a2a/v1", "transport": "HTTP+JSON"},
        {"url": "grpc://kasra.example.com:50051", "transport": "grpc", "tenant": "acme"},
        {"url": "https://kasra.example.com/rpc"},
    ]
    exported = agent_card_to_a2a(
        card,
        endpoints=endpoints,
        public_key=PUBLIC_KEY.upper(),
        version="2.3.4",
        organization="Mumega",
    )
    parsed = _parse_both(exported)

    assert parsed.name == "kasra"
    assert parsed.description == "Reviews and ships code."
    assert parsed.version == "2.3.4"
    assert [(i.url, i.protocol_binding, i.tenant) for i in parsed.supported_interfaces] == [
        ("https://kasra.example.com/a2a/v1", "HTTP+JSON", ""),
        ("grpc://kasra.example.com:50051", "GRPC", "acme"),
        ("https://kasra.example.com/rpc", "JSONRPC", ""),
    ]
    assert [s.id for s in parsed.skills] == ["code-review", "specialist", "deploy_prod"]
    assert [s.name for s in parsed.skills] == ["code-review", "specialist", "deploy_prod"]
    assert [list(s.tags) for s in parsed.skills] == [
        ["code-review", "specialist"],
        ["specialist"],
        ["deploy_prod", "specialist"],
    ]
    assert all(s.description for s in parsed.skills)
    assert parsed.provider.organization == "Mumega"
    assert parsed.provider.url == "https://kasra.example.com"

    params = _extension_params(parsed)
    assert params == {
        "agent_card_version": "1.0.0",
        "name": "kasra",
        "tool": "claude-code",
        "type": "tmux",
        "role": "specialist",
        "model": "claude-opus-4",
        "project": "mumega",
        "squads": ["core", "infra"],
        "skills": ["code-review", "specialist", "deploy_prod"],
        "key_id": KEY_ID,
        "public_key": PUBLIC_KEY,
        "public_key_alg": "Ed25519",
    }
    # Local details stay local.
    text = json.dumps(exported)
    assert "box-7" not in text
    assert "/home/kasra" not in text
    assert "4242" not in text


def test_url_and_endpoints_url_first_duplicates_dropped() -> None:
    exported = agent_card_to_a2a(
        _plain_card(),
        url="http://localhost:8080/",
        endpoints=[
            {"url": "http://localhost:8080/", "transport": "JSONRPC"},
            {"url": "http://localhost:8080/v1", "transport": "http+json", "protocol_version": "0.3"},
        ],
        key_id="abc123",
        organization="Acme",
        organization_url="https://acme.example",
    )
    parsed = _parse_both(exported)
    assert [(i.url, i.protocol_binding, i.protocol_version) for i in parsed.supported_interfaces] == [
        ("http://localhost:8080/", "JSONRPC", "1.0"),
        ("http://localhost:8080/v1", "HTTP+JSON", "0.3"),
    ]
    assert (parsed.provider.organization, parsed.provider.url) == ("Acme", "https://acme.example")
    params = _extension_params(parsed)
    assert params["key_id"] == "abc123"
    assert "public_key" not in params


def test_matching_key_id_accepted_and_blank_summary_uses_default() -> None:
    card = AgentCard(name="ops-bot", tool="service", type="service", role="service", summary="  ")
    exported = agent_card_to_a2a(card, url="https://ops.example.com", public_key=PUBLIC_KEY, key_id=KEY_ID)
    parsed = _parse_both(exported)
    assert parsed.description == "SOS service agent 'ops-bot' (service, service)"
    assert _extension_params(parsed)["key_id"] == KEY_ID


def test_export_is_fresh_each_call() -> None:
    card = _rich_card()
    first = agent_card_to_a2a(card, url="https://a.example.com")
    first["capabilities"]["extensions"][0]["params"]["squads"].append("mutated")
    second = agent_card_to_a2a(card, url="https://a.example.com")
    assert second["capabilities"]["extensions"][0]["params"]["squads"] == ["core", "infra"]
    assert card.squads == ["core", "infra"]


def test_no_url_and_no_endpoints_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as info:
        agent_card_to_a2a(_plain_card())
    assert info.value.code == "SOS-4005"
    assert info.value.details == {"field": "url"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": ""}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "/relative/path"}, "url"),
        ({"endpoints": [{"transport": "JSONRPC"}]}, "endpoints[0].url"),
        ({"endpoints": [{"url": "https://x.example", "transport": "SOAP"}]}, "endpoints[0].transport"),
        ({"endpoints": [{"url": "https://x.example", "protocol": "JSONRPC"}]}, "endpoints[0]"),
        ({"endpoints": [{"url": "https://x.example", "protocol_version": "v1"}]}, "endpoints[0].protocol_version"),
        ({"endpoints": [{"url": "x.example:50051", "transport": "HTTP+JSON"}]}, "endpoints[0].url"),
        ({"url": "https://x.example", "version": ""}, "version"),
        ({"url": "https://x.example", "public_key": "abcd"}, "public_key"),
        ({"url": "https://x.example", "public_key": PUBLIC_KEY, "key_id": "0000000000000000"}, "key_id"),
        ({"url": "https://x.example", "organization": " "}, "organization"),
        ({"endpoints": [{"url": "grpc://x.example:1", "transport": "GRPC"}], "organization": "Acme"}, None),
    ],
)
def test_malformed_arguments_are_invalid(kwargs: dict[str, Any], field: str | None) -> None:
    if field is None:
        # A gRPC-only card has an origin too (grpc://host), but not an http(s) one to use as the provider url.
        with pytest.raises(InvalidArgument, match="organization_url"):
            agent_card_to_a2a(_plain_card(), **kwargs)
        return
    with pytest.raises(InvalidArgument) as info:
        agent_card_to_a2a(_plain_card(), **kwargs)
    assert info.value.details == {"field": field}
