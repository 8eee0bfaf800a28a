"""The review web app: reviewers sign in with a token and accept or reject sampled rows one at a time.

Starlette + Jinja2 (autoescape on for every template), no inline script or style: the page is served with
``Content-Security-Policy: default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'`` and
``X-Content-Type-Options: nosniff``, and ``static/review.js`` (keyboard shortcuts) only sets form values and
``textContent``. Row text is hostile (jailbreaks, HTML, JS) and is only ever rendered escaped.

Sessions are server-side, revocable records with a signed cookie as their handle:

* Cookie: ``base64url(JSON) "." base64url(HMAC-SHA256(session_secret, JSON))`` (RFC 2104) of
  ``{"sid", "csrf", "iat"}``; HttpOnly, SameSite=Strict, Path=/ (Secure when ``secure_cookies``); an issue time
  ``iat`` older than ``session_max_age`` makes it invalid. It names no reviewer and holds no token.
* Sign-in (``POST /signin``) checks the token and creates the session in the review store in one transaction
  (:meth:`ReviewStore.open_session`): ``sid`` is 256 random bits, and only its sha256 is stored (table
  ``review_sessions``, with the reviewer, the sha256 of the token used, created / expires / revoked times). A new
  ``sid`` and a new CSRF token are issued at every sign-in (no session fixation); a live session the browser
  already had is revoked.
* Every request looks the session up (:meth:`ReviewStore.session_reviewer`): the reviewer shown and recorded comes
  from the store, and only while the session row exists, is unrevoked, is unexpired (``expires_at`` = sign-in +
  ``session_max_age``, not extended by activity) and its reviewer still holds the token it was opened with.
  Anything else is treated as signed out: the browser is sent to the sign-in page.
* Sign-out (``POST /signout``) revokes the session row and deletes the cookie, so a copy of the cookie replayed
  later is refused. Re-issuing a reviewer's token (``add_reviewer``) or removing the reviewer
  (``remove_reviewer``) revokes all their sessions. Sessions live in the store, so they survive restarts and are
  shared by several app processes (keep ``session_secret`` across restarts).
* CSRF: every form carries the cookie's CSRF token (a double check on top of SameSite=Strict), compared in constant
  time. A cookie whose session has ended keeps its CSRF token until it expires, so the sign-out button on a page
  from a revoked session still works. Cookies in the format before ``sid`` existed are treated as signed out.

Decisions store ``reviewer_hash(reviewer_id)``, never the raw id.

Double review (:mod:`synqa_dagster.review.agreement`): a double-reviewed row is handed out like any other, to a
reviewer who has not decided it (the store enforces it: :meth:`ReviewStore.next_item`,
:meth:`ReviewStore.record_decision`). The item page shows nothing of another reviewer's decision, nor that the row
is double-reviewed; the progress figures count resolved rows only. Submitting a decision on a row the same
reviewer decided already (back button, a second tab) is refused with status 409 and says so.

Routes: ``GET /`` (sign-in form, or every batch's progress with a per-slice table), ``POST /signin``,
``POST /signout``, ``GET /batch/{batch}`` (the next item for this reviewer, leased to them),
``POST /batch/{batch}/decide``, ``/static/*``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from synqa_dagster.lineage.keys import load_or_create_secret
from synqa_dagster.review.identity import default_key_paths, reviewer_hasher
from synqa_dagster.review.store import (
    MAX_REASON_TEXT, REASON_CATEGORIES, REASON_LABELS, ReviewStore, UnknownBatchError,
)

HERE = Path(__file__).resolve().parent
COOKIE_NAME = "synqa_review_session"
CSP = "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NOTICES = {
    "recorded": "Decision recorded.",
    "already_decided": "Another reviewer decided that row first; your decision was not recorded. Here is the next one.",
    "stale_sample": "This batch was re-sampled while you were reviewing; your decision was not recorded. "
                    "Here is an item of the new sample.",
    "unknown_row": "That row is not part of this batch's sample; nothing was recorded.",
}
ALREADY_DECIDED_BY_YOU = ("Not recorded: you have already decided row {row_id} of this batch, and nobody decides a row "
                          "twice (a second review must come from another reviewer). Your earlier decision stands; "
                          "here is the next row for you.")
META_FIELDS = (("seed_id", "seed id"), ("seed_text", "seed text"), ("technique", "technique"), ("intent", "intent"),
               ("locale", "locale"), ("prompt_template_id", "prompt template id"))


class SessionSigner:
    """Signs and verifies session cookies: ``payload.signature``, both base64url, HMAC-SHA256 over the payload.

    Args:
        secret: the signing key (at least 16 bytes).
        max_age: seconds a session stays valid after sign-in.
    """

    def __init__(self, secret: bytes, max_age: int = 12 * 3600):
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("session_secret must be at least 16 bytes")
        self._secret = secret
        self.max_age = max_age

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"synqa-review-session\x00" + payload, hashlib.sha256).digest()

    def dumps(self, data: dict) -> str:
        """Encode and sign ``data`` (JSON-serialisable); adds the issue time ``iat`` unless ``data`` carries one
        (a session keeps its sign-in time, so it expires ``max_age`` after sign-in however active it is)."""
        payload = _b64(json.dumps({"iat": int(time.time()), **data}, separators=(",", ":")).encode("utf-8"))
        return f"{payload.decode('ascii')}.{_b64(self._sign(payload)).decode('ascii')}"

    def loads(self, value: str | None) -> dict | None:
        """The data of a valid, unexpired cookie value, else None (tampered, expired or malformed)."""
        if not value or value.count(".") != 1 or len(value) > 4096:
            return None
        payload, signature = (part.encode("ascii", "ignore") for part in value.split("."))
        try:
            if not hmac.compare_digest(_unb64(signature), self._sign(payload)):
                return None
            data = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("iat"), int):
            return None
        if not 0 <= time.time() - data["iat"] <= self.max_age:
            return None
        return data


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class SecurityHeadersMiddleware:
    """ASGI middleware adding :data:`SECURITY_HEADERS` (CSP, nosniff, ...) to every HTTP response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


