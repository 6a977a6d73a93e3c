"""The A2A endpoint of the HTTP server: every opted-in agent as an A2A agent at ``/a2a/{tenant}/{name}/``.

What it promises:

- **Only agents that opted in.** An agent registered with ``a2a=True`` has an endpoint; any other name, an agent
  that did not opt in, and every agent of another tenant answer SOS-4040 (404), the same answer, so a caller
  cannot tell them apart.
- **Bearer tokens are sessions.** Each request's ``Authorization: Bearer`` token selects its session (the server's
  cache by token digest); no token is SOS-5001 (401), a bad one its SOS code. The token's tenant must be the
  path's. The card needs ``registry:read``; a message is sent by the session as its own agent (``bus:write``), so
  a token that belongs to no agent cannot send (SOS-5003).
- **A message is an ask.** ``message/send`` and ``message/stream`` publish an ``ask`` to the agent's inbox from
  the caller's agent and wait for its reply, which becomes the task's artifact and its completing status message.
  A reply that does not come within the timeout fails the task with the SOS-6004 reason. The official
  ``a2a-sdk`` request handler and event queue run the protocol; this module adds the executor.
- **Or, in task mode, a kernel task** (``metadata.sos_task``, :mod:`._kernel_tasks`): created or read as the
  caller, followed, refreshed by ``tasks/get`` and canceled by ``tasks/cancel`` only through the kernel's own
  ``tasks`` operations of the caller's session.
- **Tasks stay with who made them, in the kernel.** A task is visible (``tasks/get``, ``tasks/list``,
  ``tasks/cancel``) only to the tenant, agent and caller agent that created it; it is kept in the kernel's store
  (:mod:`._store`), so a restarted server, or another on the same store, finds it.
- **Bounded per tenant and caller** (:mod:`._limits`): requests in flight, asks waiting, tasks kept (per tenant and
  per caller), tasks running per caller, the longest timeout. A message whose new task the store refuses gets no
  task: the agent answers with a message whose text is the SOS refusal and whose ``metadata.sos_error`` is its
  envelope, and nothing is sent to the served agent.
- **Nothing outlives the server.** The app's shutdown cancels and awaits every task the endpoint still runs (an
  ask, a follow) before the server state closes, so none reads the kernel after its owner closes it.
- **The card's URL is the operator's.** With ``public_url`` the card's interface URL is built from it alone; without
  it, from the request's own URL (its ``Host``), so it is answered with ``Cache-Control: no-store`` and
  ``Vary: Host, Authorization`` and a cache never hands one client's card to another.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit

from a2a.helpers.proto_helpers import new_task, new_text_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import DefaultServerCallContextBuilder, create_jsonrpc_routes
from a2a.server.tasks import TaskUpdater
from a2a.types import AgentCard, CancelTaskRequest, GetTaskRequest, Message, Role, Task, TaskState
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from a2a.utils.errors import TaskNotCancelableError
from google.protobuf.json_format import MessageToDict, ParseDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from ...errors import Forbidden, InvalidArgument, LimitExceeded, MethodNotAllowed, NotFound, SOSError
from ...server._jsonrpc import refuse_repeated_keys
from ...server._state import ServerState
from ...wire import json_bytes
from ._kernel_tasks import follow, open_task, refreshed, task_id_of, task_spec
from ._limits import (
    A2A_ASK_TIMEOUT_S,
    A2A_ASK_TIMEOUT_S_MAX,
    A2A_ASKS_PER_TENANT_MAX,
    A2A_PATH,
    A2A_REQUESTS_PER_TENANT_MAX,
    A2A_RUNNING_TASKS_PER_CALLER_MAX,
    A2A_TASK_RUNNING_MARGIN_S,
    A2A_TASKS_PER_CALLER_MAX,
    A2A_TASKS_PER_TENANT_MAX,
)
from ._served import FINISHED, SCOPE_KEY, Owner, Served, served
from ._store import KernelTaskStore

__all__ = ["A2AEndpoint", "mount"]

JSONRPC_REFUSED = -32001
"""The JSON-RPC error code of a request refused before the A2A handler saw it (its SOS code is in ``data``)."""
_CARD_PATH: Final = AGENT_CARD_WELL_KNOWN_PATH.lstrip("/")


class _Context(DefaultServerCallContextBuilder):
    """The SDK's context (headers, extensions), with the admitted request as its state and its owner as user."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        admitted = request.scope[SCOPE_KEY]
        context.state[SCOPE_KEY] = admitted
        context.user = Owner(admitted.owner)
        return context


