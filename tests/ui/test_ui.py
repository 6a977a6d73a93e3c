"""The dashboard over HTTP: sign-in and its cookie, CSRF, tenant isolation, escaping, headers, no token leaks."""

from __future__ import annotations

import re

import httpx
import pytest

from mumega_sdk import MumegaClient
from sos_kernel.server.ui import COOKIE, UISessions

from .conftest import BASE_URL, World, csrf_of, sign_in

pytestmark = pytest.mark.anyio

PAGES = ("/ui/", "/ui/agents", "/ui/agents/alice", "/ui/money", "/ui/skills", "/ui/tasks", "/ui/dead-letters")


async def test_ui_without_a_session_redirects_to_sign_in(world: World) -> None:
    async with world.client() as client:
        for page in (*PAGES, "/ui/dead-letters/view?address=agent:alice&id=x"):
            response = await client.get(page)
            assert response.status_code == 303, page
            assert response.headers["location"] == "/ui/signin"
        replay = await client.post("/ui/dead-letters/replay", data={"address": "agent:alice", "id": world.acme.dead_id})
        assert replay.status_code == 303
        form = await client.get("/ui/signin")
        assert form.status_code == 200
        assert 'type="password"' in form.text
    assert len(await world.kernel.tenant("acme").bus.dead_letters("agent:alice")) == 1


async def test_sign_in_sets_a_strict_http_only_cookie_and_shows_the_tenants_agents(world: World) -> None:
    async with world.client() as client:
        response = await sign_in(client, world.acme.admin_token)
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/"
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/ui" in cookie
        assert "Secure" not in cookie  # plain http here: a Secure cookie would never come back
        overview = await client.get("/ui/")
        assert overview.status_code == 200
        for name in ("alice", "bob"):
            assert f">{name}</a>" in overview.text
    async with world.client("https://sos.test") as secure:
        response = await sign_in(secure, world.acme.admin_token)
        cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
        assert "Secure" in cookie


async def test_sign_in_needs_a_valid_tenant_admin_token(world: World) -> None:
    async with world.client() as client:
        agent = await sign_in(client, world.acme.tokens["alice"])
        assert agent.status_code == 403
        assert "admin token" in agent.text
        bad = await sign_in(client, "sk-not-a-token")
        assert bad.status_code == 401
        assert "sk-not-a-token" not in bad.text
        for response in (agent, bad):
            assert not any(c.startswith(f"{COOKIE}=") for c in response.headers.get_list("set-cookie"))
        assert (await client.get("/ui/")).status_code == 303


async def test_every_post_needs_its_csrf_token(world: World) -> None:
    async with world.client() as client:
        form = await client.get("/ui/signin")
        forged = await client.post("/ui/signin", data={"csrf": "forged", "token": world.acme.admin_token})
        assert forged.status_code == 403
        client.cookies.clear()  # a cross-site form carries no CSRF cookie
        cookieless = await client.post("/ui/signin", data={"csrf": csrf_of(form.text), "token": world.acme.admin_token})
        assert cookieless.status_code == 403
        assert (await sign_in(client, world.acme.admin_token)).status_code == 303
        address, dead_id = "agent:alice", world.acme.dead_id
        for csrf in ("", "wrong"):
            refused = await client.post(
                "/ui/dead-letters/replay", data={"csrf": csrf, "address": address, "id": dead_id}
            )
            assert refused.status_code == 403
            assert "SOS-5004" in refused.text
        assert len(await world.kernel.tenant("acme").bus.dead_letters(address)) == 1
        logout = await client.post("/ui/logout", data={"csrf": "wrong"})
        assert logout.status_code == 403
        assert (await client.get("/ui/")).status_code == 200  # still signed in


async def test_a_form_with_too_many_fields_is_a_clear_refusal(world: World) -> None:
    from sos_kernel.server.ui import FORM_FIELDS_MAX

    crowded = "&".join(f"f{i}=x" for i in range(FORM_FIELDS_MAX + 5))
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with world.client() as client:
        refused = await client.post("/ui/signin", content=crowded, headers=headers)
        assert refused.status_code == 400
        assert "SOS-4005" in refused.text
        await sign_in(client, world.acme.admin_token)
        for path in ("/ui/logout", "/ui/dead-letters/replay"):
            assert (await client.post(path, content=crowded, headers=headers)).status_code == 400
        assert len(await world.kernel.tenant("acme").bus.dead_letters("agent:alice")) == 1
        assert (await client.get("/ui/")).status_code == 200  # the refused logout ended nothing


