"""``MumegaClient``: a kernel session on the far side of HTTP, with the same interface.

``async with MumegaClient(url, token) as client:`` gives ``client.bus``, ``client.registry``, ``client.ledger`` and
``client.skills`` with the methods, arguments, results and errors of ``await kernel.session(token)``: results are
the kernel's own classes (``PublishReceipt``, ``Transfer``, ``SkillCard``...) rebuilt from JSON, and a server
error is raised as the same :class:`~sos_kernel.errors.SOSError` subclass (via :func:`~sos_kernel.errors.from_wire`).

Retries are safe by construction: every call the client makes is idempotent, either by an id in its body
(message ids, transfer ids, usage ids...) or by an ``Idempotency-Key`` the client generates once per call and sends
with every attempt. A call is retried (``retries`` times, exponential backoff with jitter) only after a connection
error, a timeout, or a retryable error (SOS-5005, 6001, 6030, 7010, 7040); never after a bad input, an auth
refusal, an ask timeout or an offline agent, which would fail the same way again.

``subscribe()`` reads Server-Sent Events and reconnects (from the last position it received) when the connection
drops; the server keeps the subscription meanwhile, so deliveries are neither lost nor needlessly delayed. With
``transport=httpx.ASGITransport(app)`` (which hands over a response only once it is complete) it long-polls the
same endpoint instead.
"""

from __future__ import annotations

import inspect
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import quote

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import ValidationError

from sos_kernel import _trace, wire
from sos_kernel.api import (
    AuditAPI,
    BusAPI,
    EngineAPI,
    GovernanceAPI,
    LedgerAPI,
    MemoryAPI,
    ProvidersAPI,
    RegistryAPI,
    SkillsAPI,
    TasksAPI,
)
from sos_kernel.audit import Audit
from sos_kernel.backends import check_url
from sos_kernel.bus import (
    SETTLED_REPLY,
    UNHELD_REPLY,
    Bus,
    BusLimits,
    PublishReceipt,
    SubscriptionSpec,
    check_nack_delay,
    check_nack_reason,
    resolve_subscription,
    split_message,
)
from sos_kernel.contracts import (
    ChunkMessage,
    Message,
    TypeCatalogue,
)
from sos_kernel.errors import (
    AuthError,
    BackendFailure,
    BackendUnavailable,
    DeliveryFailed,
    Forbidden,
    InvalidArgument,
    InvalidToken,
    LedgerWriteFailed,
    RateLimited,
    SOSError,
    UsageNotPersisted,
    from_wire,
)
from sos_kernel.governance import Governance
from sos_kernel.identity.models import IssuedToken, Principal, PrincipalView, TokenInfo
from sos_kernel.identity.service import TOKEN_CHARS_MAX
from sos_kernel.ledger import Ledger
from sos_kernel.memory import Memory, MemoryRecord
from sos_kernel.memory.service import message_memory
from sos_kernel.operations import Operation, declared, operation_hints
from sos_kernel.providers import ChatReply, Engine, Providers
from sos_kernel.refusals import bad_url
from sos_kernel.registry import Registry
from sos_kernel.skills import SKILL_EVENT_TYPE, SkillExecutedPayload, Skills
from sos_kernel.tasks import Tasks

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_S",
    "POLL_S",
    "MumegaClient",
    "RemoteAudit",
    "RemoteBus",
    "RemoteChatStream",
    "RemoteDelivery",
    "RemoteEngine",
    "RemoteGovernance",
    "RemoteLedger",
    "RemoteMemory",
    "RemoteProviders",
    "RemoteRegistry",
    "RemoteSkills",
    "RemoteSubscription",
    "RemoteTasks",
    "RemoteTokens",
    "check_server_url",
]

BACKOFF_S = 0.05
"""The first retry's delay; each further retry doubles it (with jitter), up to ``BACKOFF_MAX_S``."""
BACKOFF_MAX_S = 2.0
POLL_S = 1.0
"""How long one long poll waits on the server when the transport cannot stream."""
ASK_MARGIN_S = 10.0
"""Added to an ask's own timeout for the HTTP call that waits for its reply."""
RETRIED = (RateLimited, DeliveryFailed, BackendUnavailable, LedgerWriteFailed, UsageNotPersisted)
"""Retryable errors worth retrying at once. AskTimeout and AgentOffline are retryable in the kernel's sense, but a
quick retry only repeats the wait or the refusal, so they are raised as they come."""