class _Held:
    """Per-tenant counters with a ceiling: ``take`` refuses one past it with SOS-4010."""

    def __init__(self, name: str, what: str, limit: int) -> None:
        self.name = name
        self.what = what
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, tenant: str) -> None:
        if self._held.get(tenant, 0) >= self.limit:
            raise LimitExceeded(
                f"{self.limit} A2A {self.what} of this tenant already in flight ({self.name}); retry when one ends",
                details={"limit": self.name, "max": self.limit},
            )
        self._held[tenant] = self._held.get(tenant, 0) + 1

    def release(self, tenant: str) -> None:
        left = self._held.get(tenant, 0) - 1
        if left > 0:
            self._held[tenant] = left
        else:
            self._held.pop(tenant, None)

    @contextmanager
    def take(self, tenant: str) -> Iterator[None]:
        self.acquire(tenant)
        try:
            yield
        finally:
            self.release(tenant)


def _timeout(metadata: Mapping[str, Any], timeout_s_max: float) -> float:
    value = metadata.get("timeout_s", A2A_ASK_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= timeout_s_max:
        raise InvalidArgument(
            f"metadata timeout_s must be a number of seconds in (0, {timeout_s_max}], got {value!r}",
            details={"field": "timeout_s", "max": timeout_s_max},
        )
    return float(value)


def _refused_message(context: RequestContext, error: SOSError) -> Message:
    """The agent's answer to a message whose task the store refused: no task, the SOS refusal (its text and, in
    the metadata under ``sos_error``, its envelope)."""
    message = new_text_message(str(error), context_id=context.context_id, role=Role.ROLE_AGENT)
    message.metadata.update({"sos_error": error.to_wire()["error"]})
    return message


class _AskExecutor(AgentExecutor):
    """Runs an A2A task as an ``ask`` from the caller's agent to the served agent (the reply completes it), or in
    task mode as a kernel task it creates or attaches to and follows (:mod:`._kernel_tasks`)."""

    def __init__(self, asks_max: int, timeout_s_max: float, store: KernelTaskStore) -> None:
        self._asks = _Held("a2a_asks_per_tenant_max", "asks", asks_max)
        self._timeout_s_max = timeout_s_max
        self._store = store

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        who = served(context.call_context)
        task = context.current_task
        if task is None:
            if context.task_id is None or context.context_id is None or context.message is None:
                raise InvalidArgument("an A2A task needs a message, a task id and a context id")
            task = new_task(context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, [], [context.message])
            try:  # kept before any event (no Task event: the SDK takes it from the store), so no save is refused
                await self._store.save(task, context.call_context)
            except LimitExceeded as exc:
                await event_queue.enqueue_event(_refused_message(context, exc))
                return
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        try:
            timeout_s = _timeout(context.metadata, self._timeout_s_max)
            spec = task_spec(context.metadata, context.current_task)
            self._asks.acquire(who.tenant)
        except SOSError as exc:  # refused before any ask went out
            await updater.reject(updater.new_agent_message([new_text_part(str(exc))]))
            return
        try:
            if spec is None:
                await self._ask(who, context.get_user_input(), timeout_s, updater)
            else:
                await self._task(who, spec, task.id, context.get_user_input(), timeout_s, updater)
        finally:
            self._asks.release(who.tenant)

    async def _ask(self, who: Served, text: str, timeout_s: float, updater: TaskUpdater) -> None:
        await updater.start_work()
        try:
            reply = await who.session.bus.ask(str(who.source), who.target, text, timeout_s=timeout_s)
        except SOSError as exc:  # the ask went out (or was refused by the bus): no reply
            await updater.failed(updater.new_agent_message([new_text_part(str(exc))]))
            return
        parts = [new_text_part(reply.payload.text, media_type=reply.payload.content_type)]
        await updater.add_artifact(parts, name="reply", metadata={"sos_message_id": reply.message_id})
        await updater.complete(updater.new_agent_message(parts))

    async def _task(
        self, who: Served, spec: dict[str, Any], a2a_id: str, text: str, timeout_s: float, updater: TaskUpdater
    ) -> None:
        try:
            task_id = await open_task(who, spec, a2a_id, text)
        except SOSError as exc:  # the kernel refused the create (or the caller cannot read the task)
            await updater.reject(updater.new_agent_message([new_text_part(str(exc))]))
            return
        await follow(who, task_id, updater, timeout_s)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task
        if task is not None and task.status.state not in FINISHED:
            await TaskUpdater(event_queue, task.id, task.context_id).cancel()


class _Handler(DefaultRequestHandler):
    """The a2a-sdk's handler; for a task-mode task, ``GetTask`` first brings it up to its kernel task and
    ``CancelTask`` first cancels the kernel task as the caller (refused: ``TaskNotCancelableError``, its SOS
    code in the message, nothing changed)."""

    def __init__(self, executor: AgentExecutor, store: KernelTaskStore, card: AgentCard) -> None:
        super().__init__(executor, store, card)
        self._store = store

    async def _backed(self, task_id: str, context: ServerCallContext) -> tuple[Task, str] | None:
        """The unfinished A2A task and its kernel task's id, when it is a task-mode task."""
        task = await self._store.get(task_id, context)
        kernel_id = task_id_of(task)
        if task is None or kernel_id is None or task.status.state in FINISHED:
            return None
        return task, kernel_id

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        backed = await self._backed(params.id, context)
        if backed is not None:
            try:
                fresh = refreshed(backed[0], await served(context).session.tasks.get(backed[1]))
            except SOSError:  # the caller may no longer read it: the A2A task keeps its last state
                fresh = None
            if fresh is not None:
                await self._store.save(fresh, context)
        task: Task | None = await super().on_get_task(params, context)
        return task

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        backed = await self._backed(params.id, context)
        if backed is not None:  # the kernel task first, as the caller: no A2A cancel without it
            try:
                await served(context).session.tasks.cancel(backed[1])
            except SOSError as exc:
                raise TaskNotCancelableError(str(exc)) from exc
        task: Task | None = await super().on_cancel_task(params, context)
        return task


def refusal(error: SOSError, *, rpc: bool) -> Response:
    """``error`` with its HTTP status (429 for a limit): a JSON-RPC error whose message starts with the SOS code and
    whose ``data`` is the SOS envelope for a JSON-RPC call, the SOS envelope itself otherwise."""
    envelope = error.to_wire()
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": JSONRPC_REFUSED, "message": str(error), "data": envelope}}
    headers = {"www-authenticate": "Bearer"} if error.http_status == 401 else None
    status = 429 if isinstance(error, LimitExceeded) else error.http_status
    content = json_bytes(body if rpc else envelope)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def _card(agent: Any, base_url: str) -> dict[str, Any]:
    raw = agent.to_a2a(url=base_url)
    raw["capabilities"]["streaming"] = True
    raw["securitySchemes"] = {
        "bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer", "description": "A token issued by the kernel"}}
    }
    raw["securityRequirements"] = [{"schemes": {"bearer": {"list": []}}}]
    served_card: dict[str, Any] = MessageToDict(ParseDict(raw, AgentCard()))
    return served_card


