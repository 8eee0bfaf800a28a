"""The review web app through Starlette's TestClient, on a real SQLite review store."""

from __future__ import annotations

import hashlib
import html
import re
import sqlite3
from pathlib import Path

import markupsafe
import pytest
from starlette.testclient import TestClient

from synqa_dagster.lineage.keys import hmac_id
from synqa_dagster.review.store import ReviewStore
from synqa_dagster.review.webapp import CSP, COOKIE_NAME, SessionSigner, create_app
from tests.test_review_store import BATCH, HOSTILE_HTML, JAILBREAK, make_sample

SECRET = b"reviewer-hmac-secret-for-tests-32"


def reviewer_hash(reviewer_id: str) -> str:
    return hmac_id(SECRET, reviewer_id)


@pytest.fixture()
def store(tmp_path: Path) -> ReviewStore:
    store = ReviewStore.from_url(f"sqlite:///{tmp_path / 'review.db'}")
    store.push_sample(BATCH, "v1", *make_sample())
    return store


@pytest.fixture()
def app(store: ReviewStore):
    return create_app(store, reviewer_hash, b"session-secret-for-tests-0123456789")


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(client: TestClient, store: ReviewStore, reviewer: str = "alice") -> str:
    token = store.add_reviewer(reviewer)
    response = client.post("/signin", data={"csrf": csrf_of(client.get("/").text), "token": token},
                           follow_redirects=False)
    assert response.status_code == 303
    return token


