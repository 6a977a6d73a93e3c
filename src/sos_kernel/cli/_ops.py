"""``sos wake``, ``sos watch`` and ``sos top``: the operations commands (see docs/operations.md).

``wake`` and ``watch`` run until SIGINT or SIGTERM, then stop gracefully (in-flight actions finish within their
grace, or their messages are given back); ``--count`` stops ``wake`` after that many runs, ``--once`` makes
``watch`` and ``top`` evaluate once and exit. Options may come from a TOML file (``--config``): the keys are the
long flags' names with ``_`` for ``-``, under a ``[wake]`` or ``[watch]`` table; flags win over the file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from ..errors import InvalidArgument, NotFound
from ..ops._actions import Action, CallableAction, CommandAction, WebhookAction
from ..ops.logs import configure_logging
from ..ops.wake import WAKE_GROUP, WakeConfig, WakeRunner, agents_of
from ..ops.watch import ALERTS_CHANNEL, WATCHER_AGENT, Watcher, default_rules
from . import _top
from ._target import Context, Target

__all__ = ["add_commands", "load_config"]

CONFIG_BYTES_MAX = 1 << 20
WEBHOOK_SECRET_ENV = "SOS_WEBHOOK_SECRET"


def load_config(path: str | None, table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML file (empty without a file); SOS-4040 if missing, SOS-4005 if unreadable."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise NotFound(f"no config file {path}", details={"path": path})
    data = file.read_bytes()
    if len(data) > CONFIG_BYTES_MAX:
        raise InvalidArgument(f"config file {path} is over {CONFIG_BYTES_MAX} bytes")
    try:
        found = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"config file {path} is not TOML: {exc}") from None
    section = found.get(table, {})
    if not isinstance(section, dict):
        raise InvalidArgument(f"[{table}] in {path} must be a table")
    return section


def _merged(args: argparse.Namespace, table: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Flags given, else the file's values, else the defaults; unknown file keys are refused."""
    file = load_config(getattr(args, "config", None), table)
    unknown = sorted(set(file) - set(defaults))
    if unknown:
        raise InvalidArgument(f"unknown key {unknown[0]!r} in [{table}] (known: {', '.join(sorted(defaults))})")
    given = {k: getattr(args, k) for k in defaults if getattr(args, k, None) is not None}
    return {**defaults, **file, **given}


_WAKE_DEFAULTS: dict[str, Any] = {
    "agent": [],
    "exec": None,
    "argv": None,
    "shell": False,
    "webhook": None,
    "webhook_secret_env": WEBHOOK_SECRET_ENV,
    "callable": None,
    "timeout": 60.0,
    "concurrency": 4,
    "attempts": 5,
    "backoff": 1.0,
    "backoff_max": 60.0,
    "types": "wake",
    "group": WAKE_GROUP,
    "start": "earliest",
    "visibility_timeout": None,
    "stop_grace": 10.0,
    "evidence_to": None,
    "no_evidence": False,
    "count": None,
}


def _action(o: dict[str, Any]) -> Action:
    chosen = [k for k in ("exec", "argv", "webhook", "callable") if o.get(k)]
    if len(chosen) != 1:
        raise InvalidArgument("give exactly one action: --exec COMMAND, --webhook URL or --callable MODULE:FUNCTION")
    if o.get("webhook"):
        secret = os.environ.get(o["webhook_secret_env"])
        if not secret:
            raise InvalidArgument(f"a webhook is signed: set ${o['webhook_secret_env']} to a secret of 16+ bytes")
        return WebhookAction(o["webhook"], secret, timeout_s=o["timeout"])
    if o.get("callable"):
        module, _, name = str(o["callable"]).partition(":")
        if not module or not name:
            raise InvalidArgument("--callable is MODULE:FUNCTION")
        try:
            function: Callable[..., Any] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise InvalidArgument(f"--callable {o['callable']}: {exc}") from None
        return CallableAction(function, timeout_s=o["timeout"])
    command = o["argv"] if o.get("argv") else o["exec"]
    return CommandAction(command, shell=bool(o["shell"]), timeout_s=o["timeout"])


