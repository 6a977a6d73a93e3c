"""No durable engine ever holds a raw bearer token: only its SHA-256 digest reaches the file or the keyspace."""

from __future__ import annotations

from pathlib import Path

import pytest

import sos_kernel
from sos_kernel.backends import Backend, Implements
from sos_kernel.backends.redis import RedisBackend
from sos_kernel.backends.sqlite import SQLiteBackend
from sos_kernel.identity.service import token_digest

from ..conftest import requires

pytestmark = pytest.mark.anyio


def _sqlite_bytes(backend: SQLiteBackend) -> bytes:
    files = [Path(backend.engine.path + suffix) for suffix in ("", "-wal", "-journal")]
    return b"".join(f.read_bytes() for f in files if f.exists())


async def _redis_bytes(backend: RedisBackend) -> bytes:
    # Every key name and every value, read by type (DUMP alone may LZF-compress long strings, hiding a match).
    r = backend.client
    out: list[bytes] = []
    async for key in r.scan_iter(count=1000):
        out += [key, await r.dump(key) or b""]
        kind = (await r.type(key)).decode()
        if kind == "string":
            out.append(await r.get(key))
        elif kind == "hash":
            out += [part for kv in (await r.hgetall(key)).items() for part in kv]
        elif kind == "set":
            out += list(await r.smembers(key))
        elif kind == "list":
            out += await r.lrange(key, 0, -1)
        elif kind == "zset":
            out += [m for m, _ in await r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out += [v for _, fields in await r.xrange(key) for kv in fields.items() for v in kv]
    return b"\n".join(out)


async def _raw_bytes(backend: Backend) -> bytes:
    if isinstance(backend, SQLiteBackend):
        return _sqlite_bytes(backend)
    if isinstance(backend, RedisBackend):
        return await _redis_bytes(backend)
    pytest.fail(f"no raw reader for durable backend {type(backend).__name__}: add one here")


async def test_stores_keep_digests_never_raw_tokens(kernel_url: str, implements: Implements) -> None:
    requires(implements, durable=True)
    async with sos_kernel.open(kernel_url) as kernel:
        _, admin = await kernel.tenants.create("acme", plan="scale")
        tokens = kernel.tenant("acme").tokens
        issued = [
            await tokens.issue(agent="agent:alice"),
            await tokens.issue(agent="agent:bob", expires_in_s=3600, label="bob's"),
            await tokens.issue(scopes=["admin"]),
            await tokens.issue(agent="agent:carol", scopes=["bus:read"]),
        ]
        await tokens.revoke(issued[1].id)
        await (await kernel.session(issued[0].secret)).bus.send("agent:alice", "agent:bob", "hello")
        secrets = [admin, *(i.secret for i in issued)]
        raw = await _raw_bytes(kernel.backend)
        for secret in secrets:
            assert token_digest(secret).encode() in raw  # the reader did see the token records
            assert secret.encode() not in raw
            assert secret.rsplit("-", 1)[1].encode() not in raw  # nor its 32-hex random part
