"""``sos providers list|health|load`` and ``sos chat``: the provider matrix and the engine."""

from __future__ import annotations

import argparse

from ..providers import ChatReply
from ._target import Context, Target

__all__ = ["add_commands"]


async def _providers_list(target: Target, ctx: Context) -> int:
    cards = await target.services.providers.list(tier=ctx.args.tier)
    if ctx.out.json_mode:
        ctx.out.document(cards)
        return 0
    rows = [(c.id, c.tier, c.backend, c.model, c.endpoint or "-", c.cost_per_call_estimate_micros or 0) for c in cards]
    headers = ["id", "tier", "backend", "model", "endpoint", "estimate_micros"]
    ctx.out.table(headers, rows, empty="no providers (register one: sos providers load matrix.yaml)")
    return 0


async def _providers_health(target: Target, ctx: Context) -> int:
    services = target.services.providers
    health = await (services.probe() if ctx.args.probe else services.health())
    if ctx.out.json_mode:
        ctx.out.document(health)
        return 0
    rows = [(h.provider, h.state, h.failures, h.since.isoformat() if h.since else "-") for h in health.values()]
    ctx.out.table(["provider", "state", "failures", "since"], rows, empty="no providers")
    return 0


async def _providers_load(target: Target, ctx: Context) -> int:
    from ..providers import load_matrix

    cards = load_matrix(ctx.args.file)  # the whole file is checked before anything is registered
    registered = [await target.services.providers.register(card) for card in cards]
    if ctx.out.json_mode:
        ctx.out.document(registered)
        return 0
    ctx.out.line(f"registered {len(registered)} provider(s): {', '.join(c.id for c in registered)}")
    return 0


async def _chat(target: Target, ctx: Context) -> int:
    a = ctx.args
    messages = [{"role": "system", "content": a.system}] if a.system else []
    messages.append({"role": "user", "content": a.question})
    options = {"model": a.model, "tier": a.tier, "id": a.id, "max_tokens": a.max_tokens}
    engine = target.services.engine
    if a.stream and not ctx.out.json_mode:
        stream = await engine.chat(messages, **options, stream=True)
        async with stream:  # type: ignore[attr-defined]
            async for piece in stream:
                ctx.out.write(piece)
        ctx.out.line()
        reply = stream.reply
    else:
        reply = await engine.chat(messages, **options)
    if reply is None:
        return 1
    if ctx.out.json_mode:
        ctx.out.document(reply)
        return 0
    if not a.stream:
        ctx.out.line(reply.text)
    ctx.out.progress(_footer(reply))
    return 0


def _footer(reply: ChatReply) -> str:
    usage = reply.usage
    return (
        f"{reply.provider} ({reply.model}): {usage.input_tokens} in, {usage.output_tokens} out, "
        f"{reply.cost_micros} {reply.currency} micros{' (replayed)' if reply.replayed else ''}"
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], options: argparse.ArgumentParser) -> None:
    """Register ``providers`` and ``chat``."""
    providers = sub.add_parser("providers", help="the provider matrix and its breakers").add_subparsers(
        dest="action", required=True
    )
    tiers = ["primary", "fallback", "cheap", "premium", "local"]
    listing = providers.add_parser("list", parents=[options], help="the matrix, in selection order")
    listing.add_argument("--tier", choices=tiers, default=None)
    listing.set_defaults(func=lambda ctx: ctx.run(_providers_list))
    health = providers.add_parser("health", parents=[options], help="each provider's breaker")
    health.add_argument("--probe", action="store_true", help="run the health probes first (providers:admin)")
    health.set_defaults(func=lambda ctx: ctx.run(_providers_health), writes=False)
    load = providers.add_parser("load", parents=[options], help="register a YAML or JSON matrix (checked whole first)")
    load.add_argument("file")
    load.set_defaults(func=lambda ctx: ctx.run(_providers_load), writes=True)
    chat = sub.add_parser("chat", parents=[options], help="ask the tenant's providers (charged to the token's agent)")
    chat.add_argument("question")
    chat.add_argument("--model", default=None, help="a provider's model or id (default: any, in tier order)")
    chat.add_argument("--tier", choices=tiers, default=None)
    chat.add_argument("--system", default=None, help="a system message")
    chat.add_argument("--id", default=None, help="your idempotency key: a retry with the same id is charged once")
    chat.add_argument("--max-tokens", type=int, default=None)
    chat.add_argument("--stream", action="store_true", help="print the answer as it comes")
    chat.set_defaults(func=lambda ctx: ctx.run(_chat), writes=True)