def wake_runner(api: Any, args: argparse.Namespace) -> WakeRunner:
    """The runner ``sos wake`` would run with ``args`` (flags over the ``[wake]`` table of ``--config``)."""
    o = _merged(args, "wake", _WAKE_DEFAULTS)
    types = o["types"].split(",") if isinstance(o["types"], str) else list(o["types"])
    config = WakeConfig(
        agents=agents_of(o["agent"] if isinstance(o["agent"], list) else [o["agent"]]),
        types=frozenset(t.strip() for t in types if t.strip()),
        concurrency=o["concurrency"],
        attempts=o["attempts"],
        backoff_s=o["backoff"],
        backoff_s_max=o["backoff_max"],
        visibility_timeout_s=o["visibility_timeout"],
        group=o["group"],
        start=o["start"],
        stop_grace_s=o["stop_grace"],
        evidence=not o["no_evidence"],
        evidence_to=o["evidence_to"],
        count=o["count"],
    )
    return WakeRunner(api, _action(o), config)


async def stop_on_signals(stop: Callable[[], None], done: anyio.Event) -> None:
    """Call ``stop`` on the first SIGINT or SIGTERM; return when ``done`` is set."""
    async with anyio.create_task_group() as tg:

        async def listen() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stop()
                    return

        tg.start_soon(listen)
        await done.wait()
        tg.cancel_scope.cancel()


def _logging(args: argparse.Namespace) -> None:
    # JSON lines of every run with --log-json; else failures only, as plain lines on stderr
    if getattr(args, "log_json", None):
        configure_logging("INFO")
    else:
        configure_logging("WARNING", json_lines=False)


async def _wake(target: Target, ctx: Context) -> int:
    _logging(ctx.args)
    runner = wake_runner(target.services, ctx.args)
    ctx.out.progress(f"sos wake: serving {', '.join(runner.config.agents)} on {target.url}")
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, runner.stop, done)
        try:
            await runner.run()
        finally:
            done.set()
    ctx.out.progress(f"sos wake: stopped after {runner.handled} runs ({runner.succeeded} succeeded)")
    return 0


_WATCH_DEFAULTS: dict[str, Any] = {
    "interval": 30.0,
    "clear": 60.0,
    "source": WATCHER_AGENT,
    "channel": ALERTS_CHANNEL,
    "address": [],
    "stale_after": None,
    "offline_after": None,
    "webhook": None,
    "webhook_secret_env": WEBHOOK_SECRET_ENV,
}


def watcher_of(api: Any, args: argparse.Namespace) -> Watcher:
    """The watcher ``sos watch`` would run with ``args`` (flags over the ``[watch]`` table of ``--config``)."""
    o = _merged(args, "watch", _WATCH_DEFAULTS)
    webhook = None
    if o["webhook"]:
        secret = os.environ.get(o["webhook_secret_env"])
        if not secret:
            raise InvalidArgument(
                f"an alert webhook is signed: set ${o['webhook_secret_env']} to a secret of 16+ bytes"
            )
        webhook = WebhookAction(o["webhook"], secret)
    rules = default_rules(list(o["address"]), stale_after_s=o["stale_after"], offline_after_s=o["offline_after"])
    source = o["source"] if o["source"].startswith("agent:") else f"agent:{o['source']}"
    return Watcher(
        api,
        rules,
        interval_s=o["interval"],
        clear_s=o["clear"],
        source=source,
        channel=o["channel"],
        webhook=webhook,
    )


def _print_alert(ctx: Context, alert: Any) -> None:
    if ctx.out.json_mode:
        ctx.out.json_line(alert.to_wire())
    else:
        p = alert.payload
        ctx.out.line(f"{p.state:<8} {p.severity:<8} {p.rule:<16} {p.text}")


async def _watch(target: Target, ctx: Context) -> int:
    _logging(ctx.args)
    watcher = watcher_of(target.services, ctx.args)
    if ctx.args.once:
        watcher.clear_s = 0.0  # run on a schedule, the schedule is the hold-down: an absent condition resolves
        for alert in await watcher.evaluate():
            _print_alert(ctx, alert)
        return 0
    watcher.on_alert = lambda alert: _print_alert(ctx, alert)
    ctx.out.progress(f"sos watch: {len(watcher.rules)} rules every {watcher.interval_s:g} s on {target.url}")
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, watcher.stop, done)
        try:
            await watcher.run()
        finally:
            done.set()
    return 0


