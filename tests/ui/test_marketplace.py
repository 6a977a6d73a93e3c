"""The public marketplace: listed cards of active tenants only, however the URL is guessed; bounded queries."""

from __future__ import annotations

import pytest

from sos_kernel.server.ui import _market
from sos_kernel.skills import SkillDemand

from .conftest import World
from .seed import skill

pytestmark = pytest.mark.anyio


async def test_marketplace_answers_without_a_token_and_lists_listed_titles_only(world: World) -> None:
    async with world.client() as client:
        page = await client.get("/marketplace")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "a-Listed" in page.text
        assert "r-Listed" in page.text
        assert "Private skill" not in page.text
        twin = (await client.get("/marketplace.json")).json()
        by_accept = (await client.get("/marketplace", headers={"Accept": "application/json"})).json()
    assert twin == by_accept
    assert sorted((c["tenant"], c["id"]) for c in twin["cards"]) == [
        ("acme", "a-listed-skill"),
        ("rival", "r-listed-skill"),
    ]
    assert twin["cards"][0]["price_per_call_micros"] == 250_000


async def test_nothing_unlisted_private_or_suspended_is_reachable(world: World) -> None:
    acme = world.kernel.tenant("acme")
    await acme.skills.verify("a-listed-skill", "1.0.0", verifier="agent:alice", status="auto_verified")
    await acme.skills.publish(skill("a-disputed", "Disputed one", listed=True, author="agent:alice"))
    await acme.skills.verify("a-disputed", "1.0.0", verifier="agent:alice", status="disputed", reason="bad")
    async with world.client() as client:
        assert (await client.get("/marketplace/acme/a-listed-skill")).status_code == 200
        guesses = [
            "/marketplace/acme/a-private-skill",  # unlisted
            "/marketplace/acme/a-disputed",  # listed but disputed
            "/marketplace/rival/a-listed-skill",  # another tenant's id under this tenant
            "/marketplace/acme/r-listed-skill",
            "/marketplace/nosuch/a-listed-skill",
            "/marketplace/acme/..%2Fa-private-skill",
        ]
        for url in guesses:
            html = await client.get(url)
            assert html.status_code == 404, url
            assert "Private skill" not in html.text
            json = await client.get(url, headers={"Accept": "application/json"})
            assert json.status_code == 404
            assert json.json()["error"]["code"] == "SOS-4040"
        assert "Disputed one" not in (await client.get("/marketplace")).text
        await world.kernel.tenants.suspend("rival")
        assert "r-Listed" not in (await client.get("/marketplace")).text
        assert (await client.get("/marketplace/rival/r-listed-skill")).status_code == 404
        assert [c["tenant"] for c in (await client.get("/marketplace.json")).json()["cards"]] == ["acme"]


async def test_search_and_filters(world: World) -> None:
    acme = world.kernel.tenant("acme")
    await acme.skills.publish(skill("a-cheap", "Cheap summariser", listed=True, author="agent:alice", price=1))
    await acme.skills.verify("a-cheap", "1.0.0", verifier="agent:alice", status="human_verified")

    async def ids(**params: str) -> list[str]:
        async with world.client() as client:
            response = await client.get("/marketplace.json", params=params)
            assert response.status_code == 200, response.text
            return sorted(c["id"] for c in response.json()["cards"])

    assert await ids(q="summariser") == ["a-cheap"]
    assert await ids(q="SUMMARISER") == ["a-cheap"]
    assert await ids(tag="text") == ["a-listed-skill", "r-listed-skill"]
    assert await ids(price_max="0.000001") == ["a-cheap"]
    assert await ids(price_max="0.25") == ["a-cheap", "a-listed-skill", "r-listed-skill"]
    assert await ids(verification="human_verified") == ["a-cheap"]
    assert await ids(verification="unverified", tag="text") == ["a-listed-skill", "r-listed-skill"]


async def test_queries_and_results_are_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world.client() as client:
        for params in (
            {"q": "x" * (_market.MARKETPLACE_QUERY_CHARS_MAX + 1)},
            {"price_max": "1e9"},
            {"price_max": "0.0000001"},
            {"verification": "disputed"},
        ):
            json = await client.get("/marketplace.json", params=params)
            assert json.status_code == 400, params
            assert json.json()["error"]["code"] == "SOS-4005"
            html = await client.get("/marketplace", params=params)
            assert html.status_code == 400
        assert (await client.get("/marketplace", params={"q": "y" * 2000})).status_code == 400
        monkeypatch.setattr(_market, "MARKETPLACE_RESULTS_MAX", 1)
        assert len((await client.get("/marketplace.json")).json()["cards"]) == 1


