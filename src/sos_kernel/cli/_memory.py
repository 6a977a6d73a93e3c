"""``sos memory …``: remember, recall, get, forget and list memories, and the tenant's namespaces.

Texts are embedded by the kernel's embedder (the lexical default when embedded; the server's over http(s)).
``--where`` and ``--vector`` take JSON (``--where '{"kind": {"$in": ["bill", "note"]}}'``, ``--vector '[0.1, 0.2]'``);
``--meta KEY=VALUE`` adds one metadata string, repeatable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._json import loads
from ..errors import InvalidArgument
from ..memory import Hit, MemoryRecord, NamespaceInfo
from ._output import when
from ._target import Context, Target

__all__ = ["add_commands"]

RECALL_K = 10
LIST_LIMIT = 100
TEXT_CELL_CHARS_MAX = 60


def _json(option: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{option} must be JSON: {exc}", details={"option": option}) from None


def _metadata(args: argparse.Namespace) -> dict[str, Any] | None:
    metadata = _json("--metadata", args.metadata)
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidArgument("--metadata must be a JSON object")
    pairs = dict(metadata or {})
    for pair in args.meta or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--meta takes KEY=VALUE, got {pair!r}")
        pairs[key] = value
    return pairs or None


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TEXT_CELL_CHARS_MAX else line[: TEXT_CELL_CHARS_MAX - 1] + "…"


def _record_row(m: MemoryRecord) -> tuple[object, ...]:
    return (m.id, _short(m.text), json.dumps(m.metadata, ensure_ascii=False), when(m.created_at), when(m.expires_at))


def _hit_row(h: Hit) -> tuple[object, ...]:
    return (h.id, f"{h.score:.4f}", _short(h.text), json.dumps(h.metadata, ensure_ascii=False))


def _namespace_row(n: NamespaceInfo) -> tuple[object, ...]:
    return (n.name, n.count, n.embedder or "(given vectors)", n.dimensions)


async def _remember(target: Target, ctx: Context) -> int:
    a = ctx.args
    record = await target.services.memory.remember(
        a.namespace, a.text, id=a.id, metadata=_metadata(a), vector=_json("--vector", a.vector), ttl_s=a.ttl
    )
    if ctx.out.json_mode:
        ctx.out.document(record)
    else:
        ctx.out.line(f"{'already remembered' if record.replayed else 'remembered'} {record.id} in {record.namespace}")
    return 0


async def _recall(target: Target, ctx: Context) -> int:
    a = ctx.args
    query = _json("--vector", a.vector) if a.vector is not None else a.query
    if query is None:
        raise InvalidArgument("recall needs a QUERY text or --vector")
    hits = await target.services.memory.recall(
        a.namespace, query, k=a.k, where=_json("--where", a.where), min_score=a.min_score
    )
    if ctx.out.json_mode:
        ctx.out.document(hits)
        return 0
    ctx.out.table(["id", "score", "text", "metadata"], [_hit_row(h) for h in hits], empty="no memories match")
    return 0


async def _get(target: Target, ctx: Context) -> int:
    record = await target.services.memory.get(ctx.args.namespace, ctx.args.id)
    if ctx.out.json_mode:
        ctx.out.document(record)
        return 0
    ctx.out.fields(
        [
            ("id", record.id),
            ("namespace", record.namespace),
            ("text", record.text),
            ("metadata", json.dumps(record.metadata, ensure_ascii=False)),
            ("created", when(record.created_at)),
            ("expires", when(record.expires_at) if record.expires_at else "never"),
        ]
    )
    return 0


async def _forget(target: Target, ctx: Context) -> int:
    removed = await target.services.memory.forget(ctx.args.namespace, ctx.args.id)
    if ctx.out.json_mode:
        ctx.out.document({"forgotten": removed})
    else:
        ctx.out.line(f"forgot {ctx.args.id}" if removed else f"no memory {ctx.args.id} (nothing to forget)")
    return 0


async def _list(target: Target, ctx: Context) -> int:
    a = ctx.args
    where = _json("--where", a.where)
    found = await target.services.memory.list(a.namespace, where=where, limit=a.limit, after=a.after)
    if ctx.out.json_mode:
        ctx.out.document(found)
        return 0
    headers = ["id", "text", "metadata", "created", "expires"]
    ctx.out.table(headers, [_record_row(m) for m in found], empty="no memories")
    return 0


async def _namespaces(target: Target, ctx: Context) -> int:
    found = await target.services.memory.namespaces()
    if ctx.out.json_mode:
        ctx.out.document(found)
        return 0
    headers = ["namespace", "memories", "embedder", "dimensions"]
    ctx.out.table(headers, [_namespace_row(n) for n in found], empty="no namespaces")
    if not found:
        target.empty_hint(ctx.out, "memories")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``memory remember|recall|get|forget|list|namespaces``."""
    memory = sub.add_parser("memory", help="semantic memory: remember and recall texts").add_subparsers(
        dest="action", required=True
    )
    remember = memory.add_parser("remember", parents=[options], help="remember a text (idempotent by --id)")
    remember.add_argument("namespace", help="agent:<name>/... (an agent's own) or a shared name like team/notes")
    remember.add_argument("text")
    remember.add_argument("--id", default=None, help="your id: the same text again is a replay; default: generated")
    remember.add_argument("--meta", action="append", default=None, metavar="KEY=VALUE", help="metadata; repeatable")
    remember.add_argument("--metadata", default=None, metavar="JSON", help="metadata as a JSON object")
    remember.add_argument("--vector", default=None, metavar="JSON", help="your own vector instead of embedding")
    remember.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="forget it after this long")
    remember.set_defaults(func=lambda ctx: ctx.run(_remember), writes=True)
    recall = memory.add_parser("recall", parents=[options], help="the closest memories to a text, best first")
    recall.add_argument("namespace")
    recall.add_argument("query", nargs="?", default=None, help="a text (or give --vector)")
    recall.add_argument("-k", type=int, default=RECALL_K, help=f"how many (default {RECALL_K})")
    recall.add_argument("--where", default=None, metavar="JSON", help='metadata filter: {"kind": "bill"}, $in, $eq')
    recall.add_argument("--min-score", type=float, default=None, help="only scores at least this (cosine, -1..1)")
    recall.add_argument("--vector", default=None, metavar="JSON", help="a query vector instead of a text")
    recall.set_defaults(func=lambda ctx: ctx.run(_recall))
    get = memory.add_parser("get", parents=[options], help="one memory by id")
    get.add_argument("namespace")
    get.add_argument("id")
    get.set_defaults(func=lambda ctx: ctx.run(_get))
    forget = memory.add_parser("forget", parents=[options], help="forget one memory")
    forget.add_argument("namespace")
    forget.add_argument("id")
    forget.set_defaults(func=lambda ctx: ctx.run(_forget), writes=True)
    listing = memory.add_parser("list", parents=[options], help="memories by id")
    listing.add_argument("namespace")
    listing.add_argument("--where", default=None, metavar="JSON", help="metadata filter")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"page size (default {LIST_LIMIT})")
    listing.add_argument("--after", default=None, help="the last id of the previous page")
    listing.set_defaults(func=lambda ctx: ctx.run(_list))
    namespaces = memory.add_parser("namespaces", parents=[options], help="the tenant's namespaces")
    namespaces.set_defaults(func=lambda ctx: ctx.run(_namespaces))
