"""What a wake runs: a command, a signed HTTP webhook, or a Python callable (see :mod:`sos_kernel.ops.wake`).

Every action gets a :class:`Job` (the message, its attempt, and the message id as the idempotency key) and returns
an :class:`Outcome`. An action never raises for the work failing: a non-zero exit, a timeout, an HTTP error or an
exception of the callable is an ``Outcome`` with ``ok=False`` and a reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

from ..contracts import Message
from ..errors import InvalidArgument, MissingDependency

__all__ = [
    "ACTION_TIMEOUT_S_MAX",
    "EXCERPT_BYTES_MAX",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_RETRIES_MAX",
    "Action",
    "CallableAction",
    "CommandAction",
    "Job",
    "Outcome",
    "WebhookAction",
    "sign_webhook",
    "verify_webhook",
]

ACTION_TIMEOUT_S_MAX = 3600.0
"""The longest a single action may run (a command is killed, a webhook call abandoned, at its timeout)."""
EXCERPT_BYTES_MAX = 16384
"""The most output an ``evidence`` message carries as its excerpt; the digest always covers the whole output."""
EXCERPT_BYTES_DEFAULT = 4096
WEBHOOK_RETRIES_MAX = 10
WEBHOOK_SKEW_S_MAX = 300
"""A receiver should refuse a webhook whose timestamp is further than this from its clock (replays)."""
SIGNATURE_HEADER = "X-SOS-Signature"
TIMESTAMP_HEADER = "X-SOS-Timestamp"
_READ_BYTES = 65536
_SECRET_ENV = ("SOS_TOKEN", "SOS_ADMIN_TOKEN", "SOS_WEBHOOK_SECRET")
"""The runner's own credentials: never handed to the commands it runs."""


@dataclass(frozen=True)
class Job:
    """One message to act on. ``idempotency_key`` is the message id: the same on every redelivery."""

    message: Message
    attempt: int
    agent: str

    @property
    def idempotency_key(self) -> str:
        """The message id: an action that may run twice for one message uses it to do the work once."""
        return self.message.message_id

    def env(self) -> dict[str, str]:
        """The ``SOS_*`` variables a command sees (ids and routing only; the message itself is on stdin)."""
        m = self.message
        return {
            "SOS_MESSAGE_ID": m.message_id,
            "SOS_IDEMPOTENCY_KEY": m.message_id,
            "SOS_MESSAGE_TYPE": m.type,
            "SOS_SOURCE": m.source,
            "SOS_TARGET": m.target,
            "SOS_AGENT": self.agent,
            "SOS_ATTEMPT": str(self.attempt),
            "SOS_TRACE_ID": m.trace_id or "",
        }


@dataclass(frozen=True)
class Outcome:
    """What one run of an action came to: ``exit_status`` (a command's; an HTTP status; 0/1 for a callable)."""

    ok: bool
    exit_status: int
    output_sha256: str
    output_bytes: int
    excerpt: bytes = b""
    reason: str | None = None
    duration_s: float = 0.0


class Action(Protocol):
    """An action: ``await action(job)`` runs it once; ``argv``/``command_line`` say what ran, for evidence."""

    argv: list[str] | None
    command_line: str | None

    async def __call__(self, job: Job) -> Outcome: ...


class _Digest:
    """The SHA-256 and size of all the output, and its first ``keep`` bytes."""

    def __init__(self, keep: int) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.keep = keep
        self.head = bytearray()

    def feed(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]

    def outcome(self, ok: bool, status: int, reason: str | None, started: float) -> Outcome:
        took = time.monotonic() - started
        return Outcome(ok, status, self.sha.hexdigest(), self.size, bytes(self.head), reason, took)


def _check_timeout(timeout_s: float) -> float:
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s <= ACTION_TIMEOUT_S_MAX
    ):
        raise InvalidArgument(f"timeout_s must be in (0, {ACTION_TIMEOUT_S_MAX}], got {timeout_s!r}")
    return float(timeout_s)


def _check_excerpt(excerpt_bytes: int) -> int:
    if (
        isinstance(excerpt_bytes, bool)
        or not isinstance(excerpt_bytes, int)
        or not 0 <= excerpt_bytes <= EXCERPT_BYTES_MAX
    ):
        raise InvalidArgument(f"excerpt_bytes must be 0..{EXCERPT_BYTES_MAX}, got {excerpt_bytes!r}")
    return excerpt_bytes


