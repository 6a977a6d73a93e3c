"""A remote A2A agent as a peer of kernel agents, through the ``a2a-sdk`` client.

``A2AAgent(url, token=...)`` resolves the agent's card at ``url`` + the well-known path, then ``ask`` sends a
message (``message/send``) and returns the text of its answer. ``serve(bus, address)`` makes it a peer on the
bus: every ``ask`` or ``send`` that reaches ``address`` is forwarded to the remote agent and its answer is the
reply, so kernel agents talk to it as to any other agent. Errors are SOS errors: no answer in time SOS-6004, a
task the remote agent failed or rejected SOS-6031 (its state and reason in ``details``), an agent that cannot be
reached SOS-6030 (retryable), an answer that is not JSON the kernel takes (a key named twice, ``NaN``, not JSON
at all) SOS-6031.

Every answer body of the remote agent (its card, each JSON-RPC answer, each event of an event-stream body) is read
whole, at most ``A2A_ANSWER_BYTES_MAX`` bytes, and passes :func:`sos_kernel._json.loads` in the HTTP transport
before the ``a2a-sdk`` client reads it: the SDK reads bodies with ``response.json()`` (the last of two copies of a
key wins) and hands protobuf the parsed dict, so its own duplicate check (``json_format.Parse`` on text) never runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from a2a.client import A2ACardResolver, A2AClientError, A2AClientTimeoutError, Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_artifact_text, get_message_text, new_text_message
from a2a.types import GetTaskRequest, Role, SendMessageConfiguration, SendMessageRequest, Task, TaskState
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct

from ..._json import loads
from ...api import BusAPI
from ...contracts import AskMessage, SendMessage
from ...errors import AskTimeout, BackendFailure, BackendUnavailable, InvalidArgument, SchemaViolation, SOSError
from ._limits import A2A_ANSWER_BYTES_MAX, A2A_ASK_TIMEOUT_S, A2A_ASK_TIMEOUT_S_MAX

__all__ = ["A2AAgent"]

_HTTP_SLACK_S = 5.0
"""How much longer the HTTP call may take than the answer it waits for (the server's own bookkeeping)."""
_ANSWERED = frozenset({TaskState.TASK_STATE_COMPLETED})


class _CheckedAnswers(httpx.AsyncBaseTransport):
    """An HTTP transport that reads each answer whole (at most ``bytes_max``, raw and decoded) and refuses, as the
    remote agent's failure (SOS-6031), one whose JSON the kernel's parser refuses."""

    def __init__(self, url: str, bytes_max: int) -> None:
        self._url, self._bytes_max = url, bytes_max
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        try:
            raw = await _capped(response.aiter_raw(), self._url, self._bytes_max)
        finally:
            await response.aclose()
        answer = httpx.Response(
            response.status_code, headers=response.headers, stream=httpx.ByteStream(raw), extensions=response.extensions
        )
        decoding = httpx.Response(200, headers=response.headers, content=raw)  # content-encoding undone, bounded
        decoded = await _capped(decoding.aiter_bytes(), self._url, self._bytes_max)
        if response.is_success:  # an error status is the SDK's HTTP error, whatever its body
            _check_json(decoded, response.headers.get("content-type", ""), self._url)
        return answer

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _capped(chunks: AsyncIterator[bytes], url: str, most: int) -> bytes:
    """The bytes of ``chunks``; SOS-6031 past ``most``."""
    found, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > most:
            raise BackendFailure(
                f"the A2A agent at {url} answered over {most} bytes", details={"url": url, "limit": most}
            )
        found.append(chunk)
    return b"".join(found)


def _check_json(body: bytes, content_type: str, url: str) -> None:
    """SOS-6031 unless the body (or each event's data, for an event stream) is JSON :func:`loads` takes.

    The SDK reads every successful answer as JSON (``response.json()``, or each event's data when the content type
    names ``text/event-stream``, tested as the SDK tests it), and Python's ``json`` takes what the kernel refuses
    (``NaN``, ``Infinity``, a key named twice), so any body the kernel's parser refuses, for any reason, is the
    remote agent's failure: none is left for the SDK to read differently.
    """
    texts = _event_data(body) if "text/event-stream" in content_type else [body]
    for text in texts:
        try:
            loads(text)
        except SchemaViolation as exc:
            raise BackendFailure(
                f"the A2A agent at {url} gave a malformed answer: {exc.message}",
                details={"url": url, "errors": exc.details.get("errors", [])},
            ) from exc
        except ValueError as exc:
            raise BackendFailure(
                f"the A2A agent at {url} gave an answer that is not JSON: {exc}", details={"url": url}
            ) from exc


def _event_data(body: bytes) -> list[bytes]:
    """Each event's data (its ``data:`` lines joined) of an event-stream body."""
    events: list[bytes] = []
    data: list[bytes] = []
    for line in [*body.splitlines(), b""]:
        if not line.strip():
            if data:
                events.append(b"\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
    return events


def _text_of(task: Task) -> str:
    texts = [get_artifact_text(a) for a in task.artifacts]
    if texts:
        return "\n".join(texts)
    return get_message_text(task.status.message)


class A2AAgent:
    """One remote A2A agent. Use it as ``async with A2AAgent(url, token=...) as agent`` (or call ``aclose``).

    ``url`` is the agent's base URL (its card is at ``url`` + ``a2a.utils.AGENT_CARD_WELL_KNOWN_PATH``);
    ``token`` is sent as ``Authorization: Bearer`` on every request, ``headers`` too. ``timeout_s`` is how long
    ``ask`` waits for an answer unless told otherwise (at most ``A2A_ASK_TIMEOUT_S_MAX``). ``answer_bytes_max`` bounds
    each answer body read (at most ``A2A_ANSWER_BYTES_MAX``): a larger one is SOS-6031.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = A2A_ASK_TIMEOUT_S,
        answer_bytes_max: int = A2A_ANSWER_BYTES_MAX,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"an A2A agent's url is an http(s) URL, got {url!r}", details={"field": "url"})
        self.url = url
        self.timeout_s = self._check_timeout(timeout_s)
        sent = dict(headers or {})
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        if type(answer_bytes_max) is not int or not 0 < answer_bytes_max <= A2A_ANSWER_BYTES_MAX:
            raise InvalidArgument(
                f"answer_bytes_max must be an int in 1..{A2A_ANSWER_BYTES_MAX}, got {answer_bytes_max!r}",
                details={"field": "answer_bytes_max", "max": A2A_ANSWER_BYTES_MAX},
            )
        transport = _CheckedAnswers(url, answer_bytes_max)
        self._http = httpx.AsyncClient(headers=sent, timeout=self.timeout_s + _HTTP_SLACK_S, transport=transport)
        self._client: Client | None = None
        self.card: dict[str, Any] = {}
        """The agent's A2A card (ProtoJSON), once opened."""

    @staticmethod
    def _check_timeout(timeout_s: float) -> float:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            raise InvalidArgument(f"timeout_s must be a number, got {timeout_s!r}", details={"field": "timeout_s"})
        if not 0 < timeout_s <= A2A_ASK_TIMEOUT_S_MAX:
            raise InvalidArgument(
                f"timeout_s must be in (0, {A2A_ASK_TIMEOUT_S_MAX}], got {timeout_s!r}",
                details={"field": "timeout_s", "max": A2A_ASK_TIMEOUT_S_MAX},
            )
        return float(timeout_s)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Resolve the agent's card and build the client: SOS-6030 when the agent cannot be reached, SOS-6031 when
        it answers no card (a 401, a 404); either way the agent is then closed."""
        if self._client is not None:
            return
        try:
            card = await A2ACardResolver(self._http, self.url).get_agent_card()
        except BackendFailure:
            await self._http.aclose()
            raise
        except (A2AClientError, httpx.HTTPError) as exc:
            await self._http.aclose()  # a failed open closes the agent: nothing is left open
            unreachable = isinstance(exc, httpx.TransportError) or isinstance(exc.__cause__, httpx.TransportError)
            error = BackendUnavailable if unreachable else BackendFailure
            raise error(f"cannot resolve the A2A agent card at {self.url}: {exc}", details={"url": self.url}) from exc
        self._client = ClientFactory(ClientConfig(httpx_client=self._http, streaming=False)).create(card)
        self.card = MessageToDict(card)

    async def aclose(self) -> None:
        """Close the client and its HTTP connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        await self._http.aclose()

    def _ready(self) -> Client:
        if self._client is None:
            raise InvalidArgument("use the agent inside 'async with A2AAgent(...)' (or await open() first)")
        return self._client

    async def _send(self, text: str, timeout_s: float, *, wait: bool) -> Task:
        message = new_text_message(text, role=Role.ROLE_USER)
        metadata = Struct()
        metadata.update({"timeout_s": timeout_s})
        request = SendMessageRequest(
            message=message, configuration=SendMessageConfiguration(return_immediately=not wait), metadata=metadata
        )
        try:
            async for event in self._ready().send_message(request):
                if event.HasField("task"):
                    return event.task
                if event.HasField("message"):
                    return Task(status={"state": TaskState.TASK_STATE_COMPLETED, "message": event.message})
        except A2AClientTimeoutError as exc:
            raise AskTimeout(f"no answer from the A2A agent at {self.url} within {timeout_s}s") from exc
        except (A2AClientError, httpx.HTTPError) as exc:
            raise BackendUnavailable(f"the A2A agent at {self.url} failed: {exc}", details={"url": self.url}) from exc
        raise BackendFailure(f"the A2A agent at {self.url} answered nothing", details={"url": self.url})

    async def ask(self, text: str, *, timeout_s: float | None = None) -> str:
        """Send ``text`` and return the answer's text (its artifacts', else its status message's).

        Raises SOS-6004 when no answer comes within ``timeout_s`` (default: the agent's ``timeout_s``), SOS-6031
        when the remote agent fails, rejects or cancels the task (``details``: ``state``, ``reason``), SOS-6030
        when it cannot be reached.
        """
        wait_s = self.timeout_s if timeout_s is None else self._check_timeout(timeout_s)
        task = await self._send(text, wait_s, wait=True)
        state = TaskState.Name(task.status.state)
        reason = get_message_text(task.status.message)
        if task.status.state in _ANSWERED:
            return _text_of(task)
        if task.status.state == TaskState.TASK_STATE_FAILED and reason.startswith(AskTimeout.code):
            raise AskTimeout(f"the A2A agent at {self.url}: {reason}", details={"task_id": task.id})
        raise BackendFailure(
            f"the A2A agent at {self.url} ended task {task.id} {state}: {reason}",
            details={"task_id": task.id, "state": state, "reason": reason},
        )

    async def send(self, text: str, *, timeout_s: float | None = None) -> str:
        """Send ``text`` without waiting for the answer; returns the task id to ``get_task`` later."""
        wait_s = self.timeout_s if timeout_s is None else self._check_timeout(timeout_s)
        return (await self._send(text, wait_s, wait=False)).id

    async def get_task(self, task_id: str) -> dict[str, Any]:
        """The task (ProtoJSON: ``id``, ``status.state``, ``artifacts``...) as the remote agent holds it."""
        try:
            task = await self._ready().get_task(GetTaskRequest(id=task_id))
        except (A2AClientError, httpx.HTTPError) as exc:
            raise BackendUnavailable(f"the A2A agent at {self.url} failed: {exc}", details={"url": self.url}) from exc
        found: dict[str, Any] = MessageToDict(task)
        return found

    async def serve(self, bus: BusAPI, address: str, *, group: str | None = None) -> None:
        """Answer, as this remote agent, every ``ask`` and ``send`` that reaches ``address`` on ``bus`` (a kernel's,
        or a session's of the agent at ``address``), until cancelled.

        Each message is forwarded with ``ask`` and acked once answered; the reply is the remote agent's answer, or,
        when it fails, the SOS error's text (``"SOS-6004 ..."``), so the asker hears at once rather than timing out.
        Other message types are acked and left unanswered. Delivery is the bus's: at least once, so a message
        redelivered after a crash is forwarded again.
        """
        async with bus.subscribe(address, group=group) as subscription:
            async for delivery in subscription:
                message = delivery.message
                if isinstance(message, AskMessage | SendMessage):
                    text = message.payload.question if isinstance(message, AskMessage) else message.payload.text
                    try:
                        answer = await self.ask(text)
                    except SOSError as exc:
                        answer = str(exc)
                    await bus.reply(message, answer, source=address)
                await delivery.ack()

    def __repr__(self) -> str:
        return f"A2AAgent({self.url!r})"
