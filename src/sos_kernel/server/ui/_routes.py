"""The dashboard (``/ui/``, a tenant admin's sign-in) and the public marketplace (``/marketplace``) as HTML.

Every page is rendered with autoescaping (names, titles and message texts are the tenants' and agents' own text)
and answered with :data:`SECURITY_HEADERS`; signed-in pages are never cached. Forms are POSTs carrying a CSRF
token: the session's own once signed in, a double-submit cookie on the sign-in form.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...api import SessionAPI
from ...errors import Forbidden, InvalidArgument, SOSError
from ...wire import encode, json_bytes
from .._http import state_of
from . import _data
from ._market import MARKETPLACE_QUERY_CHARS_MAX, VERIFICATIONS, Marketplace, Query
from ._money import format_micros
from ._sessions import SESSION_ID_BYTES, UI_SESSION_TTL_S, UISession, UISessions

__all__ = ["COOKIE", "CSRF_COOKIE", "FORM_BYTES_MAX", "FORM_FIELDS_MAX", "SECURITY_HEADERS", "UIState", "router"]

COOKIE = "sos_ui"
"""The session cookie: a random id, HttpOnly, SameSite=Strict, Secure over https, path ``/ui``."""
CSRF_COOKIE = "sos_ui_csrf"
"""The sign-in form's double-submit CSRF cookie (before there is a session)."""
FORM_BYTES_MAX = 8 * 1024
FORM_FIELDS_MAX = 20
"""Fields a dashboard form may carry (the largest form has four); more is SOS-4005, like a larger body."""
"""The largest form body a dashboard POST accepts."""
MARKETPLACE_URL_QUERY_CHARS_MAX = 4 * MARKETPLACE_QUERY_CHARS_MAX + 100
"""The longest query string a marketplace page accepts (all its parameters together)."""
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
_ENV = Environment(loader=PackageLoader("sos_kernel.server.ui", "templates"), autoescape=True, auto_reload=False)
_ENV.globals.update(micros=format_micros, utc=_data.utc, verifications=VERIFICATIONS)

router = APIRouter(include_in_schema=False)


class UIState:
    """What the pages keep in this server: dashboard sessions and the marketplace listing."""

    def __init__(self, marketplace: Marketplace, sessions: UISessions | None = None) -> None:
        self.marketplace = marketplace
        self.sessions = sessions or UISessions()


def _ui(request: Request) -> UIState:
    return cast(UIState, request.app.state.ui)


def _html(template: str, context: dict[str, Any], status: int = 200, *, private: bool = True) -> HTMLResponse:
    body = _ENV.get_template(template).render(**context)
    headers = {**SECURITY_HEADERS, **(NO_STORE if private else {"Cache-Control": "no-cache"})}
    return HTMLResponse(body, status, headers=headers)