def form_of(page: str) -> dict[str, str]:
    """The decision form's hidden fields (csrf, row_id, sample_version), HTML-unescaped."""
    form = page[page.index('id="decision-form"'):]
    return {name: html.unescape(value) for name, value in
            re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', form)}


def test_sign_in_is_required(app, store: ReviewStore):
    client = TestClient(app)
    home = client.get("/")
    assert home.status_code == 200 and 'id="token"' in home.text and 'id="row"' not in home.text
    response = client.get(f"/batch/{BATCH}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    response = client.post(f"/batch/{BATCH}/decide", data={"csrf": csrf_of(home.text), "verdict": "accept"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert store.progress(BATCH).decided == 0


def test_wrong_token_is_refused_without_detail(app, store: ReviewStore):
    store.add_reviewer("alice")
    client = TestClient(app)
    wrong = "not-a-token-<script>alert(1)</script>"
    response = client.post("/signin", data={"csrf": csrf_of(client.get("/").text), "token": wrong})
    assert response.status_code == 401
    assert "not-a-token" not in response.text and "alice" not in response.text
    assert client.get(f"/batch/{BATCH}", follow_redirects=False).status_code == 303  # still signed out


def test_csrf_is_enforced(app, store: ReviewStore):
    client = TestClient(app)
    token = store.add_reviewer("alice")
    assert client.post("/signin", data={"token": token}).status_code == 403
    assert client.post("/signin", data={"token": token, "csrf": "forged"}).status_code == 403
    sign_in(client, store, "bob")
    fields = form_of(client.get(f"/batch/{BATCH}").text)
    for csrf in (None, "forged", csrf_of(TestClient(app).get("/").text)):  # missing, wrong, another session's
        data = {**fields, "verdict": "accept"}
        data.pop("csrf")
        if csrf:
            data["csrf"] = csrf
        assert client.post(f"/batch/{BATCH}/decide", data=data, follow_redirects=False).status_code == 403
    assert store.progress(BATCH).decided == 0


def test_hostile_row_is_escaped_and_security_headers_are_set(app, store: ReviewStore):
    client = TestClient(app)
    sign_in(client, store)
    response = client.get(f"/batch/{BATCH}")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    row = response.text[response.text.index('<article id="row"'):response.text.index("</article>")]
    assert HOSTILE_HTML not in response.text
    assert "<img" not in row and "<script" not in row
    assert str(markupsafe.escape(HOSTILE_HTML)) in row  # shown as text
    assert "&lt;/pre&gt;&lt;img" in row  # a closing tag in the text cannot break out of its element
    for marker in ("score_quality", "score_toxicity", "seed-0", "tpl-v1", "self_instruct", "en-GB"):
        assert marker in row
    js = client.get("/static/review.js")
    assert js.status_code == 200 and js.headers["x-content-type-options"] == "nosniff"
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js.text


def test_session_cookie_is_httponly_strict_and_signed(app, store: ReviewStore):
    client = TestClient(app)
    token = store.add_reviewer("alice")
    response = client.post("/signin", data={"csrf": csrf_of(client.get("/").text), "token": token},
                           follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    value = client.cookies[COOKIE_NAME]
    assert token not in value
    payload, signature = value.split(".")
    forged = TestClient(app)
    forged.cookies.set(COOKIE_NAME, f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}")
    assert forged.get(f"/batch/{BATCH}", follow_redirects=False).status_code == 303

    signer = SessionSigner(b"x" * 32, max_age=60)
    assert signer.loads(signer.dumps({"reviewer": "a", "csrf": "c"}))["reviewer"] == "a"
    assert SessionSigner(b"y" * 32).loads(signer.dumps({"reviewer": "a"})) is None  # other key
    assert SessionSigner(b"x" * 32, max_age=-1).loads(signer.dumps({"reviewer": "a"})) is None  # expired


def test_decision_is_recorded_with_the_reviewer_hmac(app, store: ReviewStore, tmp_path: Path):
    client = TestClient(app)
    sign_in(client, store, "alice")
    page = client.get(f"/batch/{BATCH}").text
    fields = form_of(page)
    first = fields["row_id"]
    assert first == store.items(BATCH)["row_id"][0]
    response = client.post(f"/batch/{BATCH}/decide", data={**fields, "verdict": "reject",
                                                          "reason_category": "unsafe",
                                                          "reason_text": JAILBREAK}, follow_redirects=False)
    assert response.status_code == 303
    after = client.get(response.headers["location"])
    assert "Decision recorded" in after.text
    assert form_of(after.text)["row_id"] != first  # the next item
    decisions = store.decisions(BATCH)
    assert list(decisions["row_id"]) == [first]
    assert decisions.loc[0, "reviewer_hmac"] == reviewer_hash("alice")
    assert (decisions.loc[0, "verdict"], decisions.loc[0, "reason_category"]) == ("reject", "unsafe")
    assert decisions.loc[0, "reason_text"] == JAILBREAK
    with sqlite3.connect(tmp_path / "review.db") as conn:
        rows = conn.execute("SELECT * FROM review_decisions").fetchall()
    assert rows and not [r for r in rows if "alice" in map(str, r)]


def test_invalid_decision_is_refused_and_the_item_shown_again(app, store: ReviewStore):
    client = TestClient(app)
    sign_in(client, store)
    fields = form_of(client.get(f"/batch/{BATCH}").text)
    response = client.post(f"/batch/{BATCH}/decide", data={**fields, "verdict": "reject", "reason_category": ""})
    assert response.status_code == 400
    assert "reason_category" in response.text
    assert form_of(response.text)["row_id"] == fields["row_id"]
    assert store.progress(BATCH).decided == 0


def test_row_decided_by_another_reviewer_first(app, store: ReviewStore):
    client = TestClient(app)
    sign_in(client, store, "alice")
    fields = form_of(client.get(f"/batch/{BATCH}").text)
    assert store.record_decision(BATCH, fields["row_id"], sample_version=fields["sample_version"],
                                 reviewer_hmac=reviewer_hash("bob"), verdict="accept",
                                 reason_category=None) == "recorded"
    response = client.post(f"/batch/{BATCH}/decide", data={**fields, "verdict": "reject",
                                                          "reason_category": "factual_error"})
    assert response.status_code == 200
    assert "Another reviewer decided that row first" in response.text
    assert form_of(response.text)["row_id"] != fields["row_id"]
    assert store.decisions(BATCH).set_index("row_id").loc[fields["row_id"], "reviewer_hmac"] == reviewer_hash("bob")


def test_home_shows_progress_per_batch_and_slice_and_completion(app, store: ReviewStore):
    client = TestClient(app)
    sign_in(client, store)
    items = store.items(BATCH)
    for row_id in items["row_id"][:2]:
        store.record_decision(BATCH, row_id, sample_version="v1", reviewer_hmac="x", verdict="accept",
                              reason_category=None)
    home = client.get("/").text
    assert f"2 / {len(items)} decided" in home
    for slice_key in store.slices(BATCH)["slice_key"]:
        assert f"<td>{slice_key}</td>" in home
    for row_id in items["row_id"][2:]:
        store.record_decision(BATCH, row_id, sample_version="v1", reviewer_hmac="x", verdict="accept",
                              reason_category=None)
    page = client.get(f"/batch/{BATCH}").text
    assert 'id="complete"' in page and 'id="row"' not in page
    assert client.get("/batch/1999-01-01").status_code == 404


def test_reissuing_a_token_ends_existing_sessions_and_sessions_expire_from_sign_in(store: ReviewStore, monkeypatch):
    from synqa_dagster.review.webapp import create_app

    app = create_app(store, reviewer_hash, b"s" * 32, session_max_age=100)
    client = TestClient(app)
    sign_in(client, store)
    assert client.get(f"/batch/{BATCH}", follow_redirects=False).status_code == 200
    store.add_reviewer("alice")  # a new token for alice revokes the old one, and the session built on it
    assert client.get(f"/batch/{BATCH}", follow_redirects=False).status_code == 303
    # an active session still ends max_age after sign-in (page loads do not extend it)
    import time as _time

    sign_in(client, store)
    start = _time.time()
    for offset in (50, 90):
        monkeypatch.setattr("synqa_dagster.review.webapp.time.time", lambda o=offset: start + o)
        assert client.get(f"/batch/{BATCH}", follow_redirects=False).status_code == 200
    monkeypatch.setattr("synqa_dagster.review.webapp.time.time", lambda: start + 120)
    assert client.get(f"/batch/{BATCH}", follow_redirects=False).status_code == 303


# ------------------------------------------------------------------------------------------- server-side sessions
def cookie_data(value: str) -> dict:
    """The JSON payload of a session cookie value (unverified; for looking inside only)."""
    import base64
    import json

    payload = value.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def signed_in(client: TestClient) -> bool:
    """Whether ``client``'s cookie opens the review page (200) rather than bouncing to sign-in (303 to /)."""
    response = client.get(f"/batch/{BATCH}", follow_redirects=False)
    assert response.status_code in (200, 303), response.status_code
    if response.status_code == 303:
        assert response.headers["location"] == "/"
    return response.status_code == 200


def test_a_cookie_copied_before_sign_out_is_refused_after_it(app, store: ReviewStore, tmp_path: Path):
    client = TestClient(app)
    sign_in(client, store, "alice")
    page = client.get(f"/batch/{BATCH}")
    assert page.status_code == 200
    fields = form_of(page.text)
    copied = client.cookies[COOKIE_NAME]
    data = cookie_data(copied)
    assert set(data) == {"sid", "csrf", "iat"}  # no reviewer id, no token: the store knows who it is
    with sqlite3.connect(tmp_path / "review.db") as conn:
        rows = conn.execute("SELECT session_sha256, reviewer_id, revoked_at FROM review_sessions").fetchall()
    assert rows == [(hashlib.sha256(data["sid"].encode()).hexdigest(), "alice", None)]  # only the hash is stored

    response = client.post("/signout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert COOKIE_NAME in response.headers["set-cookie"] and "max-age=0" in response.headers["set-cookie"].lower()
    assert COOKIE_NAME not in client.cookies  # cleared in the browser
    home = client.get("/")
    assert 'id="token"' in home.text and 'id="reviewer"' not in home.text
    with sqlite3.connect(tmp_path / "review.db") as conn:
        assert conn.execute("SELECT revoked_at FROM review_sessions").fetchone()[0] is not None

    replay = TestClient(app)
    replay.cookies.set(COOKIE_NAME, copied)
    response = replay.get(f"/batch/{BATCH}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    home = replay.get("/")
    assert home.status_code == 200 and 'id="token"' in home.text
    assert 'id="reviewer"' not in home.text and "alice" not in home.text and 'id="row"' not in home.text
    replay.cookies.set(COOKIE_NAME, copied)  # the sign-in page replaced it; replay it once more on a decision
    response = replay.post(f"/batch/{BATCH}/decide", data={**fields, "verdict": "accept"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert store.progress(BATCH).decided == 0


def test_re_adding_or_removing_a_reviewer_revokes_their_live_sessions(app, store: ReviewStore):
    alice, alice_elsewhere, bob = TestClient(app), TestClient(app), TestClient(app)
    sign_in(alice, store, "alice")
    token = store.add_reviewer("carol")  # unrelated: re-adding someone else touches no session
    sign_in(bob, store, "bob")
    alice_token = sign_in(alice_elsewhere, store, "alice")  # a second token for alice: ends the first session
    assert not signed_in(alice) and signed_in(alice_elsewhere) and signed_in(bob)

    page = alice_elsewhere.get(f"/batch/{BATCH}").text
    store.add_reviewer("alice")  # re-issued while the page is open
    assert not signed_in(alice_elsewhere) and signed_in(bob)
    # the session is gone, but the sign-out button of the page still works (the cookie kept its CSRF token)
    assert alice_elsewhere.post("/signout", data={"csrf": csrf_of(page)}, follow_redirects=False).status_code == 303
    # the revoked token cannot open a new session
    response = alice_elsewhere.post("/signin", data={"csrf": csrf_of(alice_elsewhere.get("/").text),
                                                     "token": alice_token})
    assert response.status_code == 401 and not signed_in(alice_elsewhere)

    assert store.remove_reviewer("bob") is True
    assert not signed_in(bob)
    assert store.remove_reviewer("bob") is False
    assert store.reviewer_for_token(token) == "carol"


def test_signing_in_again_replaces_the_session_and_old_cookie_formats_are_signed_out(store: ReviewStore):
    secret = b"session-secret-for-tests-0123456789"
    app = create_app(store, reviewer_hash, secret)
    client = TestClient(app)
    sign_in(client, store, "alice")
    first = client.cookies[COOKIE_NAME]
    token = store.add_reviewer("bob")
    client.post("/signin", data={"csrf": csrf_of(client.get("/").text), "token": token}, follow_redirects=False)
    assert cookie_data(client.cookies[COOKIE_NAME])["sid"] != cookie_data(first)["sid"]  # a fresh session id
    assert "signed in as bob" in client.get("/").text
    replay = TestClient(app)
    replay.cookies.set(COOKIE_NAME, first)
    assert not signed_in(replay)  # the browser's previous session was revoked at the new sign-in

    # a validly signed cookie of the format before server-side sessions ({reviewer, tok, csrf, iat}) is not enough
    alice_token = store.add_reviewer("alice")
    old = SessionSigner(secret).dumps({"reviewer": "alice", "csrf": "c" * 43,
                                       "tok": hashlib.sha256(alice_token.encode()).hexdigest()})
    legacy = TestClient(app)
    legacy.cookies.set(COOKIE_NAME, old)
    assert not signed_in(legacy)
