"""``sos agents``, ``sos wallet …`` and ``sos skills …``: the registry, the ledger and the marketplace.

Amounts are integers of micros (1 USD = 1,000,000 micros) on input and output, as everywhere in the ledger: the
command line never rounds or converts money.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any, get_args

from pydantic import ValidationError

from ..contracts import AgentCard, SkillCard, validation_details
from ..contracts._types import AGENT_ADDRESS_RE
from ..errors import InvalidArgument, SchemaViolation
from ..ledger import Balance, Transfer
from ..refusals import bad_address
from ..registry import RegisteredAgent
from ._output import Output, when
from ._target import Context, Target

__all__ = ["add_commands"]

CURRENCY = "USD"
"""The currency wallet commands use unless ``--currency`` says otherwise."""
WALLET_HISTORY_LIMIT = 100
MARKETPLACE_LIMIT = 50
ROLES = get_args(AgentCard.model_fields["role"].annotation)
TOOLS = get_args(AgentCard.model_fields["tool"].annotation)
TYPES = get_args(AgentCard.model_fields["type"].annotation)


def _balance_json(b: Balance) -> dict[str, Any]:
    # the HTTP API's form: the fields, plus the computed views for readers of raw JSON
    return {
        "owner": b.owner,
        "currency": b.currency,
        "debits_posted": b.debits_posted,
        "credits_posted": b.credits_posted,
        "debits_pending": b.debits_pending,
        "credits_pending": b.credits_pending,
        "allow_negative": b.allow_negative,
        "posted": b.posted,
        "pending": b.pending,
        "available": b.available,
    }


BALANCE_HEADERS = ["owner", "currency", "posted_micros", "pending_micros", "available_micros", "issuer"]


def _balance_row(b: Balance) -> tuple[object, ...]:
    return (b.owner, b.currency, b.posted, b.pending, b.available, "yes" if b.allow_negative else "")


# -- agents ----------------------------------------------------------------------------------------------------


def _agent_row(agent: RegisteredAgent) -> tuple[object, ...]:
    card = agent.card
    return (
        agent.address,
        agent.status,
        card.role,
        card.tool,
        card.type,
        ",".join(card.skills or []),
        ",".join(card.squads or []),
        when(agent.last_seen),
    )


async def _agents(target: Target, ctx: Context) -> int:
    a = ctx.args
    given = {"skill": a.skill, "role": a.role, "squad": a.squad, "tool": a.tool, "status": a.status}
    agents = await target.services.registry.find(**{k: v for k, v in given.items() if v is not None})
    if ctx.out.json_mode:
        ctx.out.document(agents)
        return 0
    headers = ["agent", "status", "role", "tool", "type", "skills", "squads", "last seen"]
    ctx.out.table(headers, [_agent_row(agent) for agent in agents], empty="no agents")
    if not agents:
        target.empty_hint(ctx.out, "agents")
    return 0


async def _agent_register(target: Target, ctx: Context) -> int:
    a = ctx.args
    if not AGENT_ADDRESS_RE.fullmatch(a.address):
        raise bad_address("address", a.address, agent_only=True)
    fields = {"skills": a.skill, "squads": a.squad, "model": a.model}
    try:
        card = AgentCard(
            name=a.address.removeprefix("agent:"),
            tool=a.tool,
            type=a.type,
            role=a.role,
            **{k: v for k, v in fields.items() if v},
        )
    except ValidationError as exc:
        details = validation_details(exc)
        first = details["errors"][0]
        raise SchemaViolation(
            f"agent card fails its schema at {first['loc']}: {first['msg']}", details=details
        ) from None
    agent = await target.services.registry.register(card)
    if ctx.out.json_mode:
        ctx.out.document(agent)
    else:
        ctx.out.line(f"registered {agent.address} ({agent.card.role}, {agent.card.tool}), {agent.status}")
    return 0


# -- wallet ----------------------------------------------------------------------------------------------------


async def _wallet_balance(target: Target, ctx: Context) -> int:
    found = await target.services.ledger.balance(ctx.args.owner, ctx.args.currency)
    if ctx.out.json_mode:
        ctx.out.document(_balance_json(found))
    else:
        ctx.out.table(BALANCE_HEADERS, [_balance_row(found)], empty="no account")
    return 0


async def _wallet_list(target: Target, ctx: Context) -> int:
    balances = sorted(await target.services.ledger.balances(), key=lambda b: (b.currency, b.owner))
    if ctx.out.json_mode:
        ctx.out.document([_balance_json(b) for b in balances])
        return 0
    ctx.out.table(BALANCE_HEADERS, [_balance_row(b) for b in balances], empty="no accounts")
    if not balances:
        target.empty_hint(ctx.out, "accounts")
    sums: defaultdict[str, int] = defaultdict(int)
    for b in balances:
        sums[b.currency] += b.posted
    for currency, total in sums.items():
        ctx.out.line(f"sum of posted {currency}: {total} (double entry: always 0)")
    return 0


async def _wallet_open(target: Target, ctx: Context) -> int:
    a = ctx.args
    account = await target.services.ledger.open_account(a.owner, a.currency, a.allow_negative)
    if ctx.out.json_mode:
        ctx.out.document(account)
    else:
        kind = " (issuer: may go negative)" if account.allow_negative else ""
        ctx.out.line(f"account {account.owner} {account.currency} open since {when(account.created_at)}{kind}")
    return 0


def _print_transfer(out: Output, t: Transfer) -> None:
    replay = " (replayed: already recorded, nothing moved again)" if t.replayed else ""
    out.line(f"transfer {t.id}: {t.amount} {t.currency} micros {t.debit} -> {t.credit}, {t.status}{replay}")


async def _wallet_transfer(target: Target, ctx: Context) -> int:
    a = ctx.args
    done = await target.services.ledger.transfer(
        id=a.id, debit=a.debit, credit=a.credit, amount=a.amount, currency=a.currency, reason=a.reason
    )
    if ctx.out.json_mode:
        ctx.out.document(done)
    else:
        _print_transfer(ctx.out, done)
    return 0


async def _wallet_history(target: Target, ctx: Context) -> int:
    a = ctx.args
    found = await target.services.ledger.history(a.owner, a.currency, after=a.after, limit=a.limit)
    if ctx.out.json_mode:
        ctx.out.document(found)
        return 0
    rows = [(t.sequence, when(t.timestamp), t.id, t.kind, t.debit, t.credit, t.amount, t.reason) for t in found]
    headers = ["seq", "time", "id", "kind", "debit", "credit", "amount_micros", "reason"]
    ctx.out.table(headers, rows, empty="no transfers")
    return 0


# -- skills ----------------------------------------------------------------------------------------------------


def _price(card: SkillCard) -> str:
    commerce = card.commerce
    if commerce is None or commerce.price_per_call_micros is None:
        return "-"
    return f"{commerce.price_per_call_micros} {commerce.currency}"


def _skill_row(card: SkillCard) -> tuple[object, ...]:
    status = card.verification.status if card.verification else "unverified"
    calls = card.earnings.total_invocations if card.earnings else None
    listed = "yes" if card.commerce and card.commerce.marketplace_listed else ""
    return (card.id, card.version, card.name, card.author_agent, status, _price(card), listed, calls or 0)


async def _skills_list(target: Target, ctx: Context) -> int:
    a = ctx.args
    skills = target.services.skills
    given = {"tag": a.tag, "backend": a.backend, "author": a.author, "status": a.status, "listed": a.listed}
    filters = {k: v for k, v in given.items() if v is not None}
    if a.marketplace and filters:
        raise InvalidArgument(f"--marketplace is its own view; drop {', '.join('--' + k for k in filters)}")
    if a.marketplace:
        found = await skills.marketplace(limit=a.limit, offset=a.offset)
    else:
        found = await skills.find(**filters)
    if ctx.out.json_mode:
        ctx.out.document(found)
        return 0
    headers = ["id", "version", "name", "author", "verification", "price_micros", "listed", "calls"]
    ctx.out.table(headers, [_skill_row(card) for card in found], empty="no skills")
    return 0


def _skill_fields(card: SkillCard, versions: list[str]) -> list[tuple[str, object]]:
    commerce, runtime, earnings = card.commerce, card.runtime, card.earnings
    split = commerce.revenue_split if commerce else None
    shares = split.model_dump(exclude_none=True) if split else {}
    verification = card.verification
    return [
        ("id", card.id),
        ("name", card.name),
        ("version", card.version),
        ("versions", ", ".join(versions)),
        ("author", card.author_agent),
        ("created", when(card.created_at)),
        ("description", card.description),
        ("tags", ", ".join(card.tags or [])),
        ("runtime", f"{runtime.backend or '-'} {runtime.entry_point or ''}".strip() if runtime else None),
        ("price", f"{_price(card)} micros per call" if _price(card) != "-" else None),
        ("revenue split", ", ".join(f"{k} {v:g}" for k, v in shares.items())),
        ("listed", "yes" if commerce and commerce.marketplace_listed else "no"),
        ("verification", verification.status if verification else "unverified"),
        ("invocations", earnings.total_invocations if earnings else 0),
        ("earned", f"{earnings.total_earned_micros or 0} {earnings.currency} micros" if earnings else None),
        ("lineage", ", ".join(f"{x.relation} {x.parent_skill_id}" for x in card.lineage or [])),
    ]


async def _skills_show(target: Target, ctx: Context) -> int:
    skills = target.services.skills
    card = await skills.get(ctx.args.id, ctx.args.version)
    if ctx.out.json_mode:
        ctx.out.document(card)
        return 0
    ctx.out.fields(_skill_fields(card, await skills.versions(card.id)))
    return 0


# -- the parsers -----------------------------------------------------------------------------------------------


def _micros(text: str) -> int | float | str:
    """``--amount`` as the number it spells (an int, or a float), else the text: the ledger refuses what is not an
    int of micros, with the message it gives in-process and over HTTP."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _add_agents(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    agents = sub.add_parser("agents", parents=[options], help="registered agents, as a table")
    agents.add_argument("--skill", default=None, help="only agents listing this skill")
    agents.add_argument("--role", default=None, help="only this role (executor, coordinator…)")
    agents.add_argument("--squad", default=None, help="only members of this squad")
    agents.add_argument("--tool", default=None, help="only this tool (sdk, claude-code…)")
    agents.add_argument("--status", choices=["online", "stale", "offline"], default=None)
    agents.set_defaults(func=lambda ctx: ctx.run(_agents))
    agent = sub.add_parser("agent", help="register an agent").add_subparsers(dest="action", required=True)
    register = agent.add_parser("register", parents=[options], help="register (or update) an agent's card")
    register.add_argument("address", help="agent:<name> (over http(s): the token's own agent, or any with admin)")
    register.add_argument("--role", choices=sorted(ROLES), default="executor", help="default: executor")
    register.add_argument("--tool", choices=sorted(TOOLS), default="sdk", help="default: sdk")
    register.add_argument("--type", choices=sorted(TYPES), default="service", help="default: service")
    register.add_argument("--skill", action="append", default=None, metavar="SKILL", help="a skill; repeat for several")
    register.add_argument("--squad", action="append", default=None, metavar="SQUAD", help="a squad; repeat for several")
    register.add_argument("--model", default=None, help="the model the agent runs, if any")
    register.set_defaults(func=lambda ctx: ctx.run(_agent_register), writes=True)