COOKIE_FIELDS = ("sid", "csrf", "iat")
"""What the session cookie carries (the reviewer is looked up in the store from ``sid``)."""


def create_app(store: ReviewStore, reviewer_hash: Callable[[str], str], session_secret: bytes, *,
               secure_cookies: bool = False, session_max_age: int = 12 * 3600,
               lease_seconds: float = 600) -> Starlette:
    """Build the review web app.

    Args:
        store: the review store.
        reviewer_hash: maps a reviewer id to the pseudonym stored with decisions (e.g.
            ``functools.partial(synqa_dagster.lineage.keys.hmac_id, secret)``).
        session_secret: key signing the session cookies (>= 16 bytes; keep it across restarts to keep sessions).
        secure_cookies: mark the cookie Secure (set it when served over HTTPS).
        session_max_age: seconds a sign-in lasts (both the cookie's ``iat`` and the stored session expire then).
        lease_seconds: how long an item shown to a reviewer stays reserved for them.

    Returns:
        a Starlette ASGI app (serve with uvicorn, or test with ``starlette.testclient.TestClient``).
    """
    signer = SessionSigner(session_secret, session_max_age)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    templates = Jinja2Templates(env=env)

    def render(request: Request, session: dict, name: str, status: int = 200, **context: Any) -> Response:
        root = request.scope.get("root_path", "")
        context.update(csrf=session["csrf"], reviewer=session.get("reviewer"), root=root, reasons=reason_choices(),
                       max_reason_text=MAX_REASON_TEXT,
                       batch_url=lambda b: f"{root}/batch/{quote(b, safe='')}")
        response = templates.TemplateResponse(request, name, context, status_code=status)
        _set_cookie(response, session)
        return response

    def _set_cookie(response: Response, session: dict) -> None:
        cookie = {key: session[key] for key in COOKIE_FIELDS if key in session}
        response.set_cookie(COOKIE_NAME, signer.dumps(cookie), max_age=session_max_age, path="/", httponly=True,
                            samesite="strict", secure=secure_cookies)

    async def load_session(request: Request) -> dict:
        """The request's session: ``{"csrf", "iat"}``, plus ``sid`` and ``reviewer`` while signed in.

        A missing, tampered, expired or malformed cookie gives a fresh anonymous session. A valid cookie whose
        ``sid`` is no longer a live session (signed out, revoked, expired, reviewer removed or re-issued) keeps
        only its CSRF token and issue time: signed out.
        """
        data = signer.loads(request.cookies.get(COOKIE_NAME))
        if data is None or not isinstance(data.get("csrf"), str) or not data["csrf"]:
            return {"csrf": secrets.token_urlsafe(32)}
        session = {"csrf": data["csrf"], "iat": data["iat"]}
        sid = data.get("sid")
        if isinstance(sid, str) and sid:
            reviewer = await run_in_threadpool(store.session_reviewer, sid)
            if reviewer is not None:
                session.update(sid=sid, reviewer=reviewer)
        return session

    async def read_form(request: Request, session: dict) -> Any:
        form = await request.form(max_files=0, max_fields=20, max_part_size=4 * MAX_REASON_TEXT + 1024)
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
            raise HTTPException(403, "The form has expired or did not come from this site; reload the page.")
        return form

    def redirect(request: Request, path: str, session: dict | None = None) -> Response:
        response = RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)
        if session is not None:
            _set_cookie(response, session)
        return response

    async def home(request: Request) -> Response:
        session = await load_session(request)
        if not session.get("reviewer"):
            return render(request, session, "signin.html")
        batches = await run_in_threadpool(_batch_overview, store)
        return render(request, session, "home.html", batches=batches)

    async def signin(request: Request) -> Response:
        session = await load_session(request)
        form = await read_form(request, session)
        token = form.get("token")
        opened = await run_in_threadpool(store.open_session, token if isinstance(token, str) else "",
                                         session_max_age)
        if opened is None:
            return render(request, session, "message.html", status=401, title="Sign-in failed",
                          message="That token is not valid.")
        if session.get("sid"):  # signing in again (maybe as someone else) ends the session this browser had
            await run_in_threadpool(store.revoke_session, session["sid"])
        _, sid = opened
        return redirect(request, "/", {"sid": sid, "csrf": secrets.token_urlsafe(32)})

    async def signout(request: Request) -> Response:
        session = await load_session(request)
        await read_form(request, session)
        if session.get("sid"):
            await run_in_threadpool(store.revoke_session, session["sid"])
        response = redirect(request, "/")
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return response

    async def review(request: Request) -> Response:
        session = await load_session(request)
        if not session.get("reviewer"):
            return redirect(request, "/", session)
        batch = request.path_params["batch"]
        reviewer_hmac = reviewer_hash(session["reviewer"])
        try:
            item = await run_in_threadpool(store.next_item, batch, reviewer_hmac, lease_seconds)
            progress = await run_in_threadpool(store.progress, batch)
        except UnknownBatchError:
            raise HTTPException(404, "No such batch in the review store.") from None
        notice = NOTICES.get(request.query_params.get("notice", ""))
        return render(request, session, "review.html", batch=batch, progress=progress, notice=notice, error=None,
                      **_item_view(item))

    async def decide(request: Request) -> Response:
        session = await load_session(request)
        if not session.get("reviewer"):
            return redirect(request, "/", session)
        form = await read_form(request, session)
        batch = request.path_params["batch"]
        fields = {k: form.get(k) if isinstance(form.get(k), str) else "" for k in
                  ("row_id", "sample_version", "verdict", "reason_category", "reason_text")}
        try:
            outcome = await run_in_threadpool(
                lambda: store.record_decision(batch, fields["row_id"], sample_version=fields["sample_version"],
                                              reviewer_hmac=reviewer_hash(session["reviewer"]),
                                              verdict=fields["verdict"], reason_category=fields["reason_category"],
                                              reason_text=fields["reason_text"]))
        except ValueError as exc:
            item = await run_in_threadpool(store.get_item, batch, fields["row_id"])
            try:
                progress = await run_in_threadpool(store.progress, batch)
            except UnknownBatchError:
                raise HTTPException(404, "No such batch in the review store.") from None
            return render(request, session, "review.html", status=400, batch=batch, progress=progress, notice=None,
                          error=f"Not recorded: {exc}", **_item_view(item, fields))
        if outcome == "reviewer_already_decided":
            try:
                item = await run_in_threadpool(store.next_item, batch, reviewer_hash(session["reviewer"]),
                                               lease_seconds)
                progress = await run_in_threadpool(store.progress, batch)
            except UnknownBatchError:
                raise HTTPException(404, "No such batch in the review store.") from None
            return render(request, session, "review.html", status=409, batch=batch, progress=progress, notice=None,
                          error=ALREADY_DECIDED_BY_YOU.format(row_id=fields["row_id"]), **_item_view(item))
        return redirect(request, f"/batch/{quote(batch, safe='')}?notice={outcome}")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "") or "Error"
        session = await load_session(request)
        return render(request, session, "message.html", status=status, title=f"Error {status}", message=detail)

    routes = [
        Route("/", home, methods=["GET"], name="home"),
        Route("/signin", signin, methods=["POST"], name="signin"),
        Route("/signout", signout, methods=["POST"], name="signout"),
        Route("/batch/{batch}", review, methods=["GET"], name="review"),
        Route("/batch/{batch}/decide", decide, methods=["POST"], name="decide"),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeadersMiddleware)],
                     exception_handlers={HTTPException: http_error})