async def test_ranking_counts_distinct_callers_other_than_the_author_and_paying_ones_more(world: World) -> None:
    """An author calling its own free skill in a loop, or one caller calling again and again, moves nothing: the
    marketplace ranks by distinct callers other than the author, a paying one weighing more, across tenants."""
    kernel = world.kernel
    acme, rival = kernel.tenant("acme"), kernel.tenant("rival")
    await acme.skills.publish(skill("a-free", "a-Free", listed=True, author="agent:alice", price=0))
    await rival.skills.publish(skill("r-free", "r-Free", listed=True, author="agent:zed", price=0))
    tokens = {f"agent:{name}": token for name, token in world.acme.tokens.items()}
    for name in ("yan", "xu"):
        tokens[f"agent:{name}"] = (await rival.tokens.issue(agent=f"agent:{name}")).secret
    calls = [("a-free", "agent:alice", "acme")] * 50  # the author pumping its own free skill
    calls += [("a-free", "agent:bob", "acme")] * 3  # one other caller, three times
    calls += [("r-free", "agent:yan", "rival"), ("r-free", "agent:xu", "rival")]
    calls += [("a-listed-skill", "agent:bob", "acme")]  # one paying caller
    for n, (skill_id, caller, tenant) in enumerate(calls):
        session = await kernel.session(tokens[caller])  # a caller is demand only when it calls for itself
        await session.skills.record_invocation(skill_id, caller=caller, tenant=tenant, invocation_id=f"call-{n}")
    async with world.client() as client:
        cards = (await client.get("/marketplace.json")).json()["cards"]
    ranked = [(c["id"], c["callers"], c["paying_callers"]) for c in cards]
    assert ranked == [("a-listed-skill", 1, 1), ("r-free", 2, 0), ("a-free", 1, 0), ("r-listed-skill", 0, 0)]
    assert [c["invocations"] for c in cards] == [1, 2, 53, 0]  # every call is still counted, just not ranked
    assert [c.id for c in await acme.skills.marketplace()] == ["a-listed-skill", "a-free"]


async def test_callers_named_by_an_admin_or_the_trusted_handle_are_not_demand(world: World) -> None:
    """The sybil pattern: a tenant admin opens accounts for made-up agents (no tokens), funds them from an account it
    mints from, and invokes its skill as each. Those calls are charged and counted, but no caller is demand: only
    an agent invoking for itself is, so the pumped skill stays below one with two real paying callers."""
    kernel = world.kernel
    acme, rival = kernel.tenant("acme"), kernel.tenant("rival")
    carol = (await acme.tokens.issue(agent="agent:carol")).secret
    await acme.ledger.open_account("agent:carol", "USD")
    await acme.ledger.transfer(id="c", debit="system:treasury", credit="agent:carol", amount=250_000, currency="USD")
    for name, token in (("bob", world.acme.tokens["bob"]), ("carol", carol)):  # two real paying callers
        own = await kernel.session(token)
        await own.skills.record_invocation("a-listed-skill", caller=f"agent:{name}", tenant="acme", invocation_id="x")
    admin = await kernel.session(world.rival.admin_token)
    await admin.ledger.open_account("system:mint2", "USD", allow_negative=True)
    for i in range(10):
        sybil = f"agent:sybil{i}"
        await admin.ledger.open_account(sybil, "USD")
        await admin.ledger.transfer(id=f"m{i}", debit="system:mint2", credit=sybil, amount=500_000, currency="USD")
        await admin.skills.record_invocation("r-listed-skill", caller=sybil, tenant="rival", invocation_id=f"s{i}")
        # the trusted handle names callers too (an embedding program): not demand either
        await rival.skills.record_invocation("r-listed-skill", caller=sybil, tenant="rival", invocation_id=f"t{i}")
    assert (await rival.ledger.balance("agent:sybil0", "USD")).posted == 0  # charged all the same
    assert (await rival.skills.demand()).get("r-listed-skill", SkillDemand()) == SkillDemand()
    assert (await acme.skills.demand())["a-listed-skill"] == SkillDemand(callers=2, paying_callers=2)
    async with world.client() as client:
        cards = (await client.get("/marketplace.json")).json()["cards"]
    ranked = [(c["tenant"], c["id"], c["callers"], c["paying_callers"], c["invocations"]) for c in cards]
    assert ranked == [("acme", "a-listed-skill", 2, 2, 2), ("rival", "r-listed-skill", 0, 0, 20)]