def _default_catalogue() -> TypeCatalogue:
    catalogue = TypeCatalogue()
    catalogue.register(SKILL_EVENT_TYPE, SkillExecutedPayload)
    return catalogue


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: wire.encode(v) for k, v in values.items() if v is not None}


def _unexpected(response: httpx.Response) -> SOSError:
    """An answer without the SOS envelope (a proxy, a crashed server): mapped into the error tree."""
    details = {"status": response.status_code, "body": response.text[:500]}
    if response.status_code in (502, 503, 504):
        return BackendUnavailable(f"the server answered HTTP {response.status_code}", details=details)
    return BackendFailure(f"the server answered HTTP {response.status_code} without an SOS error", details=details)


def _error_of(response: httpx.Response) -> SOSError:
    try:
        body = response.json()
    except ValueError:
        return _unexpected(response)
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return _unexpected(response)
    return from_wire(body)


SERVER_URLS = "a server URL: http(s)://host[:port], like http://127.0.0.1:6060"
"""What a server URL looks like, as refusals say it."""


def check_server_url(url: str) -> str:
    """``url`` if it is an ``http(s)://`` URL with a host; else SOS-4006 at once (not a retried connection error),
    with the URL probably meant (``127.0.0.1:6060`` -> ``http://127.0.0.1:6060``)."""
    parts = check_url(url, "URL", SERVER_URLS)
    if parts.scheme.lower() in ("http", "https") and parts.hostname:
        return url
    meant = f"http://{url}" if isinstance(url, str) and "://" not in url and url.strip() else None
    raise bad_url("URL", url, SERVER_URLS, meant)


def _sendable_token(token: object) -> bool:
    return (
        isinstance(token, str)
        and len(token) <= TOKEN_CHARS_MAX
        and token.isascii()
        and token.isprintable()
        and (" " not in token)
    )