async def test_replaying_a_dead_letter_goes_through_the_audited_operation(world: World) -> None:
    acme = world.kernel.tenant("acme")
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        page = await client.get("/ui/dead-letters")
        assert world.acme.dead_id in page.text
        view = await client.get("/ui/dead-letters/view", params={"address": "agent:alice", "id": world.acme.dead_id})
        assert view.status_code == 200
        assert "dead &lt;script&gt;" in view.text
        data = {"csrf": csrf_of(page.text), "address": "agent:alice", "id": world.acme.dead_id}
        replayed = await client.post("/ui/dead-letters/replay", data=data)
        assert replayed.status_code == 303
        assert (await client.get(replayed.headers["location"])).text.count("Replayed dead letter") == 1
        assert await acme.bus.dead_letters("agent:alice") == []
        again = await client.post("/ui/dead-letters/replay", data=data)
        assert again.status_code == 404
    (record,) = await acme.audit.events("acme", action="bus.replay")
    assert record.outcome == "ok"


async def test_another_tenants_admin_sees_none_of_this_tenants_data(world: World) -> None:
    acme_names = ("alice", "bob", "a-listed-skill", "a-private-skill", "a-task-1", "seed-alice", "a-prov", "a-model")
    async with world.client() as client:
        await sign_in(client, world.rival.admin_token)
        for page in (p for p in PAGES if p != "/ui/agents/alice"):
            response = await client.get(page)
            for name in acme_names:
                assert name not in response.text, (page, name)
        assert (await client.get("/ui/agents/alice")).status_code == 404
        assert "zed" in (await client.get("/ui/agents")).text
        view = await client.get("/ui/dead-letters/view", params={"address": "agent:alice", "id": world.acme.dead_id})
        assert view.status_code == 404
        page = await client.get("/ui/dead-letters")
        data = {"csrf": csrf_of(page.text), "address": "agent:alice", "id": world.acme.dead_id}
        assert (await client.post("/ui/dead-letters/replay", data=data)).status_code == 404
    assert len(await world.kernel.tenant("acme").bus.dead_letters("agent:alice")) == 1


async def test_no_token_in_any_page_url_or_header(world: World) -> None:
    async with world.client() as client:
        seen: list[httpx.Response] = [await sign_in(client, world.acme.admin_token)]
        for page in (*PAGES, "/ui/dead-letters/view?address=agent:alice&id=" + world.acme.dead_id, "/marketplace"):
            seen.append(await client.get(page))
        form = await client.get("/ui/")
        seen.append(await client.post("/ui/logout", data={"csrf": csrf_of(form.text)}))
        for response in seen:
            blob = "\n".join([str(response.url), response.text, *(f"{k}: {v}" for k, v in response.headers.items())])
            for secret in world.secrets:
                assert secret not in blob, str(response.url)


async def test_attacker_text_is_escaped_on_every_page(world: World) -> None:
    escaped = "&lt;script&gt;alert("
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        shown = {
            "/ui/agents/alice": 2,  # the card's summary and a message's text
            "/ui/money": 1,  # a transfer's reason
            "/ui/skills": 1,  # a skill's title
            "/ui/tasks": 1,  # a task's title
            "/marketplace": 1,  # a listed card's title
            "/marketplace/acme/a-listed-skill": 1,
        }
        for page, at_least in shown.items():
            text = (await client.get(page)).text
            assert "<script>alert" not in text
            assert "onerror=alert" not in text.replace("onerror=alert(1)&gt;", "")
            assert text.count(escaped) >= at_least, page
        crafted = (await client.get("/ui/dead-letters", params={"replayed": "wire 500 USD to x <b>now"})).text
        assert "Replayed" not in crafted  # a crafted link cannot put words on the page
        assert "wire 500" not in crafted
        twin = (await client.get("/marketplace.json")).text
        assert "<" not in twin


