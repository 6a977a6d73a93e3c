"""The identity plane against the raw floor it is built on, measured in the same run.

- capability verify: ``Capability.verify`` of a chain of depth 3 (root issued by a trusted key, two delegations),
  against pynacl ``VerifyKey.verify`` of the same three signatures over the same bytes, with the ``VerifyKey``
  objects built beforehand (the floor any verifier of three Ed25519 signatures pays). CHAINS distinct chains, each
  verified once per round, so nothing a chain computed before can help.
- token check, cache warm: ``Authenticator.principal(token)`` on SQLite, every token already cached (the cache
  keeps a check for ``TOKEN_CACHE_TTL_S``), against the floor of any digest-keyed cache: SHA-256 of the token and a
  dict lookup.
- token check, cache cold: the same on a fresh ``Authenticator`` (every check goes to the store: the token row by
  digest, then the tenant row), against bare ``sqlite3`` doing the same two primary-key reads, each in its own read
  transaction as the engine does, plus the SHA-256, on a file with the same settings (WAL, synchronous=NORMAL).

Rounds are interleaved (ours, then raw, ROUNDS times), so a slow moment hits a case and its floor alike; the table
shows median rates and the median of the per-round ratios. A breakdown of one verification follows the table.

Targets (identity issue): capability verify ≥ 0.8x of raw pynacl; warm token checks ≥ 500k/s.
"""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
from nacl.signing import VerifyKey

import sos_kernel
from sos_kernel.identity import TOKEN_CACHE_TTL_S, AgentKey, Authenticator, Capability, PublicKey, key_id_of
from sos_kernel.identity.capability import _scope_widening, actions_narrower, resource_narrower

CHAINS = 300
TOKENS = 1000
WARM_CALLS = 100_000
ROUNDS = 7
ACTION, RESOURCE = "bus:read", "sos:channel:team-red"

Row = tuple[str, float, float, float, str]


def paired(name: str, ours: Callable[[], float], raw: Callable[[], float], target: str) -> Row:
    """ROUNDS interleaved runs (each returns a rate): median rates and the median of the per-round ratios."""
    ours_rates, raw_rates = [], []
    for _ in range(ROUNDS):
        ours_rates.append(ours())
        raw_rates.append(raw())
    ratio = statistics.median(o / r for o, r in zip(ours_rates, raw_rates, strict=True))
    return name, statistics.median(ours_rates), statistics.median(raw_rates), ratio, target


def rate(count: int, started: float) -> float:
    return count / (time.perf_counter() - started)


# --- capability verification ---------------------------------------------------------------------------------------


def chain3(issuer: AgentKey, at: datetime) -> list[Capability]:
    """issuer → agent:a → agent:b → agent:c, each link narrower, with expiries, uses and a constraint."""
    a, b, c = AgentKey.generate(), AgentKey.generate(), AgentKey.generate()
    root = Capability.issue(
        issuer,
        issuer="agent:issuer",
        subject="agent:a",
        action="bus:*,ledger:read",
        resource="sos:channel:*",
        subject_key=a.public,
        expires_at=at + timedelta(hours=1),
        uses=100,
        constraints={"max_micros": 500},
    )
    mid = root.delegate(a, subject="agent:b", action="bus:*", resource="sos:channel:team-*", subject_key=b.public)
    leaf = mid.delegate(b, subject="agent:c", action=ACTION, resource=RESOURCE, subject_key=c.public, uses=10)
    return [root, mid, leaf]


def raw_triples(chain: list[Capability], issuer: AgentKey) -> list[tuple[VerifyKey, bytes, bytes]]:
    """(verify key, signed bytes, signature) of each link, prepared outside the timed loop."""
    signers = [issuer.public.hex, chain[0].subject_key, chain[1].subject_key]
    return [
        (VerifyKey(bytes.fromhex(str(hex_key))), link.canonical(), bytes.fromhex(link.signature.split(":", 1)[1]))
        for hex_key, link in zip(signers, chain, strict=True)
    ]