class MumegaClient(PrincipalView):
    """A remote session: ``MumegaClient(base_url, token)`` used as ``async with`` (or closed with ``aclose()``).

    ``transport`` replaces the network (``httpx.ASGITransport(app)`` runs a server in-process); ``timeout_s``
    bounds each HTTP call (an ``ask`` waits its own timeout on top); ``retries`` is how many times a failed call is
    tried again when that is safe (see the module docstring). ``catalogue`` must know any custom message type the
    server delivers; ``limits`` are the bus limits ``bus.split`` cuts by (the kernel's defaults).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        catalogue: TypeCatalogue | None = None,
        limits: BusLimits | None = None,
    ) -> None:
        if not isinstance(retries, int) or retries < 0:
            raise InvalidArgument("retries must be an int >= 0")
        # A token no HTTP header can carry (control characters, spaces, non-ASCII, over-long) is not sent: every
        # call raises SOS-5002 here, as the kernel refuses it in-process, instead of failing in the transport.
        self._bad_token = bool(token) and not _sendable_token(token)
        headers = {"authorization": f"Bearer {token}"} if token and not self._bad_token else {}
        check_server_url(base_url)  # SOS-4006 here, not a transport error at the first call
        self.base_url = base_url
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.catalogue = catalogue or _default_catalogue()
        self.limits = limits or BusLimits()
        self.streaming = not isinstance(transport, httpx.ASGITransport)
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout_s, headers=headers)
        self._principal: Principal | None = None
        self.denials = 0
        """Calls this client made that the server refused with SOS-5004 (like ``session.denials``)."""
        self.bus = cast(BusAPI, RemoteBus(self))
        self.registry = cast(RegistryAPI, RemoteRegistry(self))
        self.ledger = cast(LedgerAPI, RemoteLedger(self))
        self.skills = cast(SkillsAPI, RemoteSkills(self))
        self.providers = cast(ProvidersAPI, RemoteProviders(self))
        self.engine = cast(EngineAPI, RemoteEngine(self))
        self.tasks = cast(TasksAPI, RemoteTasks(self))
        self.memory = cast(MemoryAPI, RemoteMemory(self))
        self.governance = cast(GovernanceAPI, RemoteGovernance(self))
        self.audit = cast(AuditAPI, RemoteAudit(self))
        self.tokens = RemoteTokens(self)

    async def connect(self) -> MumegaClient:
        """Check the token with the server (``GET /v1/session``) and learn its principal; done by ``async with``.

        Raises what ``await kernel.session(token)`` raises: SOS-5001 (no token), 5002 (unknown or revoked), 5003
        (expired), 5006 (tenant not active); SOS-6030 when the server cannot be reached.
        """
        await self.refresh()
        return self

    def __await__(self) -> Generator[Any, None, MumegaClient]:
        return self.connect().__await__()

    async def __aenter__(self) -> MumegaClient:
        try:
            return await self.connect()
        except BaseException:
            await self.aclose()
            raise

    async def refresh(self) -> Principal:
        """Re-validate the token now (see :meth:`Session.refresh`); its principal."""
        found = await self.call("GET", "/v1/session")
        self._principal = wire.load_principal(found)
        return self._principal

    @property
    def principal(self) -> Principal:
        """Who the token is, as of the last :meth:`connect` or :meth:`refresh`."""
        if self._principal is None:
            raise InvalidArgument("the client is not connected; use 'async with MumegaClient(...)' or 'await'")
        return self._principal

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections. Idempotent."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"MumegaClient({self.base_url!r})"

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying httpx client (for routes this client does not wrap)."""
        return self._http

    async def backoff(self, attempt: int) -> None:
        """Sleep before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
        delay = min(BACKOFF_MAX_S, BACKOFF_S * 2**attempt)
        await anyio.sleep(delay * (0.5 + random.random() / 2))  # jitter, not a secret

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        keyed: bool = False,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call with safe retries; the decoded JSON answer (None for 204), or the server's SOSError.

        ``keyed`` sends one ``Idempotency-Key`` with every attempt (for writes without an id of their own);
        ``headers`` are added to the request (``authorization`` replaces the client's token for this call).
        """
        if self._bad_token and not (headers and "authorization" in headers):
            raise InvalidToken("the token is malformed (expected sk-<tenant>-<32 hex>)")
        keys = {"idempotency-key": uuid.uuid4().hex} if keyed else {}
        headers = {**_trace.inject(), **(headers or {}), **keys} or None  # the caller's span continues server-side
        timeout = self.timeout_s if timeout_s is None else timeout_s
        content = None
        if body is not None:  # text that is not Unicode travels escaped, for the server to refuse as in-process
            content = wire.json_bytes(body)
            headers = {**(headers or {}), "content-type": "application/json"}
        request = self._http.build_request(
            method, path, content=content, params=params, headers=headers, timeout=timeout
        )
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise BackendUnavailable(f"cannot reach {self.base_url}: {exc!r}") from exc
                await self.backoff(attempt)
                continue
            if response.status_code < 400:
                return None if response.status_code == 204 or not response.content else response.json()
            error = _error_of(response)
            if isinstance(error, Forbidden):
                self.denials += 1  # as ``session.denials`` counts the refusals of an in-process session
            if not isinstance(error, RETRIED) or attempt >= self.retries:
                raise error
            await self.backoff(attempt)
        raise BackendUnavailable(f"no answer from {self.base_url}")  # unreachable: the loop returns or raises


class _Service:
    def __init__(self, client: MumegaClient) -> None:
        self._client = client

    async def _get(self, path: str, **params: Any) -> Any:
        return await self._client.call("GET", path, params=_given(params))

    async def _post(self, path: str, body: Any = None, *, keyed: bool = False, timeout_s: float | None = None) -> Any:
        return await self._client.call("POST", path, body=body, keyed=keyed, timeout_s=timeout_s)


class _RemoteBusLocal(_Service):
    """What the remote bus computes or holds on the client's side: ``split`` and ``subscribe``."""

    def split(self, message: Message) -> list[ChunkMessage]:
        """See :meth:`Bus.split` (computed here with the client's ``limits``; no round trip)."""
        return split_message(message, self._client.limits)

    def subscribe(
        self,
        address: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        visibility_timeout_s: float = 30.0,
        max_deliveries: int = 5,
        prefetch: int = 16,
        start: Literal["earliest", "latest"] | None = None,
    ) -> RemoteSubscription:
        """See :meth:`Bus.subscribe`; use as ``async with client.bus.subscribe(addr) as sub: async for d in sub``.

        The arguments are checked here as in-process (SOS-4005 at once) and default group and consumer names are
        chosen here, so ``sub.group`` and ``sub.consumer`` are known before the first connection.
        """
        spec = resolve_subscription(
            address,
            self._client.limits,
            group=group,
            consumer=consumer,
            visibility_timeout_s=visibility_timeout_s,
            max_deliveries=max_deliveries,
            prefetch=prefetch,
            start=start,
        )
        return RemoteSubscription(self._client, spec)


