"""Identity and registry on SQLite: every primitive is one transaction on the shared engine.

Tokens are kept by their SHA-256 digest only (the raw token never reaches the file). Issuing a token reads the
tenant's live agent tokens and inserts the new one inside one ``BEGIN IMMEDIATE`` transaction, so two processes
issuing at once cannot both take the last seat; spending capability uses is all-or-none in one transaction.
Times are stored as epoch seconds (REAL), scopes and channels as JSON arrays.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..identity.models import Tenant, TokenInfo
from ..identity.store import IdentityStore, RegistryEntry, RegistryStore
from .memory_identity import seat_taken
from .sqlite_governance import append_draft

if TYPE_CHECKING:
    from .sqlite_engine import SQLiteEngine

__all__ = ["IDENTITY_SCHEMA", "SQLiteIdentityStore", "SQLiteRegistryStore"]

IDENTITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS id_tenants (
    slug TEXT PRIMARY KEY, plan TEXT NOT NULL, seats_max INTEGER, status TEXT NOT NULL, created REAL NOT NULL,
    channels TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_tokens (
    digest TEXT PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, agent TEXT, scopes TEXT NOT NULL,
    created REAL NOT NULL, expires REAL, revoked REAL, label TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS id_tokens_tenant ON id_tokens (tenant, id);
CREATE TABLE IF NOT EXISTS id_linkuses (
    tenant TEXT NOT NULL, use_key TEXT NOT NULL, remaining INTEGER NOT NULL, PRIMARY KEY (tenant, use_key))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_caprevoked (
    tenant TEXT NOT NULL, cap_id TEXT NOT NULL, PRIMARY KEY (tenant, cap_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_entries (
    tenant TEXT NOT NULL, name TEXT NOT NULL, card BLOB NOT NULL, extras BLOB NOT NULL, registered REAL NOT NULL,
    last_seen REAL NOT NULL, PRIMARY KEY (tenant, name)) WITHOUT ROWID;
"""

_TENANT_COLUMNS = "slug, plan, seats_max, status, created, channels"
_TOKEN_COLUMNS = "id, tenant, agent, scopes, created, expires, revoked, label"


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _tenant_row(t: Tenant) -> tuple[Any, ...]:
    return (t.slug, t.plan, t.seats_max, t.status, t.created_at.timestamp(), json.dumps(list(t.channels)))


def _row_tenant(row: Sequence[Any]) -> Tenant:
    slug, plan, seats_max, status, created, channels = row
    return Tenant(slug, plan, seats_max, status, datetime.fromtimestamp(created, UTC), tuple(json.loads(channels)))


def _row_token(row: Sequence[Any]) -> TokenInfo:
    token_id, tenant, agent, scopes, created, expires, revoked, label = row
    created_at = datetime.fromtimestamp(created, UTC)
    return TokenInfo(token_id, tenant, agent, tuple(json.loads(scopes)), created_at, _dt(expires), _dt(revoked), label)


def _token_row(digest: str, t: TokenInfo) -> tuple[Any, ...]:
    scopes = json.dumps(list(t.scopes))
    return (
        digest,
        t.id,
        t.tenant,
        t.agent,
        scopes,
        t.created_at.timestamp(),
        _ts(t.expires_at),
        _ts(t.revoked_at),
        t.label,
    )


