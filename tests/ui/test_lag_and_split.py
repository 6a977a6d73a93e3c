"""Consumer lag and inbox depth as the bus counts them, and each skill's per-call split in exact micros."""

from __future__ import annotations

import html
import re
import time

import pytest

from sos_kernel.bus import DEFAULT_INBOX_GROUP
from sos_kernel.contracts import SkillCard, SkillVerification
from sos_kernel.server.ui import parse_micros
from sos_kernel.server.ui._data import CHANNELS
from sos_kernel.skills import SkillRecord, SkillStats, split_price

from .conftest import World, sign_in
from .seed import skill

pytestmark = pytest.mark.anyio

CHANNEL = "sos:channel:global"


def _cells(page: str, attribute: str) -> dict[str, str]:
    """``attribute`` value → the cell's text, for every cell of ``page`` carrying that data attribute."""
    found = re.findall(rf'<td[^>]*{attribute}="([^"]+)"[^>]*>(.*?)</td>', page, re.S)
    return {html.unescape(key): re.sub(r"<[^>]+>", "", text).strip() for key, text in found}


async def test_overview_and_agents_show_pending_as_the_bus_counts_it(world: World) -> None:
    bus = world.kernel.tenant("acme").bus
    for i in range(2):
        await bus.send("agent:boss", "agent:bob", f"unacked {i}")
    await bus.send("agent:boss", CHANNEL, "on the channel")
    session = await world.kernel.session(world.acme.admin_token)
    inbox = bus.subscribe("agent:bob", visibility_timeout_s=300, prefetch=1)
    # a named group on a channel: the overview reads the same group name on channels
    channel = bus.subscribe(CHANNEL, group=DEFAULT_INBOX_GROUP, start="earliest", visibility_timeout_s=300, prefetch=1)
    async with inbox, channel, world.client() as client:
        for _ in range(3):  # the seed's "hello bob" and two more, none acked
            assert await inbox.receive(timeout_s=5) is not None
        assert await channel.receive(timeout_s=5) is not None
        expected = {
            a: await session.bus.pending(a, group=DEFAULT_INBOX_GROUP) for a in ("agent:alice", "agent:bob", *CHANNELS)
        }
        assert expected["agent:bob"] == 3
        assert expected["agent:alice"] == 0
        assert expected[CHANNEL] == 1
        await sign_in(client, world.acme.admin_token)

        overview = (await client.get("/ui/")).text
        shown = {a: int(n) for a, n in _cells(overview, "data-address").items()}
        assert shown == expected
        assert f'<dd id="pending-total">{sum(expected.values())}</dd>' in overview
        assert 'data-group="inbox"' in overview

        agents = (await client.get("/ui/agents")).text
        depth = {a: int(n) for a, n in _cells(agents, "data-depth").items()}
        assert depth == {a: expected[a] for a in ("agent:alice", "agent:bob")}
        bob = (await client.get("/ui/agents/bob")).text
        assert '<dd id="inbox-depth">3</dd>' in bob


async def test_another_tenants_lag_is_not_shown(world: World) -> None:
    await world.kernel.tenant("rival").bus.send("agent:boss", "agent:zed", "rival's")
    async with world.kernel.tenant("rival").bus.subscribe("agent:zed", visibility_timeout_s=300) as sub:
        assert await sub.receive(timeout_s=5) is not None
        async with world.client() as client:
            await sign_in(client, world.acme.admin_token)
            overview = (await client.get("/ui/")).text
            assert "agent:zed" not in _cells(overview, "data-address")
            assert '<dd id="pending-total">0</dd>' in overview


@pytest.mark.parametrize(
    ("price", "split"),
    [
        (1_000_001, {"author": 0.85, "operator": 0.1, "network": 0.05}),
        (333_333, {"author": 0.34, "operator": 0.33, "network": 0.33}),
        (7, {"author": 0.5, "operator": 0.25, "network": 0.25}),
        (250_000, None),
    ],
)
async def test_skills_page_shows_the_payout_split_in_micros_summing_to_the_price(
    world: World, price: int, split: dict[str, float] | None
) -> None:
    view = world.kernel.tenant("acme")
    card = skill("split-skill", "Split", listed=False, author="agent:alice", price=price)
    if split is not None:
        card["commerce"]["revenue_split"] = split
    published = await view.skills.publish(card)
    commerce = published.commerce
    assert commerce is not None
    payouts = split_price(price, commerce.revenue_split)
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        page = (await client.get("/ui/skills")).text
    cell = re.search(r'<td class="num split" data-skill="split-skill">(.*?)</td>', page, re.S)
    assert cell is not None
    parts = dict(re.findall(r'<span class="part-(\w+)">([^<]+)</span>', cell.group(1)))
    shown = {name: parse_micros(text.replace(",", "")) for name, text in parts.items()}
    assert shown == payouts
    assert sum(shown.values()) == price
    shown_price = re.search(r'<td class="num price" data-skill="split-skill">([^<]+) USD</td>', page)
    assert shown_price is not None
    assert parse_micros(shown_price.group(1).replace(",", "")) == price


async def test_a_version_stored_with_a_split_over_the_price_shows_as_refused(world: World) -> None:
    """A card written before publish refused such splits shows no (negative) part: its invocations are refused."""
    wire = skill("old-split", "Old split", listed=False, author="agent:alice", price=1_000_000)
    wire["commerce"]["revenue_split"] = {"operator": 0.5005, "network": 0.5005}
    card = SkillCard.model_validate(wire)
    verification = SkillVerification().to_json()
    record = SkillRecord(card.id, card.version, card.to_json(), "digest", verification, SkillStats(), time.time())
    await world.kernel.backend.skills.put_version("acme", record, card.author_agent)
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        page = await client.get("/ui/skills")
    assert page.status_code == 200
    cell = re.search(r'<td class="num split" data-skill="old-split">(.*?)</td>', page.text, re.S)
    assert cell is not None
    assert cell.group(1) == "split refused: not invocable"