class RemoteDelivery:
    """A delivery read from the server's stream: ``message``, ``attempt``, ``position``; ``ack()`` / ``nack()``.

    ``lease_token`` is the token the server gave this hand-out (see :attr:`Delivery.lease_token`); settling shows it.
    """

    __slots__ = (
        "_client",
        "_done",
        "address",
        "attempt",
        "consumer",
        "group",
        "lease_token",
        "message",
        "position",
    )

    def __init__(self, client: MumegaClient, sub: RemoteSubscription, data: Mapping[str, Any]) -> None:
        self._client = client
        self._done = False
        self.message = wire.load_message(data["message"], client.catalogue)
        self.position = str(data["position"])
        self.attempt = int(data["attempt"])
        self.lease_token = str(data["lease_token"])
        self.address = sub.address
        self.group = sub.group
        self.consumer = sub.consumer

    def __repr__(self) -> str:
        return (
            f"RemoteDelivery(type={self.message.type!r}, message_id={self.message.message_id!r}, "
            f"position={self.position!r}, attempt={self.attempt})"
        )

    def _key(self) -> dict[str, str]:
        return {
            "address": self.address,
            "group": self.group,
            "position": self.position,
            "lease_token": self.lease_token,
        }

    async def ack(self) -> bool:
        """See :meth:`Delivery.ack`."""
        if self._done:
            return False
        self._done = True
        try:
            answer = await self._client.call("POST", "/v1/bus/ack", body=self._key(), keyed=True)
        except BaseException:
            self._done = False  # not settled: ack or nack it again
            raise
        return bool(answer["acked"])

    async def nack(self, delay_s: float = 0.0, *, reason: str | None = None) -> bool:
        """See :meth:`Delivery.nack`."""
        delay_s = check_nack_delay(delay_s)
        reason = check_nack_reason(reason)
        if self._done:
            return False
        self._done = True
        body: dict[str, Any] = {**self._key(), "delay_s": delay_s}
        if reason is not None:
            body["reason"] = reason
        try:
            answer = await self._client.call("POST", "/v1/bus/nack", body=body, keyed=True)
        except BaseException:
            self._done = False
            raise
        return bool(answer["nacked"])

    async def reply(
        self,
        text: str,
        *,
        source: str | None = None,
        content_type: Literal["text/plain", "text/markdown"] = "text/plain",
    ) -> PublishReceipt:
        """See :meth:`Delivery.reply`: one call (``POST /v1/bus/reply-ack``), the reply stored and the delivery
        acked in one store step, or neither."""
        if self._done:
            raise InvalidArgument(SETTLED_REPLY)
        self._done = True
        body: dict[str, Any] = {**self._key(), "text": text, "content_type": content_type}
        if source is not None:
            body["source"] = source
        try:
            answer = await self._client.call("POST", "/v1/bus/reply-ack", body=body, keyed=True)
        except InvalidArgument as exc:
            self._done = exc.message == UNHELD_REPLY  # no longer held: settled; any other refusal: reply again
            raise
        except BaseException:
            self._done = False
            raise
        return wire.load_receipt(answer)


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` pairs of a Server-Sent Events stream (comments skipped, data lines joined)."""
    event, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


class RemoteSubscription:
    """A subscription read over SSE; ``async with`` it, then ``async for delivery in sub`` or ``receive()``.

    A reader task (owned by the ``async with``) keeps up to ``prefetch`` deliveries at hand and reconnects after a
    dropped connection (``retries`` consecutive failures end the subscription with the error, raised by
    ``receive``). Closing gives back the deliveries read but not yet handed to you and closes the server's side.
    """

    def __init__(self, client: MumegaClient, spec: SubscriptionSpec) -> None:
        self._client = client
        self.spec = spec
        self.address = spec.address
        self.group = spec.group
        self.consumer = spec.consumer
        self.visibility_timeout_s = spec.visibility_timeout_s
        self.max_deliveries = spec.max_deliveries
        self.prefetch = spec.prefetch
        self.start = spec.start
        self.temporary = spec.temporary
        self.subscription: str | None = None
        self._last_id: str | None = None
        self._error: SOSError | None = None
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._inbox: MemoryObjectReceiveStream[RemoteDelivery] | None = None
        self._closed = False

    def _params(self, first: bool) -> dict[str, Any]:
        spec = self.spec
        params: dict[str, Any] = {
            "address": spec.address,
            "group": spec.group,
            "consumer": spec.consumer,
            "visibility_timeout_s": spec.visibility_timeout_s,
            "max_deliveries": spec.max_deliveries,
            "prefetch": spec.prefetch,
            "start": spec.start,
            "subscription": self.subscription,
        }
        if not self._client.streaming:
            params["poll_s"] = 0.0 if first else POLL_S
        return _given(params)

    async def _connect(self, first: bool = False) -> httpx.Response:
        headers = {"last-event-id": self._last_id} if self._last_id else {}
        timeout = httpx.Timeout(self._client.timeout_s, read=None)
        request = self._client.http.build_request(
            "GET", "/v1/bus/subscribe", params=self._params(first), headers=headers, timeout=timeout
        )
        response = await self._client.http.send(request, stream=True)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise _error_of(response)
        return response

    async def open(self) -> RemoteSubscription:
        """Connect (raising the server's refusal, e.g. SOS-5004) and start reading. Called by ``async with``."""
        if self._stack is not None:
            raise InvalidArgument("this subscription is already open")
        response = await self._connect(first=True)
        send, self._inbox = anyio.create_memory_object_stream[RemoteDelivery](self.prefetch)
        self._stack = AsyncExitStack()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._read, send, response)
        return self

    async def __aenter__(self) -> RemoteSubscription:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> RemoteSubscription:
        return self

    async def __anext__(self) -> RemoteDelivery:
        delivery = await self.receive()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def receive(self, timeout_s: float | None = None) -> RemoteDelivery | None:
        """The next delivery; None when ``timeout_s`` passes first or the subscription ends."""
        if self._inbox is None:
            raise InvalidArgument("use the subscription inside 'async with client.bus.subscribe(...)'")
        with anyio.move_on_after(timeout_s):
            try:
                return await self._inbox.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._error is not None:
                    raise self._error from None
                return None
        return None

    async def _read(self, send: MemoryObjectSendStream[RemoteDelivery], response: httpx.Response | None) -> None:
        failures = 0
        failing_since = 0.0
        async with send:
            try:
                while True:
                    if response is None:
                        try:
                            response = await self._connect()
                        except (httpx.TransportError, *RETRIED) as exc:
                            failures, failing_since = failures + 1, failing_since or anyio.current_time()
                            self._give_up_after(failures, failing_since, exc)
                            await self._client.backoff(failures - 1)
                            continue
                    try:
                        await self._drain(response, send)
                        failures, failing_since = 0, 0.0
                    except (httpx.TransportError, *RETRIED) as exc:
                        # a dropped stream, or the server's store unreachable for longer than it waits: reconnect
                        failures, failing_since = failures + 1, failing_since or anyio.current_time()
                        self._give_up_after(failures, failing_since, exc)
                        await self._client.backoff(failures - 1)
                    finally:
                        await response.aclose()
                    response = None
            except SOSError as exc:
                self._error = exc

    def _give_up_after(self, failures: int, failing_since: float, exc: Exception) -> None:
        """Raise once ``retries`` attempts have failed in a row and ``limits.reconnect_s_max`` has passed since the
        first of them: a server or store restart within that time is ridden out."""
        if failures <= self._client.retries:
            return
        if anyio.current_time() - failing_since < self._client.limits.reconnect_s_max:
            return
        if isinstance(exc, SOSError):
            raise exc
        raise BackendUnavailable(f"subscription lost: {exc!r}") from exc

    async def _drain(self, response: httpx.Response, send: MemoryObjectSendStream[RemoteDelivery]) -> None:
        async for event, data in _sse(response.aiter_lines()):
            body = json.loads(data)
            if event == "delivery":
                delivery = RemoteDelivery(self._client, self, body)
                await send.send(delivery)
                self._last_id = delivery.position
            elif event == "subscribed":
                self.subscription = body["subscription"]
            elif event == "error":
                raise from_wire(body)

    async def aclose(self) -> None:
        """Stop reading, give back what was read but not handed out, and close the server's side. Idempotent."""
        if self._closed or self._stack is None:
            self._closed = True
            return
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        if isinstance(self._error, AuthError) and self._inbox is not None:
            # the server ended the stream for the token and closed its side: the token can do no more
            self._inbox.close()
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._client.timeout_s):
            await self._give_back()

    async def _give_back(self) -> None:
        if self._inbox is not None:
            while True:
                try:
                    delivery = self._inbox.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                await delivery.nack()
            self._inbox.close()
        if self.subscription is not None:
            await self._client.call("DELETE", f"/v1/bus/subscriptions/{self.subscription}")


class _RemoteMemoryLocal(_Service):
    """What the remote memory computes on the client's side: ``remember_message`` (one ``remember`` call)."""

    async def remember_message(
        self,
        message: Message,
        *,
        namespace: str | None = None,
        ttl_s: float | None = None,
        capability: Sequence[Any] | None = None,
    ) -> MemoryRecord:
        """See :meth:`Memory.remember_message` (the text and metadata are taken here; one ``remember`` call)."""
        default, text, metadata = message_memory(message)
        remember = getattr(self, "remember")  # noqa: B009 -- derived from the declarations below
        record: MemoryRecord = await remember(
            namespace or default,
            text,
            id=str(message.message_id),
            metadata=metadata,
            ttl_s=ttl_s,
            capability=capability,
        )
        return record


class RemoteTokens(_Service):
    """The tenant's tokens over HTTP (the token's ``admin`` scope): the methods of ``kernel.tenant(slug).tokens``."""

    async def issue(
        self,
        *,
        agent: str | None = None,
        scopes: Sequence[str] | None = None,
        expires_in_s: int | None = None,
        label: str = "",
    ) -> IssuedToken:
        """See :meth:`Tokens.issue`; the secret is in the result only (sent once, with an Idempotency-Key)."""
        body = _given({"agent": agent, "scopes": list(scopes) if scopes is not None else None})
        body.update(_given({"expires_in_s": expires_in_s}))
        body["label"] = label
        return wire.load_issued_token(await self._post("/v1/tokens", body, keyed=True))

    async def list(self) -> list[TokenInfo]:
        """See :meth:`Tokens.list` (never secrets)."""
        return [wire.load_token_info(t) for t in await self._get("/v1/tokens")]

    async def revoke(self, token_id: str) -> None:
        """See :meth:`Tokens.revoke` (SOS-4040 when no live token has this id)."""
        await self._client.call("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")


def _query(value: Any) -> Any:
    """A query parameter's text (None: left out)."""
    encoded = wire.encode(value)
    if isinstance(encoded, bool):
        return "true" if encoded else "false"
    if isinstance(encoded, list):
        return [_query(v) for v in encoded]
    return encoded


def _remote_method(op: Operation) -> Callable[..., Any]:
    signature = op.signature
    _, result = operation_hints(op)
    route = op.wire
    if route is None:  # pragma: no cover - local operations are written on the remote class
        raise TypeError(f"{op.name} has no route")
    extra = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    wait_default = signature.parameters[route.wait].default if route.wait else None

    async def method(self: _Service, *args: Any, **kwargs: Any) -> Any:
        arguments = dict(signature.bind(*args, **kwargs).arguments)
        if extra is not None:
            arguments.update(arguments.pop(extra, {}))
        client = self._client
        timeout = None
        if route.wait is not None:
            wait = arguments.get(route.wait, wait_default)
            wait = wait if isinstance(wait, int | float) and not isinstance(wait, bool) else 0.0
            timeout = max(client.timeout_s, float(wait) + ASK_MARGIN_S)
        if route.method == "GET":
            params = {k: _query(v) for k, v in arguments.items() if v is not None}
            data = await client.call("GET", op.path, params=params, timeout_s=timeout)
        else:
            body = {k: wire.encode(v) for k, v in arguments.items()}
            data = await client.call("POST", op.path, body=body, keyed=route.keyed, timeout_s=timeout)
        try:
            return wire.load(result, data, client.catalogue)
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            raise BackendFailure(f"the server's answer to {op.name} is not a {result}: {exc}") from exc

    method.__name__ = method.__qualname__ = op.name
    method.__doc__ = f"See :meth:`{op.function.__qualname__}` (over HTTP: {route.method} {op.path})."
    method.__signature__ = inspect.signature(op.function)  # type: ignore[attr-defined]
    return method


def _remote_class(name: str, service: type, base: type[_Service] = _Service) -> type[_Service]:
    """A class with a method per routed operation of ``service``, each one HTTP call (see the module docstring)."""
    methods = {n: _remote_method(op) for n, op in declared(service).items() if op.wire is not None}
    doc = f"The session {service.__name__.lower()} over HTTP: the operations of :class:`{service.__qualname__}`."
    return type(name, (base,), {"__doc__": doc, "__module__": __name__, **methods})


RemoteBus = _remote_class("RemoteBus", Bus, _RemoteBusLocal)
RemoteRegistry = _remote_class("RemoteRegistry", Registry)
RemoteLedger = _remote_class("RemoteLedger", Ledger)
RemoteSkills = _remote_class("RemoteSkills", Skills)
RemoteProviders = _remote_class("RemoteProviders", Providers)
_RemoteEngineDerived = _remote_class("_RemoteEngineDerived", Engine)


class RemoteChatStream:
    """A chat streamed over SSE (``POST /v1/engine/chat/stream``): ``async for text in stream``, then ``reply``."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._events = _sse(response.aiter_lines())
        self.reply: ChatReply | None = None
        self.provider = str(response.headers.get("x-sos-provider", ""))
        self.tried = tuple(p for p in str(response.headers.get("x-sos-tried", "")).split(",") if p)

    def __repr__(self) -> str:
        return f"RemoteChatStream(done={self.reply is not None})"

    def __aiter__(self) -> RemoteChatStream:
        return self

    async def __anext__(self) -> str:
        async for event, data in self._events:
            if event == "piece":
                return str(json.loads(data)["text"])
            if event == "reply":
                self.reply = ChatReply.model_validate_json(data)
                self.provider, self.tried = self.reply.provider, self.reply.tried
            elif event == "error":
                raise from_wire(json.loads(data))
        await self.aclose()
        raise StopAsyncIteration

    async def __aenter__(self) -> RemoteChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the connection (idempotent)."""
        await self._response.aclose()

    async def collect_reply(self) -> ChatReply:
        """Read to the end and return the reply."""
        async for _ in self:
            pass
        if self.reply is None:
            raise BackendFailure("the server's stream ended without a reply")
        return self.reply


class RemoteEngine(_RemoteEngineDerived):  # type: ignore[misc,valid-type]
    """The session engine over HTTP: ``chat`` (``POST /v1/engine/chat``), and with ``stream=True`` over SSE.

    A call without ``id`` is given one here, so the client's own retries are charged once."""

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        tier: str | None = None,
        id: str | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        agent: str | None = None,
    ) -> Any:
        """See :meth:`sos_kernel.providers.Engine.chat`."""
        args: dict[str, Any] = {"messages": messages, "model": model, "tier": tier, "id": id or uuid.uuid4().hex}
        args.update({"max_tokens": max_tokens, "agent": agent})
        if not stream:  # the declared result is a union with the stream: rebuild the reply here
            found = await super().chat(**args)
            return found if isinstance(found, ChatReply) else ChatReply.model_validate(found)
        client = self._client
        body = {k: wire.encode(v) for k, v in args.items() if v is not None}
        timeout = httpx.Timeout(client.timeout_s, read=None)
        request = client.http.build_request("POST", "/v1/engine/chat/stream", json=body, timeout=timeout)
        response = await client.http.send(request, stream=True)
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            error = _error_of(response)
            if isinstance(error, Forbidden):
                client.denials += 1
            raise error
        return RemoteChatStream(response)


RemoteTasks = _remote_class("RemoteTasks", Tasks)
RemoteMemory = _remote_class("RemoteMemory", Memory, _RemoteMemoryLocal)
RemoteGovernance = _remote_class("RemoteGovernance", Governance)
RemoteAudit = _remote_class("RemoteAudit", Audit)


if TYPE_CHECKING:  # mypy proves the client has the session's surface (sos_kernel.api)
    from sos_kernel.api import SessionAPI, SubscriptionAPI

    def _client_is_an_api(client: MumegaClient) -> SessionAPI:
        return client

    def _remote_subscription(sub: RemoteSubscription) -> SubscriptionAPI:
        return sub