def _batch_overview(store: ReviewStore) -> list[dict]:
    """Per batch: its progress and a per-slice table (sample size, decided, accepted, rejected, plan)."""
    overview = []
    for progress in store.all_progress():
        slices = store.slices(progress.batch)
        decisions = store.decisions(progress.batch)
        rows = []
        for s in slices.to_dict(orient="records"):
            mine = decisions[decisions["slice_key"] == s["slice_key"]]
            accepted = int((mine["verdict"] == "accept").sum())
            rows.append({**s, "decided": len(mine), "accepted": accepted, "rejected": len(mine) - accepted})
        overview.append({"progress": progress, "slices": rows})
    return overview


def _item_view(item: dict | None, form: dict | None = None) -> dict:
    """Template context for one item: turns, metadata, scores, other fields, and the form's previous values."""
    if item is None:
        return {"item": None, "turns": [], "meta": [], "scores": [], "other": [], "form": form or {}}
    turns, used = _turns(item)
    shown = {"row_id", "slice_key", "sample_position", "sample_version", *used, *(k for k, _ in META_FIELDS)}
    meta = [("slice", item["slice_key"]), ("row id", item["row_id"])]
    meta += [(label, _text(item.get(key))) for key, label in META_FIELDS]
    scores = sorted((k, _text(v)) for k, v in item.items() if k.startswith("score_"))
    other = sorted((k, _text(v)) for k, v in item.items() if k not in shown and not k.startswith("score_"))
    return {"item": item, "turns": turns, "meta": meta, "scores": scores, "other": other, "form": form or {}}