def capability_row() -> tuple[Row, list[tuple[str, float]]]:
    at = datetime.now(UTC)
    issuer = AgentKey.generate()
    trusted = {issuer.key_id: issuer.public}
    chains = [chain3(issuer, at) for _ in range(CHAINS)]
    triples = [raw_triples(chain, issuer) for chain in chains]
    for chain in chains:  # both paths accept every chain before anything is timed
        Capability.verify(chain, trusted_keys=trusted, action=ACTION, resource=RESOURCE, now=at)
    for items in triples:
        for key, message, signature in items:
            key.verify(message, signature)

    def ours() -> float:
        started = time.perf_counter()
        for chain in chains:
            Capability.verify(chain, trusted_keys=trusted, action=ACTION, resource=RESOURCE, now=at)
        return rate(len(chains), started)

    def raw() -> float:
        started = time.perf_counter()
        for items in triples:
            for key, message, signature in items:
                key.verify(message, signature)
        return rate(len(triples), started)

    row = paired("capability verify (chain of 3)", ours, raw, "≥ 0.8x of raw pynacl")
    return row, verify_breakdown(chains[0], issuer.public)


def _us(fn: Callable[[], object], n: int = 20_000) -> float:
    """Median time of one call of ``fn`` in microseconds (5 repeats)."""
    return statistics.median(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def verify_breakdown(chain: list[Capability], issuer: PublicKey) -> list[tuple[str, float]]:
    """What one verification of a chain of 3 spends, part by part (µs, summed over the 3 links)."""
    root, mid, leaf = chain
    hexes = [issuer.hex, str(root.subject_key), str(mid.subject_key)]
    raws = [bytes.fromhex(h) for h in hexes]
    sigs = [bytes.fromhex(c.signature.split(":", 1)[1]) for c in chain]
    messages = [c.canonical() for c in chain]
    keys = [VerifyKey(r) for r in raws]
    publics = [PublicKey.from_hex(h) for h in hexes]

    def signatures() -> None:
        for k, m, s in zip(keys, messages, sigs, strict=True):
            k.verify(m, s)

    def canonical() -> None:
        for c in chain:
            c.canonical()

    def verify_keys() -> None:
        for r in raws:
            VerifyKey(r)

    def from_hex_and_key_ids() -> None:
        for h in hexes[1:]:  # _check_link: key_id_of(bytes.fromhex(...)) and PublicKey.from_hex(...) per child
            key_id_of(bytes.fromhex(h))
            PublicKey.from_hex(h)

    def signature_decode() -> None:
        for c in chain:
            bytes.fromhex(c.signature[len("ed25519:") :])

    def public_key_verify() -> None:
        for p, c, m in zip(publics, chain, messages, strict=True):
            p.verify(m, c.signature)

    def narrowing() -> None:
        for parent, child in ((root, mid), (mid, leaf)):
            actions_narrower(child.action, parent.action)
            resource_narrower(child.resource, parent.resource)

    trusted = {issuer.key_id: issuer}

    def whole() -> None:
        Capability.verify(chain, trusted_keys=trusted, action=ACTION, resource=RESOURCE, now=root.issued_at)

    total = _us(whole, 2000)

    def whole_unmemoised() -> None:  # as if every chain delegated patterns never seen before
        _scope_widening.cache_clear()
        Capability.verify(chain, trusted_keys=trusted, action=ACTION, resource=RESOURCE, now=root.issued_at)

    unmemoised = _us(whole_unmemoised, 2000)
    real_verify = VerifyKey.verify
    VerifyKey.verify = lambda self, smessage, signature=None, encoder=None: smessage  # type: ignore[assignment,method-assign]
    try:  # the same call with the three Ed25519 checks replaced by a no-op: everything verify adds to them
        overhead = _us(whole, 5000)
    finally:
        VerifyKey.verify = real_verify  # type: ignore[method-assign]
    return [
        ("Capability.verify, whole", total),
        ("Capability.verify, whole, narrowing memo cleared before each call", unmemoised),
        ("Capability.verify with nacl's verify stubbed out (all but crypto)", overhead),
        ("3 x nacl VerifyKey.verify (the floor)", _us(signatures, 2000)),
        ("3 x PublicKey.verify (VerifyKey built per call + hex decode)", _us(public_key_verify, 2000)),
        ("  of which 3 x VerifyKey(bytes) construction", _us(verify_keys)),
        ("  of which 3 x signature hex decode", _us(signature_decode)),
        ("3 x canonical() (model_dump + sorted json.dumps)", _us(canonical)),
        ("2 x key_id_of + PublicKey.from_hex in _check_link", _us(from_hex_and_key_ids)),
        ("2 x narrowing (action sets parsed, resources)", _us(narrowing)),
    ]


# --- token checks ---------------------------------------------------------------------------------------------------


def _raw_db(path: Path, digests: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE tokens (digest TEXT PRIMARY KEY, tenant TEXT, id TEXT, agent TEXT, scopes TEXT, created REAL,"
        " expires REAL, revoked REAL, label TEXT)"
    )
    conn.execute("CREATE TABLE tenants (slug TEXT PRIMARY KEY, plan TEXT, seats INTEGER, status TEXT) WITHOUT ROWID")
    conn.execute("INSERT INTO tenants VALUES ('bench', 'scale', NULL, 'active')")
    rows = [(d, "bench", f"tok_{i}", None, '["admin"]', 0.0, None, None, "") for i, d in enumerate(digests)]
    conn.executemany("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,?)", rows)
    return conn


async def token_rows(tmp: Path) -> list[Row]:
    kernel = await sos_kernel.open(f"sqlite:///{tmp}/ours.db")
    await kernel.tenants.create("bench", plan="scale")
    tokens = [(await kernel.tenant("bench").tokens.issue(scopes=["admin"])).secret for _ in range(TOKENS)]
    store = kernel.backend.identity
    conn = _raw_db(tmp / "raw.db", [hashlib.sha256(t.encode()).hexdigest() for t in tokens])
    warm_tokens = [tokens[i % TOKENS] for i in range(WARM_CALLS)]

    async def ours_warm() -> float:
        auth = Authenticator(store)
        for token in tokens:
            await auth.principal(token)
        started = time.perf_counter()
        for token in warm_tokens:
            await auth.principal(token)
        return rate(len(warm_tokens), started)

    def raw_warm() -> float:
        cache = {hashlib.sha256(t.encode()).hexdigest(): t for t in tokens}
        started = time.perf_counter()
        for token in warm_tokens:
            cache.get(hashlib.sha256(token.encode()).hexdigest())
        return rate(len(warm_tokens), started)

    async def ours_cold() -> float:
        auth = Authenticator(store)
        started = time.perf_counter()
        for token in tokens:
            await auth.principal(token)
        return rate(len(tokens), started)

    def raw_cold() -> float:
        started = time.perf_counter()
        for token in tokens:
            digest = hashlib.sha256(token.encode()).hexdigest()
            conn.execute("BEGIN")
            row = conn.execute("SELECT * FROM tokens WHERE digest=?", (digest,)).fetchone()
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            conn.execute("SELECT * FROM tenants WHERE slug=?", (row[1],)).fetchone()
            conn.execute("COMMIT")
        return rate(len(tokens), started)

    rows = [
        await apaired("token check, cache warm (sqlite)", ours_warm, raw_warm, "≥ 500k/s"),
        await apaired("token check, cache cold (sqlite)", ours_cold, raw_cold, "(for reading)"),
    ]
    conn.close()
    await kernel.aclose()
    return rows


async def apaired(name: str, ours: Callable[[], Awaitable[float]], raw: Callable[[], float], target: str) -> Row:
    """:func:`paired` for an async ``ours``."""
    ours_rates, raw_rates = [], []
    for _ in range(ROUNDS):
        ours_rates.append(await ours())
        raw_rates.append(raw())
    ratio = statistics.median(o / r for o, r in zip(ours_rates, raw_rates, strict=True))
    return name, statistics.median(ours_rates), statistics.median(raw_rates), ratio, target


# --- report ---------------------------------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    """The results table."""
    lines = [f"{'case':<34} {'ours /s':>11} {'raw /s':>11} {'us each':>8} {'ratio':>7}  target"]
    for name, ours, raw, ratio, target in rows:
        lines.append(f"{name:<34} {ours:>11,.0f} {raw:>11,.0f} {1e6 / ours:>8.2f} {ratio:>6.2f}x  {target}")
    return "\n".join(lines)


def main() -> None:
    """Run the cases and print the table, the verification breakdown and the revocation bound."""
    capability, breakdown = capability_row()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [capability, *anyio.run(token_rows, Path(tmp))]
    print(f"{CHAINS} chains of depth 3; {TOKENS} tokens; {ROUNDS} interleaved rounds; median rates and ratios")
    print(render(rows))
    print("\none capability verification (chain of 3), by part, µs:")
    for name, us in breakdown:
        print(f"  {name:<66} {us:>7.2f}")
    print(
        f"\nrevocation bound: a token revoked or a tenant suspended in another process is refused within "
        f"TOKEN_CACHE_TTL_S = {TOKEN_CACHE_TTL_S:g} s (at once in the revoking process)"
    )


if __name__ == "__main__":
    main()