def _public_url(url: str) -> str:
    """``url`` without its trailing slash; SOS-4005 unless it is an absolute http(s) URL with no query or fragment."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidArgument(
            f"public_url must be an absolute http(s) URL with no query or fragment, got {url!r:.200}",
            details={"field": "public_url"},
        )
    return url.rstrip("/")


def _handler_card() -> AgentCard:
    # The SDK's handler wants a card; each agent's own is served by the endpoint, this one is never shown.
    card: AgentCard = ParseDict(
        {
            "name": "sos-kernel",
            "description": "The A2A agents of a kernel",
            "version": "1.0.0",
            "supportedInterfaces": [
                {"url": "http://localhost" + A2A_PATH, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
            ],
            "capabilities": {"streaming": True},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [{"id": "ask", "name": "ask", "description": "Answers an ask", "tags": ["ask"]}],
        },
        AgentCard(),
    )
    return card


class A2AEndpoint:
    """The ASGI endpoint under ``/a2a/{tenant}/{agent}/``: authenticates, finds the agent, bounds, then hands the
    request to the ``a2a-sdk`` JSON-RPC dispatcher (or answers the agent card)."""

    def __init__(
        self,
        state: ServerState,
        *,
        requests_max: int = A2A_REQUESTS_PER_TENANT_MAX,
        asks_max: int = A2A_ASKS_PER_TENANT_MAX,
        tasks_max: int = A2A_TASKS_PER_TENANT_MAX,
        timeout_s_max: float = A2A_ASK_TIMEOUT_S_MAX,
        caller_tasks_max: int = A2A_TASKS_PER_CALLER_MAX,
        caller_running_max: int = A2A_RUNNING_TASKS_PER_CALLER_MAX,
        public_url: str | None = None,
    ) -> None:
        self.public_url = None if public_url is None else _public_url(public_url)
        limits = [("requests_max", requests_max), ("asks_max", asks_max), ("tasks_max", tasks_max)]
        limits += [("caller_tasks_max", caller_tasks_max), ("caller_running_max", caller_running_max)]
        for name, value in limits:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(timeout_s_max, bool) or not isinstance(timeout_s_max, int | float) or not timeout_s_max > 0:
            raise InvalidArgument(f"timeout_s_max must be a number > 0, got {timeout_s_max!r}")
        if tasks_max <= asks_max:
            raise InvalidArgument("tasks_max must exceed asks_max, so a finished task can always make room")
        if not caller_running_max < caller_tasks_max:
            raise InvalidArgument("caller_tasks_max must exceed caller_running_max, so a caller can make room")
        self.state = state
        self.tasks = KernelTaskStore(
            state.kernel,
            tasks_max,
            caller_tasks_max=caller_tasks_max,
            # one caller's running tasks always leave room in the tenant for the others'
            caller_running_max=min(caller_running_max, tasks_max - 1),
            running_s=timeout_s_max + A2A_TASK_RUNNING_MARGIN_S,
        )
        self._requests = _Held("a2a_requests_per_tenant_max", "requests", requests_max)
        handler = _Handler(_AskExecutor(asks_max, timeout_s_max, self.tasks), self.tasks, _handler_card())
        self.handler = handler
        self._rpc = Router(routes=create_jsonrpc_routes(handler, "/", context_builder=_Context()))

    async def aclose(self) -> None:
        """Cancel and await every A2A task this endpoint still runs (an ask waiting for its reply, a follow polling
        its kernel task) and refuse new ones: none outlives the server's kernel. Idempotent."""
        await self.handler.aclose()

    async def _admit(self, scope: Scope) -> tuple[Served, Any]:
        params = scope.get("path_params", {})
        tenant, name = str(params.get("tenant", "")), str(params.get("agent", ""))
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        kind, _, token = header.partition(" ")
        session = await self.state.sessions.get(token.strip() if kind.lower() == "bearer" else None)
        principal = await session.refresh()
        unknown = NotFound(f"no A2A agent {name!r} in tenant {tenant!r}", details={"tenant": tenant, "agent": name})
        if principal.tenant != tenant:
            raise unknown
        try:
            agent = await session.registry.get(name)
        except SOSError as exc:
            if exc.http_status == 404:
                raise unknown from None
            raise
        if not agent.a2a or agent.card.name != name:
            raise unknown
        caller = principal.agent or f"token:{principal.token_id}"
        return Served(session, tenant, f"agent:{name}", principal.agent, f"{name}\n{caller}"), agent

    def _card(self, agent: Any, served: Served, scope: Scope) -> Response:
        """The agent's card, its URL under ``public_url`` (or the request's own base); never kept by a cache."""
        root = self.public_url or str(Request(scope).base_url).rstrip("/")
        base = f"{root}{A2A_PATH}/{served.tenant}/{agent.card.name}/"
        headers = {"cache-control": "no-store", "vary": "Host, Authorization"}
        return Response(json_bytes(_card(agent, base)), media_type="application/json", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rest = str(scope.get("path_params", {}).get("rest", ""))
        method = scope["method"]
        rpc = rest == "" and method == "POST"
        try:
            if not rpc and rest != _CARD_PATH:
                raise NotFound(f"no A2A route {scope['path']!r}")
            if not rpc and method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{method} is not allowed on an agent card (GET it)")
            served, agent = await self._admit(scope)
            if rpc and served.source is None:
                raise Forbidden("an A2A message is an ask from the caller's own agent: use a token of an agent")
            with self._requests.take(served.tenant):
                if not rpc:
                    await self._card(agent, served, scope)(scope, receive, send)
                    return
                # a body repeating a key is refused before the A2A library reads it: 200, as for bad JSON
                bytes_max = self.state.request_bytes_max
                checked = await refuse_repeated_keys(scope, receive, send, status=200, bytes_max=bytes_max)
                if checked is None:
                    return
                inner = {**scope, "path": "/", "raw_path": b"/", "root_path": "", SCOPE_KEY: served}
                await self._rpc(inner, checked, send)
        except SOSError as exc:
            await refusal(exc, rpc=rpc)(scope, receive, send)


def mount(app: Any, **limits: Any) -> A2AEndpoint:
    """Serve the A2A agents of ``app``'s kernel (``app`` from :func:`sos_kernel.server.create_app`) under
    ``/a2a/{tenant}/{agent}/``. ``limits``: ``requests_max``, ``asks_max``, ``tasks_max``, ``timeout_s_max``,
    ``caller_tasks_max``, ``caller_running_max``; and ``public_url``, the base of every card's URL (else the
    request's). The app's shutdown (its lifespan's end, or ``app.state.sos.aclose()``) ends the endpoint's tasks
    (:meth:`A2AEndpoint.aclose`) before anything else closes."""
    endpoint = A2AEndpoint(app.state.sos, **limits)
    app.state.sos.on_close(endpoint.aclose)
    route = Route(A2A_PATH + "/{tenant}/{agent}/{rest:path}", endpoint=endpoint, methods=["GET", "HEAD", "POST"])
    app.router.routes.append(route)
    return endpoint