def _turns(item: dict) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """The conversation as (role, content) pairs and the payload keys it came from: the ``conversation`` list
    (or its JSON text) when there is one, else instruction (user) / response (assistant)."""
    conversation = item.get("conversation")
    if isinstance(conversation, str):
        try:
            conversation = json.loads(conversation)
        except ValueError:
            conversation = None
    if isinstance(conversation, list) and conversation and all(isinstance(t, dict) for t in conversation):
        return [(_text(t.get("role")) or "?", _text(t.get("content"))) for t in conversation], ("conversation",)
    turns = []
    if item.get("instruction") is not None:
        turns.append(("user", _text(item["instruction"])))
    if item.get("response") is not None:
        turns.append(("assistant", _text(item["response"])))
    return turns, ("instruction", "response")


def _text(value: Any) -> str:
    """Display text of a payload value (escaping is the template's job)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, indent=1)
    return str(value)


def reason_choices() -> list[tuple[int, str, str]]:
    """(shortcut key, category, label) for each reason category."""
    return [(n, c, REASON_LABELS[c]) for n, c in enumerate(REASON_CATEGORIES, start=1)]


def serve(store_url: str, host: str = "127.0.0.1", port: int = 8765, *, hmac_key_path: str | Path | None = None,
          session_key_path: str | Path | None = None, secure_cookies: bool = False) -> None:
    """Run the review app with uvicorn until interrupted.

    Args:
        store_url: review store URL (see :meth:`ReviewStore.from_url`).
        host, port: where to listen (default loopback only).
        hmac_key_path: reviewer-id HMAC secret (default ``<instance>/keys/reviewer_hmac.key``, created if absent).
        session_key_path: session-cookie secret (default ``<instance>/keys/review_session.key``).
        secure_cookies: mark cookies Secure (behind HTTPS).
    """
    import uvicorn

    default_hmac, default_session = default_key_paths()
    reviewer_hash = reviewer_hasher(Path(hmac_key_path or default_hmac))
    session_secret = load_or_create_secret(Path(session_key_path or default_session))
    app = create_app(ReviewStore.from_url(store_url), reviewer_hash, session_secret, secure_cookies=secure_cookies)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
