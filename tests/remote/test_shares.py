"""What one tenant, and one agent within it, can take of a server's subscriptions."""

from __future__ import annotations

import anyio
import httpx
import pytest

from .conftest import Remote

pytestmark = pytest.mark.anyio


async def _subscribe(http: httpx.AsyncClient, token: str, address: str) -> httpx.Response:
    params = {"address": address, "poll_s": 0, "max_events": 1}
    return await http.get("/v1/bus/subscribe", params=params, headers={"authorization": f"Bearer {token}"})


async def test_subscriptions_are_bounded_per_agent_and_per_tenant(remote: Remote) -> None:
    leases = remote.app.state.sos.leases
    leases.per_principal_max, leases.per_tenant_max = 2, 3
    globex = await remote.kernel.tenants.create("globex", "scale")
    carol = (await remote.kernel.tenant("globex").tokens.issue(agent="agent:carol")).secret
    for _ in range(2):
        assert (await _subscribe(remote.http, remote.alice, "agent:alice")).status_code == 200
    refused = await _subscribe(remote.http, remote.alice, "agent:alice")
    assert refused.status_code == 413
    assert refused.json()["error"]["details"]["limit"] == "subscriptions_per_principal_max"
    assert (await _subscribe(remote.http, remote.bob, "agent:bob")).status_code == 200
    refused = await _subscribe(remote.http, remote.bob, "agent:bob")
    assert refused.json()["error"]["details"]["limit"] == "subscriptions_per_tenant_max"
    # the tenant's share is used up; another tenant's agent still subscribes
    assert (await _subscribe(remote.http, carol, "agent:carol")).status_code == 200
    assert globex[0].slug == "globex"


async def test_a_lingering_subscription_is_closed_by_the_timer_with_no_other_request(remote: Remote) -> None:
    leases = remote.app.state.sos.leases
    leases.linger_s = 0.05
    assert (await _subscribe(remote.http, remote.alice, "agent:alice")).status_code == 200
    (lease,) = list(leases._leases.values())  # the stream ended: the lease lingers, detached
    assert lease.detached_at is not None
    await anyio.sleep(0.5)  # no request in between: only the server's own timer can close it
    assert len(leases) == 0
    assert lease.closed
    # the share it held is given back
    leases.per_principal_max = 1
    assert (await _subscribe(remote.http, remote.alice, "agent:alice")).status_code == 200


async def test_closing_the_server_state_stops_its_reaper(remote: Remote) -> None:
    state = remote.app.state.sos
    assert (await _subscribe(remote.http, remote.alice, "agent:alice")).status_code == 200
    await state.aclose()
    assert len(state.leases) == 0
    await state.aclose()  # idempotent