def _redirect(url: str, *, private: bool = True) -> RedirectResponse:
    return RedirectResponse(url, 303, headers={**SECURITY_HEADERS, **(NO_STORE if private else {})})


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def _form(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (first value of each field); a larger body is SOS-4005."""
    body = await request.body()
    if len(body) > FORM_BYTES_MAX:
        raise InvalidArgument(f"a form must be at most {FORM_BYTES_MAX} bytes")
    try:
        text = body.decode("utf-8", errors="replace")
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX)
    except ValueError as exc:  # parse_qs's refusal of more than max_num_fields
        raise InvalidArgument(f"a form has at most {FORM_FIELDS_MAX} fields") from exc
    return {k: v[0] for k, v in fields.items()}


async def _signed_in(request: Request) -> UISession | None:
    """The live dashboard session of the request's cookie, its token re-validated and still an admin's."""
    sessions = _ui(request).sessions
    cookie = request.cookies.get(COOKIE)
    ui = sessions.get(cookie)
    if ui is None:
        return None
    try:
        principal = await ui.session.refresh()
    except SOSError:
        principal = None
    if principal is None or not principal.admin:
        sessions.end(cookie)
        return None
    return ui


def _error(ui: UISession | None, exc: SOSError, *, private: bool = True) -> HTMLResponse:
    status = exc.http_status if 400 <= exc.http_status < 600 else 500
    return _html("error.html", {"ui": ui, "error": exc}, status, private=private)


Loader = Callable[..., Awaitable[dict[str, Any]]]


async def _view(request: Request, template: str, load: Loader, *args: Any, page: str = "") -> Response:
    """A signed-in page: ``load(session, *args)`` through the admin's session, rendered into ``template``."""
    ui = await _signed_in(request)
    if ui is None:
        return _redirect("/ui/signin")
    try:
        data = await load(cast(SessionAPI, ui.session), *args)
    except SOSError as exc:
        return _error(ui, exc)
    return _html(template, {"ui": ui, "page": page, "flash": _flash(request), **data})


def _flash(request: Request) -> str:
    """The note after a replay: only an id-shaped value, so a crafted link cannot put words on the page."""
    replayed = request.query_params.get("replayed", "")
    return f"Replayed dead letter {replayed}." if _ID.fullmatch(replayed) else ""


# -- sign-in and sign-out ----------------------------------------------------------------------------------------


def _signin_page(request: Request, message: str = "", status: int = 200) -> Response:
    csrf = secrets.token_urlsafe(SESSION_ID_BYTES)
    response = _html("signin.html", {"ui": None, "csrf": csrf, "message": message}, status)
    _set_cookie(request, response, CSRF_COOKIE, csrf, 3600)
    return response


@router.get("/ui/signin")
async def signin_form(request: Request) -> Response:
    if await _signed_in(request) is not None:
        return _redirect("/ui/")
    return _signin_page(request)


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    """Sign in with a tenant admin token: a new session cookie and a redirect to the overview; never echoes it."""
    form = await _form(request)
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        return _signin_page(request, "The form expired; please sign in again.", 403)
    try:
        session = await state_of(request).sessions.get(form.get("token", "").strip() or None)
        principal = await session.refresh()
    except SOSError:
        return _signin_page(request, "Sign-in failed: that token is not valid.", 401)
    if not principal.admin:
        return _signin_page(request, "Sign-in failed: the dashboard needs a tenant admin token.", 403)
    cookie, _ = _ui(request).sessions.create(session)
    response = _redirect("/ui/")
    _set_cookie(request, response, COOKIE, cookie, int(UI_SESSION_TTL_S))
    response.delete_cookie(CSRF_COOKIE, path="/ui")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    ui = await _signed_in(request)
    if ui is not None:
        form = await _form(request)
        if not ui.csrf_ok(form.get("csrf")):
            return _error(ui, Forbidden("the form's CSRF token is missing or wrong"))
        _ui(request).sessions.end(request.cookies.get(COOKIE))
    response = _redirect("/ui/signin")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


# -- the dashboard's pages ---------------------------------------------------------------------------------------


@router.get("/ui")
async def ui_root() -> Response:
    return _redirect("/ui/")


@router.get("/ui/")
async def overview(request: Request) -> Response:
    return await _view(request, "overview.html", _data.overview, page="overview")


@router.get("/ui/agents")
async def agents(request: Request) -> Response:
    return await _view(request, "agents.html", _data.agents, page="agents")


@router.get("/ui/agents/{name}")
async def agent(request: Request, name: str) -> Response:
    return await _view(request, "agent.html", _data.agent_page, name, page="agents")


@router.get("/ui/money")
async def money(request: Request) -> Response:
    return await _view(request, "money.html", _data.money, page="money")


@router.get("/ui/skills")
async def skills(request: Request) -> Response:
    return await _view(request, "skills.html", _data.skills, page="skills")


@router.get("/ui/tasks")
async def tasks(request: Request) -> Response:
    return await _view(request, "tasks.html", _data.tasks, page="tasks")


@router.get("/ui/dead-letters")
async def dead_letters(request: Request) -> Response:
    return await _view(request, "dead_letters.html", _data.dead_letters, page="dead")


@router.get("/ui/dead-letters/view")
async def dead_letter(request: Request) -> Response:
    address, dead_id = request.query_params.get("address", ""), request.query_params.get("id", "")

    async def load(api: SessionAPI) -> dict[str, Any]:
        return {"dead": await _data.dead_letter(api, address, dead_id)}

    return await _view(request, "dead_letter.html", load, page="dead")


@router.post("/ui/dead-letters/replay")
async def replay(request: Request) -> Response:
    """Replay a dead letter through the admin's session (``bus.replay``: checked, audited like any call)."""
    ui = await _signed_in(request)
    if ui is None:
        return _redirect("/ui/signin")
    try:
        form = await _form(request)
        if not ui.csrf_ok(form.get("csrf")):
            raise Forbidden("the form's CSRF token is missing or wrong")
        api = cast(SessionAPI, ui.session)
        found = await _data.dead_letter(api, form.get("address", ""), form.get("id", ""))
        await api.bus.replay(found)
    except SOSError as exc:
        return _error(ui, exc)
    return _redirect("/ui/dead-letters?" + urlencode({"replayed": found.id}))


@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    media = _STATIC.get(name)
    if media is None:
        return Response("not found", 404, media_type="text/plain", headers=SECURITY_HEADERS)
    body = resources.files("sos_kernel.server.ui").joinpath("static", name).read_bytes()
    return Response(body, media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})


# -- the public marketplace --------------------------------------------------------------------------------------


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _json(value: Any, status: int = 200) -> Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    # "<" only occurs inside JSON strings: escaped, no text in the twin can be read as markup by anything
    body = json_bytes(encode(value)).replace(b"<", b"\\u003c")
    return Response(body, status, media_type="application/json", headers=headers)


def _query(request: Request) -> Query:
    if len(request.url.query) > MARKETPLACE_URL_QUERY_CHARS_MAX:
        raise InvalidArgument(f"the query must be at most {MARKETPLACE_URL_QUERY_CHARS_MAX} characters")
    return Query.parse(dict(request.query_params))


async def _search(request: Request) -> dict[str, Any]:
    market = _ui(request).marketplace
    query = _query(request)
    return {"query": query, "cards": [x.public() for x in await market.search(query)], "tags": await market.tags()}


@router.get("/marketplace.json")
async def marketplace_json(request: Request) -> Response:
    """The JSON twin of ``/marketplace``: ``{"cards": [...]}`` (errors as the SOS envelope)."""
    found = await _search(request)
    return _json({"cards": found["cards"]})


@router.get("/marketplace")
async def marketplace(request: Request) -> Response:
    """The public grid of listed skill cards; no sign-in. ``Accept: application/json`` answers the JSON twin."""
    if _wants_json(request):
        return await marketplace_json(request)
    try:
        found = await _search(request)
    except SOSError as exc:
        return _error(None, exc, private=False)
    return _html("marketplace.html", {"ui": None, **found, "params": dict(request.query_params)}, private=False)


@router.get("/marketplace/{tenant}/{skill_id}")
async def marketplace_card(request: Request, tenant: str, skill_id: str) -> Response:
    """One listed card; 404 for anything not listed now (unlisted, private, disputed, suspended tenant)."""
    try:
        listing = await _ui(request).marketplace.card(tenant, skill_id)
    except SOSError as exc:
        if _wants_json(request):
            raise
        return _error(None, exc, private=False)
    if _wants_json(request):
        return _json(listing.public())
    return _html("card.html", {"ui": None, "x": listing.public(), "card": listing.card}, private=False)