@dataclass
class CommandAction:
    """Run a command per message: the message's JSON on stdin, ``SOS_*`` ids in the environment.

    ``command`` is an argv list (run directly, no shell) or, with ``shell=True`` only, a shell command line. The
    command inherits the runner's environment minus the runner's credentials (``SOS_TOKEN``, ``SOS_ADMIN_TOKEN``,
    ``SOS_WEBHOOK_SECRET``), plus ``env`` and the job's variables. It runs in its own process group, which is
    killed (SIGKILL) at ``timeout_s``. Its stdout and stderr, combined, are hashed whole; the first
    ``excerpt_bytes`` are kept. Exit status 0 is success.
    """

    command: Sequence[str] | str
    shell: bool = False
    timeout_s: float = 60.0
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    excerpt_bytes: int = EXCERPT_BYTES_DEFAULT
    argv: list[str] | None = field(init=False, default=None)
    command_line: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.timeout_s = _check_timeout(self.timeout_s)
        self.excerpt_bytes = _check_excerpt(self.excerpt_bytes)
        if self.shell:
            if not isinstance(self.command, str) or not self.command.strip():
                raise InvalidArgument("with shell=True the command is one non-empty command line")
            self.command_line = self.command
        else:
            argv = shlex.split(self.command) if isinstance(self.command, str) else list(self.command)
            if not argv or not all(isinstance(a, str) for a in argv):
                raise InvalidArgument("the command is a non-empty list of strings (no shell unless shell=True)")
            self.argv = argv

    def _environment(self, job: Job) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
        return {**base, **self.env, **job.env()}

    async def __call__(self, job: Job) -> Outcome:
        started = time.monotonic()
        digest = _Digest(self.excerpt_bytes)
        program: str | list[str] = ["/bin/sh", "-c", self.command_line or ""] if self.shell else list(self.argv or [])
        process = await anyio.open_process(
            program,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self._environment(job),
            start_new_session=True,  # its own group: a timeout kills the command and what it started
        )
        timed_out = True
        try:
            with anyio.move_on_after(self.timeout_s):
                await self._talk(process, job.message.to_json(), digest)
                await process.wait()
                timed_out = False
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                with anyio.CancelScope(shield=True):
                    await process.wait()
            await process.aclose()
        status = int(process.returncode if process.returncode is not None else -signal.SIGKILL)
        if timed_out:
            return digest.outcome(False, status, f"timed out after {self.timeout_s:g} s", started)
        reason = None if status == 0 else f"exit status {status}"
        return digest.outcome(status == 0, status, reason, started)

    @staticmethod
    async def _talk(process: anyio.abc.Process, data: bytes, digest: _Digest) -> None:
        async def feed() -> None:
            if process.stdin is None:
                return
            try:
                await process.stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # the command need not read its stdin
            finally:
                await process.stdin.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            if process.stdout is not None:
                try:
                    while True:
                        digest.feed(await process.stdout.receive(_READ_BYTES))
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def sign_webhook(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-SOS-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp + "." + body``."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    skew_s: float = WEBHOOK_SKEW_S_MAX,
) -> bool:
    """Whether a received webhook is authentic and fresh (a receiver's check; see docs/operations.md)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > skew_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), signature)


def _redacted(url: str) -> str:
    """The URL without credentials or query (which may hold secrets): what evidence and logs show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class WebhookAction:
    """POST each message to ``url``, signed with HMAC-SHA256 so the receiver can check it came from this runner.

    The body is ``{"message": <wire>, "attempt": n, "idempotency_key": id}``; headers: ``X-SOS-Timestamp`` (Unix
    seconds), ``X-SOS-Signature`` (:func:`sign_webhook`), ``Idempotency-Key`` (the message id). A 2xx answer is
    success; a connection failure, a 408, 429 or 5xx is retried ``retries`` times with exponential backoff from
    ``backoff_s``; any other status fails at once. ``exit_status`` is the last HTTP status (0: no answer).
    """

    url: str
    secret: bytes | str
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5
    excerpt_bytes: int = EXCERPT_BYTES_DEFAULT
    argv: list[str] | None = field(init=False, default=None)
    command_line: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.url.lower().startswith(("http://", "https://")):
            raise InvalidArgument(f"a webhook URL is http(s)://..., got {_redacted(self.url)!r}")
        self.secret = self.secret.encode() if isinstance(self.secret, str) else self.secret
        if len(self.secret) < 16:
            raise InvalidArgument("a webhook secret is at least 16 bytes (e.g. secrets.token_hex(16))")
        if (
            isinstance(self.retries, bool)
            or not isinstance(self.retries, int)
            or not 0 <= self.retries <= WEBHOOK_RETRIES_MAX
        ):
            raise InvalidArgument(f"retries must be 0..{WEBHOOK_RETRIES_MAX}, got {self.retries!r}")
        self.timeout_s = _check_timeout(self.timeout_s)
        self.excerpt_bytes = _check_excerpt(self.excerpt_bytes)
        self.command_line = f"POST {_redacted(self.url)}"

    def _request(self, job: Job) -> tuple[bytes, dict[str, str]]:
        import json

        body = json.dumps(
            {"message": job.message.to_wire(), "attempt": job.attempt, "idempotency_key": job.idempotency_key},
            separators=(",", ":"),
        ).encode()
        stamp = str(int(time.time()))
        secret = self.secret if isinstance(self.secret, bytes) else self.secret.encode()
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign_webhook(secret, stamp, body),
            "Idempotency-Key": job.idempotency_key,
            "X-SOS-Message-Id": job.message.message_id,
        }
        return body, headers

    async def __call__(self, job: Job) -> Outcome:
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependency("webhooks need httpx", details={"pip": "pip install 'sos-kernel[client]'"}) from exc
        started = time.monotonic()
        failure = _Digest(0).outcome(False, 0, "not sent", started)
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(self.retries + 1):
                if attempt:
                    await anyio.sleep(self.backoff_s * 2 ** (attempt - 1))
                body, headers = self._request(job)  # signed afresh: the timestamp stays current
                digest = _Digest(self.excerpt_bytes)
                try:
                    response = await client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    failure = digest.outcome(False, 0, f"{type(exc).__name__} calling {_redacted(self.url)}", started)
                    continue
                digest.feed(response.content)
                status = response.status_code
                if 200 <= status < 300:
                    return digest.outcome(True, status, None, started)
                failure = digest.outcome(False, status, f"HTTP {status} from {_redacted(self.url)}", started)
                if status not in (408, 429) and status < 500:
                    break
        return failure