def add_commands(sub: Any, kernel_options: argparse.ArgumentParser) -> None:
    """Register ``wake``, ``watch`` and ``top``."""
    w = sub.add_parser(
        "wake", parents=[kernel_options], help="run a command, webhook or callable for each wake of some agents"
    )
    w.add_argument("--config", default=None, help="a TOML file with a [wake] table (flags win)")
    w.add_argument("--agent", action="append", default=None, help="agent:<name> to serve (repeat for several)")
    w.add_argument("--exec", default=None, help="the command, split like a shell would but run without one")
    w.add_argument("--shell", action="store_true", default=None, help="run --exec through /bin/sh -c")
    w.add_argument("--webhook", default=None, help="POST each message here, signed with $SOS_WEBHOOK_SECRET")
    w.add_argument("--webhook-secret-env", default=None, help=f"the variable holding the secret ({WEBHOOK_SECRET_ENV})")
    w.add_argument("--callable", default=None, help="MODULE:FUNCTION called with each job")
    w.add_argument("--timeout", type=float, default=None, help="seconds one action may run (default 60)")
    w.add_argument("--concurrency", type=int, default=None, help="actions at once (default 4)")
    w.add_argument("--attempts", type=int, default=None, help="runs before a message is dead-lettered (default 5)")
    w.add_argument("--backoff", type=float, default=None, help="first retry delay in seconds, doubling (default 1)")
    w.add_argument("--backoff-max", type=float, default=None, help="longest retry delay (default 60)")
    w.add_argument("--types", default=None, help="comma-separated message types to act on (default: wake)")
    w.add_argument("--group", default=None, help=f"the runner's consumer group (default {WAKE_GROUP})")
    w.add_argument("--start", choices=["earliest", "latest"], default=None, help="where a new group starts")
    w.add_argument("--visibility-timeout", type=float, default=None, help="lease seconds (default: 2 x timeout + 30)")
    w.add_argument("--stop-grace", type=float, default=None, help="seconds in-flight runs get on stop (default 10)")
    w.add_argument("--evidence-to", default=None, help="where evidence goes (default: each message's source)")
    w.add_argument("--no-evidence", action="store_true", default=None, help="publish no evidence messages")
    w.add_argument("--count", type=int, default=None, help="stop after this many runs")
    w.add_argument("--log-json", action="store_true", default=None, help="JSON log lines on stderr")
    w.set_defaults(func=lambda ctx: ctx.run(_wake), writes=True)
    watch = sub.add_parser(
        "watch", parents=[kernel_options], help="evaluate alert rules and publish alerts on sos:channel:alerts"
    )
    watch.add_argument("--config", default=None, help="a TOML file with a [watch] table (flags win)")
    watch.add_argument("--interval", type=float, default=None, help="seconds between evaluations (default 30)")
    watch.add_argument("--clear", type=float, default=None, help="seconds a condition stays away to resolve (60)")
    watch.add_argument("--source", default=None, help=f"the agent alerts come from (default {WATCHER_AGENT})")
    watch.add_argument("--channel", default=None, help=f"where alerts go (default {ALERTS_CHANNEL})")
    watch.add_argument(
        "--address", action="append", default=None, help="an address whose dead letters and pending deliveries to watch"
    )
    watch.add_argument("--stale-after", type=float, default=None, help="an agent silent this long is stale")
    watch.add_argument("--offline-after", type=float, default=None, help="an agent silent this long is offline")
    watch.add_argument("--webhook", default=None, help="also POST each alert here, signed with $SOS_WEBHOOK_SECRET")
    watch.add_argument("--webhook-secret-env", default=None, help="the variable holding the webhook secret")
    watch.add_argument("--once", action="store_true", help="evaluate once, print what was sent, exit")
    watch.add_argument("--log-json", action="store_true", default=None, help="JSON log lines on stderr")
    watch.set_defaults(func=lambda ctx: ctx.run(_watch), writes=True)
    _top.add_command(sub, kernel_options)
