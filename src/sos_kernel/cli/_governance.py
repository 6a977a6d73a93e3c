"""``sos policy set|show|remove``, ``sos approvals list|approve|deny`` and ``sos audit verify|events|export``.

``sos policy set FILE`` reads a policy in JSON, YAML or TOML (by the file's suffix; ``-`` reads stdin as JSON or
YAML). ``sos audit export`` writes CloudEvents 1.0, one JSON object per line (JSON Lines), to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument
from ..governance import load_policy
from ._output import when
from ._target import Context, Target

__all__ = ["add_commands"]

EVENTS_LIMIT = 100


def _tenant(target: Target) -> str:
    return str(target.tenant or getattr(target.services, "tenant", None) or "default")


def _read_policy(path: str) -> dict[str, Any]:
    if path == "-":
        return load_policy(sys.stdin.read()).model_dump()
    file = Path(path)
    if not file.is_file():
        raise InvalidArgument(f"no policy file {path!r}")
    kind = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}.get(file.suffix.lower())
    return load_policy(file.read_text(encoding="utf-8"), format=kind).model_dump()


async def _policy_set(target: Target, ctx: Context) -> int:
    info = await target.services.governance.set_policy(_tenant(target), _read_policy(ctx.args.file))
    if ctx.out.json_mode:
        ctx.out.document(info)
    else:
        ctx.out.line(f"policy {info.name} version {info.version} set (revision {info.revision}, {info.digest[:12]})")
    return 0


async def _policy_show(target: Target, ctx: Context) -> int:
    found = await target.services.governance.get_policy(_tenant(target))
    if found is None and not ctx.out.json_mode:
        ctx.out.line("no policy: governance is off for this tenant (sessions are held to their scopes)")
        return 0
    ctx.out.document(found)
    return 0


async def _policy_remove(target: Target, ctx: Context) -> int:
    removed = await target.services.governance.remove_policy(_tenant(target))
    ctx.out.document(removed) if ctx.out.json_mode else ctx.out.line("removed" if removed else "there was no policy")
    return 0


ARGUMENTS_COLUMN_CHARS_MAX = 120
"""The widest ARGUMENTS cell of ``sos approvals list`` (``--json`` shows them whole, as the approval holds them)."""


def _shown(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= ARGUMENTS_COLUMN_CHARS_MAX else text[: ARGUMENTS_COLUMN_CHARS_MAX - 1] + "…"


async def _approvals_list(target: Target, ctx: Context) -> int:
    found = await target.services.governance.pending()
    if ctx.out.json_mode:
        ctx.out.document(found)
        return 0
    rows = [
        (a.id, a.agent or "-", a.action, a.resource or "-", _shown(a.arguments), a.rule or "-", when(a.expires_at))
        for a in found
    ]
    heads = ("ID", "AGENT", "ACTION", "RESOURCE", "ARGUMENTS", "RULE", "EXPIRES")
    ctx.out.table(heads, rows, empty="no pending approvals")
    return 0


async def _approvals_decide(target: Target, ctx: Context) -> int:
    governance = target.services.governance
    decide = governance.approve if ctx.args.action == "approve" else governance.deny
    decided = await decide(ctx.args.id, ctx.args.reason)
    if ctx.out.json_mode:
        ctx.out.document(decided)
    else:
        ctx.out.line(f"approval {decided.id}: {decided.state} by {decided.reviewer}")
    return 0


async def _audit_verify(target: Target, ctx: Context) -> int:
    report = await target.services.audit.verify()
    if ctx.out.json_mode:
        ctx.out.document(report)
    else:
        state = "intact" if report.ok else "BROKEN"
        ctx.out.line(
            f"audit chain of {report.tenant}: {state} ({report.records} records, {report.checkpoints} checkpoints)"
        )
        for problem in report.problems:
            ctx.out.line(f"  {problem}")
    return 0 if report.ok else 1


async def _audit_events(target: Target, ctx: Context) -> int:
    a = ctx.args
    found = await target.services.audit.events(
        _tenant(target), limit=a.limit, after=a.after, kind=a.kind, actor=a.actor, action=a.action_name
    )
    if ctx.out.json_mode:
        ctx.out.document(found)
        return 0
    rows = [(r.seq, when(r.at), r.kind, r.actor, r.action or "-", r.resource or "-", r.outcome) for r in found]
    ctx.out.table(("SEQ", "AT", "KIND", "ACTOR", "ACTION", "RESOURCE", "OUTCOME"), rows, empty="no audit records")
    return 0


async def _audit_export(target: Target, ctx: Context) -> int:
    after = ctx.args.after
    while True:
        page = await target.services.audit.export(_tenant(target), after=after, limit=1000)
        for event in page:
            ctx.out.json_line(event)
        if len(page) < 1000:
            return 0
        after = int(page[-1]["data"]["seq"])


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``policy``, ``approvals`` and ``audit``."""
    policy = sub.add_parser("policy", help="the tenant's governance policy").add_subparsers(
        dest="action", required=True
    )
    setting = policy.add_parser("set", parents=[options], help="set the policy from a JSON, YAML or TOML file")
    setting.add_argument("file", help="the policy document (- for stdin)")
    setting.set_defaults(func=lambda ctx: ctx.run(_policy_set), writes=True)
    policy.add_parser("show", parents=[options], help="the policy as stored").set_defaults(
        func=lambda ctx: ctx.run(_policy_show)
    )
    policy.add_parser("remove", parents=[options], help="remove the policy (governance off)").set_defaults(
        func=lambda ctx: ctx.run(_policy_remove), writes=True
    )
    approvals = sub.add_parser("approvals", help="calls waiting for a reviewer").add_subparsers(
        dest="action", required=True
    )
    approvals.add_parser("list", parents=[options], help="pending approvals").set_defaults(
        func=lambda ctx: ctx.run(_approvals_list)
    )
    for verdict in ("approve", "deny"):
        decide = approvals.add_parser(verdict, parents=[options], help=f"{verdict} a pending approval")
        decide.add_argument("id")
        decide.add_argument("--reason", default="")
        decide.set_defaults(func=lambda ctx: ctx.run(_approvals_decide), writes=True)
    audit = sub.add_parser("audit", help="the tenant's audit chain").add_subparsers(dest="action", required=True)
    audit.add_parser("verify", parents=[options], help="walk the chain; exit 1 if broken").set_defaults(
        func=lambda ctx: ctx.run(_audit_verify)
    )
    events = audit.add_parser("events", parents=[options], help="a page of records, oldest first")
    events.add_argument("--limit", type=int, default=EVENTS_LIMIT)
    events.add_argument("--after", type=int, default=0, help="only records after this sequence")
    events.add_argument("--kind", default=None)
    events.add_argument("--actor", default=None)
    events.add_argument("--action-name", default=None, help="only records of this action (ledger.transfer...)")
    events.set_defaults(func=lambda ctx: ctx.run(_audit_events))
    export = audit.add_parser("export", parents=[options], help="every record as CloudEvents 1.0 JSON Lines")
    export.add_argument("--after", type=int, default=0)
    export.set_defaults(func=lambda ctx: ctx.run(_audit_export))
