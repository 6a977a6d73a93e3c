"""Upgrading a one-server Redis deployment: token records of the earlier global layout (``sos:token:<digest>``)
are moved under their tenants' hash tags when the kernel opens, and keep working, listing and revoking."""

from __future__ import annotations

import hashlib

import pytest

import sos_kernel
from sos_kernel.backends.redis_identity import LEGACY_TOKEN_PREFIX, TOKEN_INDEX_PREFIX, TOKEN_LAYOUT_KEY
from sos_kernel.errors import InvalidToken

from ..conftest import _flush
from ..redis_cluster import sync_client

pytestmark = pytest.mark.anyio


def _to_legacy(url: str, secret: str, tenant: str) -> str:
    """Put one token back where earlier releases kept it, as an old deployment's database holds it."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    r = sync_client(url)
    try:
        key = next(k.decode() for k in r.scan_iter(match=f"sos:{{t:{tenant}}}:token:*") if k.decode().endswith(digest))
        r.rename(key, LEGACY_TOKEN_PREFIX + key.rsplit(":", 1)[1])
        r.delete(TOKEN_INDEX_PREFIX + key.rsplit(":", 1)[1], TOKEN_LAYOUT_KEY)
        return key.rsplit(":", 1)[1]
    finally:
        r.close()


async def test_tokens_of_the_earlier_layout_keep_working_after_an_upgrade(redis_url: str) -> None:
    _flush(redis_url)
    async with sos_kernel.open(redis_url) as kernel:
        _, admin = await kernel.tenants.create("acme", "scale")
        alice = await kernel.tenant("acme").tokens.issue(agent="agent:alice")
        bob = await kernel.tenant("acme").tokens.issue(agent="agent:bob")
    legacy = [_to_legacy(redis_url, s, "acme") for s in (admin, alice.secret, bob.secret)]
    async with sos_kernel.open(redis_url) as kernel:  # as a new release opens an old database
        assert (await kernel.session(alice.secret)).agent == "agent:alice"
        assert (await kernel.session(admin)).principal.admin
        assert {t.id for t in await kernel.tenant("acme").tokens.list()} >= {alice.id, bob.id}
        await kernel.tenant("acme").tokens.revoke(bob.id)
        with pytest.raises(InvalidToken):
            await kernel.session(bob.secret)
    r = sync_client(redis_url)
    try:
        assert [d for d in legacy if r.exists(LEGACY_TOKEN_PREFIX + d)] == []
        assert r.get(TOKEN_LAYOUT_KEY) == b"2"
    finally:
        r.close()
    async with sos_kernel.open(redis_url) as kernel:  # a later open moves nothing back: the revoke stands
        with pytest.raises(InvalidToken):
            await kernel.session(bob.secret)
        assert (await kernel.session(alice.secret)).agent == "agent:alice"