class SQLiteIdentityStore(IdentityStore):
    """Identity primitives as SQLite transactions (see :class:`~sos_kernel.backends.sqlite.SQLiteEngine`). A write
    given an audit record appends it in its own transaction (``audits_writes``)."""

    audits_writes: bool = True

    def __init__(self, engine: SQLiteEngine) -> None:
        self._db = engine

    async def create_tenant(self, tenant: Tenant) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            return c.execute("INSERT OR IGNORE INTO id_tenants VALUES (?,?,?,?,?,?)", _tenant_row(tenant)).rowcount > 0

        return await self._db.write(tx)

    async def get_tenant(self, slug: str) -> Tenant | None:
        def tx(c: sqlite3.Connection) -> Tenant | None:
            row = c.execute(f"SELECT {_TENANT_COLUMNS} FROM id_tenants WHERE slug=?", (slug,)).fetchone()
            return _row_tenant(row) if row else None

        return await self._db.read(tx)

    async def list_tenants(self) -> list[Tenant]:
        def tx(c: sqlite3.Connection) -> list[Tenant]:
            return [_row_tenant(r) for r in c.execute(f"SELECT {_TENANT_COLUMNS} FROM id_tenants ORDER BY slug")]

        return await self._db.read(tx)

    async def put_tenant(self, tenant: Tenant, audit: Any = None) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO id_tenants VALUES (?,?,?,?,?,?)", _tenant_row(tenant))
            append_draft(c, tenant.slug, audit)

        await self._db.write(tx)

    async def issue_token(
        self, digest: str, info: TokenInfo, seats_max: int | None, now: datetime, audit: Any = None
    ) -> bool:
        row = _token_row(digest, info)

        # The seat check and the insert share one BEGIN IMMEDIATE transaction: no other writer can slip a token
        # in between, so concurrent issuers never exceed seats_max.
        def tx(c: sqlite3.Connection) -> bool:
            if info.agent is not None and seats_max is not None:
                held = c.execute(
                    f"SELECT {_TOKEN_COLUMNS} FROM id_tokens WHERE tenant=? AND agent IS NOT NULL AND revoked IS NULL",
                    (info.tenant,),
                ).fetchall()
                if seat_taken([_row_token(r) for r in held], info.agent, seats_max, now):
                    return False
            c.execute(f"INSERT OR REPLACE INTO id_tokens (digest, {_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", row)
            append_draft(c, info.tenant, audit)
            return True

        return await self._db.write(tx)

    async def token_by_digest(self, digest: str) -> tuple[str, TokenInfo] | None:
        def tx(c: sqlite3.Connection) -> tuple[str, TokenInfo] | None:
            row = c.execute(f"SELECT digest, {_TOKEN_COLUMNS} FROM id_tokens WHERE digest=?", (digest,)).fetchone()
            return (row[0], _row_token(row[1:])) if row else None

        return await self._db.read(tx)

    async def list_tokens(self, tenant: str) -> list[TokenInfo]:
        def tx(c: sqlite3.Connection) -> list[TokenInfo]:
            rows = c.execute(f"SELECT {_TOKEN_COLUMNS} FROM id_tokens WHERE tenant=? ORDER BY rowid", (tenant,))
            return [_row_token(r) for r in rows]

        return await self._db.read(tx)

    async def revoke_token(self, tenant: str, token_id: str, now: datetime, audit: Any = None) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE id_tokens SET revoked=? WHERE tenant=? AND id=? AND revoked IS NULL",
                (now.timestamp(), tenant, token_id),
            )
            if cur.rowcount > 0:
                append_draft(c, tenant, audit)
            return cur.rowcount > 0

        return await self._db.write(tx)

    async def consume_uses(self, tenant: str, links: Sequence[tuple[str, int]], audit: Any = None) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            counts: dict[str, int] = {}
            for key, initial in links:
                row = c.execute(
                    "SELECT remaining FROM id_linkuses WHERE tenant=? AND use_key=?", (tenant, key)
                ).fetchone()
                counts[key] = int(row[0]) if row else initial
            if any(n <= 0 for n in counts.values()):
                return False
            c.executemany(
                "INSERT OR REPLACE INTO id_linkuses VALUES (?,?,?)", [(tenant, k, n - 1) for k, n in counts.items()]
            )
            append_draft(c, tenant, audit)
            return True

        return await self._db.write(tx)

    async def revoke_capability(self, tenant: str, capability_id: str, audit: Any = None) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR IGNORE INTO id_caprevoked VALUES (?,?)", (tenant, capability_id))
            append_draft(c, tenant, audit)

        await self._db.write(tx)

    async def revoked_capabilities(self, tenant: str, ids: Sequence[str]) -> set[str]:
        def tx(c: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit is 999 on old builds
                part = list(ids[i : i + 500])
                marks = ",".join("?" * len(part))
                rows = c.execute(
                    f"SELECT cap_id FROM id_caprevoked WHERE tenant=? AND cap_id IN ({marks})", (tenant, *part)
                )
                found.update(r[0] for r in rows)
            return found

        return await self._db.read(tx)


def _row_entry(row: Sequence[Any]) -> RegistryEntry:
    name, card, extras, registered, last_seen = row
    return RegistryEntry(name, bytes(card), bytes(extras), float(registered), float(last_seen))


class SQLiteRegistryStore(RegistryStore):
    """Agent cards in one table keyed by (tenant, name)."""

    def __init__(self, engine: SQLiteEngine) -> None:
        self._db = engine

    async def put(self, tenant: str, entry: RegistryEntry) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO registry_entries VALUES (?,?,?,?,?,?)",
                (tenant, entry.name, entry.card, entry.extras, entry.registered_at, entry.last_seen),
            )
            if cur.rowcount > 0:
                return True
            c.execute(
                "UPDATE registry_entries SET card=?, extras=?, last_seen=? WHERE tenant=? AND name=?",
                (entry.card, entry.extras, entry.last_seen, tenant, entry.name),
            )
            return False

        return await self._db.write(tx)

    async def touch(self, tenant: str, name: str, now: float) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute("UPDATE registry_entries SET last_seen=? WHERE tenant=? AND name=?", (now, tenant, name))
            return cur.rowcount > 0

        return await self._db.write(tx)

    async def get(self, tenant: str, name: str) -> RegistryEntry | None:
        def tx(c: sqlite3.Connection) -> RegistryEntry | None:
            row = c.execute(
                "SELECT name, card, extras, registered, last_seen FROM registry_entries WHERE tenant=? AND name=?",
                (tenant, name),
            ).fetchone()
            return _row_entry(row) if row else None

        return await self._db.read(tx)

    async def list(self, tenant: str) -> list[RegistryEntry]:
        def tx(c: sqlite3.Connection) -> list[RegistryEntry]:
            rows = c.execute(
                "SELECT name, card, extras, registered, last_seen FROM registry_entries WHERE tenant=? ORDER BY name",
                (tenant,),
            )
            return [_row_entry(r) for r in rows]

        return await self._db.read(tx)

    async def delete(self, tenant: str, name: str) -> bool:
        def tx(c: sqlite3.Connection) -> bool:
            cur = c.execute("DELETE FROM registry_entries WHERE tenant=? AND name=?", (tenant, name))
            return cur.rowcount > 0

        return await self._db.write(tx)