@dataclass
class CallableAction:
    """Call ``function(job)`` (sync or async) per message. It succeeds unless it raises; what it returns
    (``bytes``/``str`` output, or an ``int`` exit status, 0 meaning success) goes into the evidence."""

    function: Callable[[Job], Any] | Callable[[Job], Awaitable[Any]]
    timeout_s: float = 60.0
    excerpt_bytes: int = EXCERPT_BYTES_DEFAULT
    argv: list[str] | None = field(init=False, default=None)
    command_line: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise InvalidArgument("CallableAction takes a callable")
        self.timeout_s = _check_timeout(self.timeout_s)
        self.excerpt_bytes = _check_excerpt(self.excerpt_bytes)
        name = getattr(self.function, "__qualname__", type(self.function).__name__)
        self.command_line = f"python:{getattr(self.function, '__module__', '?')}.{name}"

    async def __call__(self, job: Job) -> Outcome:
        started = time.monotonic()
        digest = _Digest(self.excerpt_bytes)
        try:
            with anyio.fail_after(self.timeout_s):
                result = self.function(job)
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            return digest.outcome(False, 1, f"timed out after {self.timeout_s:g} s", started)
        except Exception as exc:
            return digest.outcome(False, 1, f"{type(exc).__name__}: {exc}"[:500], started)
        if isinstance(result, int) and not isinstance(result, bool):
            return digest.outcome(result == 0, result, None if result == 0 else f"returned {result}", started)
        if isinstance(result, str):
            result = result.encode()
        if isinstance(result, bytes):
            digest.feed(result)
        return digest.outcome(True, 0, None, started)
