"""Operations are declared once: the Protocols, the session guard, the routes and the client all follow them."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import sos_kernel
from mumega_sdk.client import RemoteBus, RemoteEngine, RemoteLedger, RemoteProviders, RemoteRegistry, RemoteSkills
from sos_kernel import api
from sos_kernel.bus import Bus
from sos_kernel.guard import Caller, guard
from sos_kernel.identity.models import Principal
from sos_kernel.ledger import Ledger
from sos_kernel.operations import Operation, declared, scoped_id
from sos_kernel.providers import Engine, Providers
from sos_kernel.registry import Registry
from sos_kernel.server import create_app
from sos_kernel.skills import Skills

SERVICES: list[tuple[type, type, type]] = [
    (Bus, api.BusAPI, RemoteBus),
    (Registry, api.RegistryAPI, RemoteRegistry),
    (Ledger, api.LedgerAPI, RemoteLedger),
    (Skills, api.SkillsAPI, RemoteSkills),
    (Providers, api.ProvidersAPI, RemoteProviders),
    (Engine, api.EngineAPI, RemoteEngine),
]
TRUSTED_ONLY = {"store", "catalogue", "limits", "tenant", "ttl_s", "agent_status", "demand"}
TRUSTED_ONLY |= {"retention", "count_appended", "check_batch", "settle"}  # the seams of a service's own step
"""Members of the trusted services that are not operations (a session never has them)."""


def _protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn) for name, fn in vars(protocol).items() if callable(fn) and not name.startswith("_")
    }


def _shape(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    params = [p for p in signature.parameters.values() if p.name != "self"]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize(("service", "protocol", "remote"), SERVICES)
def test_every_operation_has_its_protocols_signature(service: type, protocol: type, remote: type) -> None:
    ops = declared(service)
    methods = _protocol_methods(protocol)
    assert sorted(ops) == sorted(methods)
    for name, op in ops.items():
        assert _shape(op.signature) == _shape(methods[name]), name


@pytest.mark.parametrize(("service", "protocol", "remote"), SERVICES)
def test_every_public_member_of_a_service_is_declared_or_trusted_only(
    service: type, protocol: type, remote: type
) -> None:
    public = {n for n in dir(service) if not n.startswith("_")}
    assert sorted(public - set(declared(service)) - TRUSTED_ONLY) == []


def _caller() -> Caller:
    principal = Principal("acme", "agent:alice", frozenset({"bus:read"}), "t1")

    async def refresh() -> Principal:
        return principal

    return Caller(principal, refresh, lambda p, r: None)


@pytest.mark.parametrize(("service", "protocol", "remote"), SERVICES)
def test_a_guarded_service_has_exactly_its_operations(service: type, protocol: type, remote: type) -> None:
    target = object.__new__(service)  # never called: only the guard's surface is looked at
    guarded = guard(target, _caller())
    public = {n for n in dir(guarded) if not n.startswith("_")}
    assert public == set(declared(service))
    for name, op in declared(service).items():
        assert _shape(inspect.signature(getattr(guarded, name))) == _shape(op.signature), name
    for member in TRUSTED_ONLY:
        assert not hasattr(guarded, member)


@pytest.mark.parametrize(("service", "protocol", "remote"), SERVICES)
def test_the_client_has_every_operation_with_its_signature(service: type, protocol: type, remote: type) -> None:
    for name, op in declared(service).items():
        method = getattr(remote, name)
        assert _shape(inspect.signature(method)) == _shape(op.signature), name


def test_every_routed_operation_is_in_the_openapi_document_with_its_errors() -> None:
    routed: list[Operation] = [op for s, _, _ in SERVICES for op in declared(s).values() if op.wire is not None]
    assert routed
    kernel = sos_kernel.Kernel("memory://")
    app = create_app(kernel)
    paths = app.openapi()["paths"]
    for op in routed:
        assert op.wire is not None
        entry = paths[op.path][op.wire.method.lower()]
        assert entry["x-sos-errors"] == sorted({cls.code for cls in op.wire.errors}), op.path
        assert "200" in entry["responses"]


def test_scoped_ids_stay_in_their_agents_namespace() -> None:
    assert scoped_id("agent:alice", "t-1") == "alice/t-1"
    assert scoped_id("agent:alice", "alice/t-1") == "alice/t-1"
    assert scoped_id("agent:alice", "bob/t-1") == "alice/bob/t-1"
    assert scoped_id(None, "t-1") == "t-1"
    assert scoped_id("agent:alice", 5) == 5