async def test_pages_carry_the_security_headers(world: World) -> None:
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        for page in (*PAGES, "/ui/signin", "/marketplace"):
            headers = (await client.get(page, follow_redirects=True)).headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            if page.startswith("/ui"):
                assert headers["cache-control"] == "no-store"
        assert (await client.get("/ui/static/ui.css")).status_code == 200
        assert (await client.get("/ui/static/../_routes.py")).status_code == 404


async def test_logout_ends_the_session_and_revocation_ends_it_too(world: World) -> None:
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        old = client.cookies.get(COOKIE)
        page = await client.get("/ui/")
        out = await client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
        assert out.headers["location"] == "/ui/signin"
        assert (await client.get("/ui/")).status_code == 303
        client.cookies.set(COOKIE, old or "", domain="sos.test", path="/ui")
        assert (await client.get("/ui/")).status_code == 303  # the old cookie is dead server-side
    _, second = await world.kernel.tenants.create("third", "scale")
    async with world.client() as client:
        await sign_in(client, second)
        assert (await client.get("/ui/")).status_code == 200
        tokens = world.kernel.tenant("third").tokens
        for info in await tokens.list():
            await tokens.revoke(info.id)
        assert (await client.get("/ui/")).status_code == 303  # a revoked token ends its session at once
    async with world.client() as client:
        await sign_in(client, world.rival.admin_token)
        assert (await client.get("/ui/")).status_code == 200
        await world.kernel.tenants.suspend("rival")
        assert (await client.get("/ui/")).status_code == 303  # so does a suspended tenant


async def test_a_revoke_through_this_server_ends_the_tokens_dashboard_sessions_at_once(world: World) -> None:
    """A revoke through this server (its API, as ``sos token revoke`` against it does) or a suspension through its
    kernel ends the dashboard sessions of that token or tenant before it returns, whatever the token cache holds."""
    issued = await world.kernel.tenant("acme").tokens.issue(scopes=["admin"], label="dashboard")
    sessions = world.app.state.ui.sessions
    async with world.client() as first, world.client() as second, world.client() as other:
        for client in (first, second):
            await sign_in(client, issued.secret)
            assert (await client.get("/ui/")).status_code == 200  # the token is in the cache now
        await sign_in(other, world.acme.admin_token)
        assert sessions.count("acme") == 3
        transport = httpx.ASGITransport(app=world.app)
        async with MumegaClient(BASE_URL, world.acme.admin_token, transport=transport) as api:
            await api.tokens.revoke(issued.id)
        assert sessions.count("acme") == 1  # ended by the revoke itself, before any page
        for client in (first, second):
            page = await client.get("/ui/agents", follow_redirects=True)
            assert (page.url.path, page.status_code) == ("/ui/signin", 200)
        assert (await other.get("/ui/")).status_code == 200  # the tenant's other admin is not touched
    async with world.client() as rival:
        await sign_in(rival, world.rival.admin_token)
        assert sessions.count("rival") == 1
        await world.kernel.tenants.suspend("rival")
        assert sessions.count("rival") == 0
        assert (await rival.get("/ui/")).headers["location"] == "/ui/signin"


async def test_money_shows_exact_amounts_and_the_ledger_check(world: World) -> None:
    async with world.client() as client:
        await sign_in(client, world.acme.admin_token)
        text = (await client.get("/ui/money")).text
    assert "12.345678" in text  # each agent's 12_345_678 micros
    assert "1.000001 USD" in text  # the open hold
    assert "Ledger check: passed" in text
    assert re.search(r">a-prov</td><td>a-model</td><td class=\"num\">1</td>", text)


async def test_sessions_are_bounded_per_tenant(world: World) -> None:
    per_tenant = 2
    sessions = UISessions(per_tenant_max=per_tenant)
    acme = await world.kernel.session(world.acme.admin_token)
    rival = await world.kernel.session(world.rival.admin_token)
    (first, _), (second, _) = sessions.create(acme), sessions.create(rival)
    for _ in range(5):
        sessions.create(acme)
    assert sessions.count("acme") == per_tenant
    assert sessions.get(first) is None  # the tenant's oldest went
    assert sessions.get(second) is not None  # no other tenant's
    idle = UISessions(idle_s=0.0)
    cookie, _ = idle.create(acme)
    assert idle.get(cookie) is None