def _add_wallet(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    wallet = sub.add_parser("wallet", help="balances, accounts and transfers").add_subparsers(
        dest="action", required=True
    )
    currency = argparse.ArgumentParser(add_help=False)
    currency.add_argument("--currency", default=CURRENCY, help=f"default: {CURRENCY}")
    balance = wallet.add_parser("balance", parents=[options, currency], help="one account's balance")
    balance.add_argument("owner", help="agent:<name>, tenant:<slug> or system:<name>")
    balance.set_defaults(func=lambda ctx: ctx.run(_wallet_balance))
    listing = wallet.add_parser("list", parents=[options], help="every account of the tenant (ledger admin)")
    listing.set_defaults(func=lambda ctx: ctx.run(_wallet_list))
    opening = wallet.add_parser("open", parents=[options, currency], help="open an account (idempotent)")
    opening.add_argument("owner", help="agent:<name>, tenant:<slug> or system:<name>")
    opening.add_argument("--allow-negative", action="store_true", help="an issuer that may mint (ledger admin)")
    opening.set_defaults(func=lambda ctx: ctx.run(_wallet_open), writes=True)
    transfer = wallet.add_parser("transfer", parents=[options, currency], help="move micros, exactly once by id")
    transfer.add_argument("--id", required=True, help="your idempotency key: a retry with the same id moves nothing")
    transfer.add_argument("--from", dest="debit", required=True, metavar="OWNER", help="the account debited")
    transfer.add_argument("--to", dest="credit", required=True, metavar="OWNER", help="the account credited")
    transfer.add_argument("--amount", type=_micros, required=True, metavar="MICROS", help="an integer of micros")
    transfer.add_argument("--reason", default="", help="a note kept with the transfer")
    transfer.set_defaults(func=lambda ctx: ctx.run(_wallet_transfer), writes=True)
    history = wallet.add_parser("history", parents=[options, currency], help="an account's applied transfers")
    history.add_argument("owner")
    history.add_argument("--after", type=int, default=0, help="a sequence number to start after")
    history.add_argument("--limit", type=int, default=WALLET_HISTORY_LIMIT, help=f"default {WALLET_HISTORY_LIMIT}")
    history.set_defaults(func=lambda ctx: ctx.run(_wallet_history))


def _add_skills(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    skills = sub.add_parser("skills", help="the skills of the tenant and its marketplace").add_subparsers(
        dest="action", required=True
    )
    listing = skills.add_parser("list", parents=[options], help="the latest release of every skill matching")
    listing.add_argument("--tag", default=None)
    listing.add_argument("--author", default=None, help="agent:<name>")
    listing.add_argument("--backend", default=None, help="runtime backend (local-python…)")
    listing.add_argument("--status", default=None, help="verification status (human_verified, disputed…)")
    listed = listing.add_mutually_exclusive_group()
    listed.add_argument("--listed", dest="listed", action="store_const", const=True, default=None)
    listed.add_argument("--unlisted", dest="listed", action="store_const", const=False)
    listed.add_argument(
        "--marketplace", action="store_true", help="the marketplace view instead: listed, not disputed, best first"
    )
    listing.add_argument("--limit", type=int, default=MARKETPLACE_LIMIT, help="with --marketplace: page size")
    listing.add_argument("--offset", type=int, default=0, help="with --marketplace: skip this many")
    listing.set_defaults(func=lambda ctx: ctx.run(_skills_list))
    show = skills.add_parser("show", parents=[options], help="one skill's card")
    show.add_argument("id")
    show.add_argument("--version", default=None, help="an exact version or a range (^1.2); default: the latest")
    show.set_defaults(func=lambda ctx: ctx.run(_skills_show))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``agents``, ``wallet`` and ``skills``."""
    _add_agents(sub, options)
    _add_wallet(sub, options)
    _add_skills(sub, options)
