"""``sos task create|list|show|claim|heartbeat|submit|block|review|cancel|board``: the squad board from a shell.

Bounties are integers of micros, as everywhere in the ledger. Embedded, the command acts as the trusted kernel
(``--agent`` and ``--reviewer`` say who); over http(s) it acts as the token's agent, which they default to.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._json import loads
from ..errors import InvalidArgument
from ..tasks import STATUSES, Board, Claim, Task
from ._output import when
from ._target import Context, Target

__all__ = ["add_commands"]

LIST_LIMIT = 100
HEADERS = ["id", "status", "attempt", "assignee", "priority", "bounty_micros", "reviews", "title"]


def _row(task: Task) -> tuple[object, ...]:
    approvals = sum(1 for r in task.reviews if (r.attempt, r.round, r.verdict) == (task.attempt, task.round, "approve"))
    bounty = f"{task.bounty} {task.currency}" if task.bounty else "-"
    gate = f"{approvals}/{task.approvals_required}"
    return (task.id, task.status, task.attempt, task.assignee or "-", task.priority, bounty, gate, task.title)


def _fields(task: Task) -> list[tuple[str, object]]:
    return [
        ("id", task.id),
        ("title", task.title),
        ("status", task.status + (f" ({task.outcome})" if task.outcome else "")),
        ("priority", task.priority),
        ("attempt", task.attempt),
        ("assignee", task.assignee),
        ("lease until", when(task.lease_expires_at) if task.lease_expires_at else None),
        ("reviewers", ", ".join(task.reviewers)),
        ("approvals", f"{task.approvals_required} required"),
        ("bounty", f"{task.bounty} {task.currency} micros from {task.funded_by}" if task.bounty else None),
        ("reviewer fee", f"{task.reviewer_fee} micros" if task.reviewer_fee else None),
        ("blocked by", ", ".join(task.blocked_by)),
        ("blocker", task.blocker["reason"] if task.blocker else None),
        ("evidence", f"{len(task.evidence)} item(s)" if task.evidence else None),
        ("reviews", "; ".join(f"{r.reviewer} {r.verdict} (attempt {r.attempt})" for r in task.reviews)),
        ("created", f"{when(task.created_at)} by {task.created_by or '-'}"),
        ("description", task.description),
    ]


def _show(ctx: Context, task: Task) -> int:
    if ctx.out.json_mode:
        ctx.out.document(task)
    else:
        ctx.out.fields(_fields(task))
    return 0


def _json_arg(text: str, what: str) -> Any:
    try:
        return loads(text)
    except ValueError as exc:  # a repeated key is SOS-4001, raised as is
        raise InvalidArgument(f"{what} must be JSON: {exc}", details={"argument": what}) from None


async def _create(target: Target, ctx: Context) -> int:
    a = ctx.args
    task = await target.services.tasks.create(
        a.title,
        id=a.id,
        description=a.description,
        priority=a.priority,
        reviewers=a.reviewer or [],
        approvals_required=a.approvals,
        bounty=a.bounty,
        currency=a.currency,
        funded_by=a.funded_by,
        blocked_by=a.blocked_by or [],
        lease_s=a.lease_s,
        expires_in_s=a.expires_in_s,
        reviewer_fee=a.reviewer_fee,
        created_by=a.created_by,
    )
    return _show(ctx, task)


async def _list(target: Target, ctx: Context) -> int:
    tasks = await target.services.tasks.list(ctx.args.status, limit=ctx.args.limit)
    if ctx.out.json_mode:
        ctx.out.document(tasks)
    else:
        ctx.out.table(HEADERS, [_row(t) for t in tasks], empty="no tasks")
    return 0


async def _get(target: Target, ctx: Context) -> int:
    return _show(ctx, await target.services.tasks.get(ctx.args.id))


async def _claim(target: Target, ctx: Context) -> int:
    claim: Claim = await target.services.tasks.claim(ctx.args.id, agent=ctx.args.agent, lease_s=ctx.args.lease_s)
    if ctx.out.json_mode:
        ctx.out.document(claim)
    else:
        ctx.out.line(
            f"claimed {claim.task_id} for {claim.agent}: attempt {claim.attempt}, lease until {when(claim.expires_at)}"
        )
        ctx.out.line(f"claim token (heartbeat, submit and block take it as --claim-token): {claim.token}")
    return 0


async def _heartbeat(target: Target, ctx: Context) -> int:
    return _show(ctx, await target.services.tasks.heartbeat(ctx.args.id, ctx.args.claim_token))


async def _submit(target: Target, ctx: Context) -> int:
    a = ctx.args
    evidence = [_json_arg(item, "--evidence") for item in a.evidence or []]
    result = _json_arg(a.result, "--result") if a.result is not None else None
    return _show(ctx, await target.services.tasks.submit(a.id, a.claim_token, evidence=evidence, result=result))


async def _block(target: Target, ctx: Context) -> int:
    a = ctx.args
    return _show(ctx, await target.services.tasks.block(a.id, a.claim_token, a.reason, on=a.on or []))


async def _review(target: Target, ctx: Context) -> int:
    a = ctx.args
    task = await target.services.tasks.review(a.id, reviewer=a.reviewer, verdict=a.verdict, reasons=a.reason or [])
    return _show(ctx, task)


async def _cancel(target: Target, ctx: Context) -> int:
    return _show(ctx, await target.services.tasks.cancel(ctx.args.id))


async def _board(target: Target, ctx: Context) -> int:
    board: Board = await target.services.tasks.board()
    if ctx.out.json_mode:
        ctx.out.document(board)
        return 0
    rows = []
    for status, column in board.columns.items():
        bounty = ", ".join(f"{n} {c}" for c, n in sorted(column.bounty.items())) or "-"
        rows.append((status, column.count, bounty, " ".join(column.tasks[:8]) + (" …" if column.count > 8 else "")))
    ctx.out.table(["status", "tasks", "bounty_micros", "ids"], rows, empty="no tasks")
    return 0


def _add_lifecycle(task: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    claim = task.add_parser("claim", parents=[options], help="claim a task (a lease); prints the claim token")
    claim.add_argument("id")
    claim.add_argument("--agent", default=None, help="agent:<name> (over http(s): the token's agent by default)")
    claim.add_argument("--lease-s", type=int, default=None, help="the lease (default: the task's)")
    claim.set_defaults(func=lambda ctx: ctx.run(_claim), writes=True)
    token = argparse.ArgumentParser(add_help=False)
    token.add_argument("id")
    token.add_argument("--claim-token", required=True, help="the claim token `task claim` printed")
    heartbeat = task.add_parser("heartbeat", parents=[options, token], help="renew a claim's lease")
    heartbeat.set_defaults(func=lambda ctx: ctx.run(_heartbeat), writes=True)
    submit = task.add_parser("submit", parents=[options, token], help="submit work for review")
    submit.add_argument("--evidence", action="append", metavar="JSON", help="an evidence payload; repeat for several")
    submit.add_argument("--result", default=None, metavar="JSON", help="the result, a JSON object")
    submit.set_defaults(func=lambda ctx: ctx.run(_submit), writes=True)
    block = task.add_parser("block", parents=[options, token], help="report what blocks the work")
    block.add_argument("--reason", required=True)
    block.add_argument("--on", action="append", metavar="REF", help="what it waits for; repeat for several")
    block.set_defaults(func=lambda ctx: ctx.run(_block), writes=True)
    review = task.add_parser("review", parents=[options], help="a reviewer's verdict on the submission")
    review.add_argument("id")
    review.add_argument("--verdict", choices=["approve", "reject", "needs_changes"], required=True)
    review.add_argument("--reason", action="append", metavar="TEXT", help="why; repeat (reject/needs_changes need one)")
    review.add_argument("--reviewer", default=None, help="agent:<name> (over http(s): the token's agent by default)")
    review.set_defaults(func=lambda ctx: ctx.run(_review), writes=True)
    cancel = task.add_parser("cancel", parents=[options], help="cancel a task and refund its bounty")
    cancel.add_argument("id")
    cancel.set_defaults(func=lambda ctx: ctx.run(_cancel), writes=True)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``task``."""
    task = sub.add_parser("task", help="squad tasks: claims, evidence, reviews, bounties").add_subparsers(
        dest="action", required=True
    )
    create = task.add_parser("create", parents=[options], help="create a task (its bounty goes into escrow)")
    create.add_argument("title")
    create.add_argument("--id", default=None, help="a slug or UUID (default: a new UUID); the same again is a replay")
    create.add_argument("--description", default="")
    create.add_argument("--priority", choices=["critical", "high", "medium", "low"], default="medium")
    create.add_argument("--reviewer", action="append", metavar="AGENT", help="agent:<name>; repeat for several")
    create.add_argument("--approvals", type=int, default=1, help="approvals that make it done (default 1)")
    create.add_argument("--bounty", type=int, default=0, metavar="MICROS", help="an integer of micros")
    create.add_argument("--currency", default="USD")
    create.add_argument("--funded-by", default=None, help="the account the bounty comes from")
    create.add_argument("--reviewer-fee", type=int, default=0, metavar="MICROS", help="shared by the approvers")
    create.add_argument("--blocked-by", action="append", metavar="ID", help="a task that must be done first")
    create.add_argument("--lease-s", type=int, default=300, help="a claim's lease (default 300)")
    create.add_argument("--expires-in-s", type=int, default=None, help="cancel (and refund) if unclaimed this long")
    create.add_argument("--created-by", default=None, help="agent:<name> (over http(s): the token's agent)")
    create.set_defaults(func=lambda ctx: ctx.run(_create), writes=True)
    listing = task.add_parser("list", parents=[options], help="tasks, oldest first, as a table")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"default {LIST_LIMIT}")
    listing.set_defaults(func=lambda ctx: ctx.run(_list))
    show = task.add_parser("show", parents=[options], help="one task")
    show.add_argument("id")
    show.set_defaults(func=lambda ctx: ctx.run(_get))
    board = task.add_parser("board", parents=[options], help="tasks grouped by status, with bounties")
    board.set_defaults(func=lambda ctx: ctx.run(_board))
    _add_lifecycle(task, options)
