"""A reviewer in headless chromium: sign in, see a hostile row as plain text, reject it, accept the next, by keyboard."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from selenium.common.exceptions import (
    NoSuchElementException, StaleElementReferenceException, TimeoutException, WebDriverException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from synqa_dagster.lineage.keys import hmac_id
from synqa_dagster.review.store import ReviewStore
from tests.browser_support import chromium_driver, start_review_server
from tests.test_review_store import BATCH, HOSTILE_HTML, JAILBREAK, make_sample

SECRET = b"browser-test-reviewer-hmac-key-32"
REASON = "Prompt-injection payload <b>not</b> for training"


def reviewer_hash(reviewer_id: str) -> str:
    return hmac_id(SECRET, reviewer_id)


WAIT_S = 15
# What a probe may meet while the browser swaps one page for the next (chromedriver's words, lower-cased): the
# old page's nodes and script context disappear under it. A wait treats these as "not yet" and polls again;
# any other WebDriver error still fails the test at once.
NAVIGATION_RACES = ("does not belong to the document", "no node with given id", "cannot find context with specified id",
                    "execution context was destroyed", "inspected target navigated or closed")


def wait_for(driver, condition, message: str = "", timeout: float = WAIT_S):
    """``WebDriverWait(driver, timeout).until(condition)``, where the races of a page being replaced (stale or
    missing elements, a torn-down document) count as "condition not met yet"."""
    def probe(d):
        try:
            return condition(d)
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        except WebDriverException as error:
            if any(race in (error.msg or "").lower() for race in NAVIGATION_RACES):
                return False
            raise

    return WebDriverWait(driver, timeout).until(probe, message)


def page_loaded(driver) -> bool:
    return driver.execute_script("return document.readyState") == "complete"


def mark_page(driver) -> str:
    """Tag the current document with a fresh token (a global of its window; the next document starts without it)."""
    token = uuid.uuid4().hex
    driver.execute_script("window.__synqaTestPage = arguments[0];", token)
    return token


def left_page(token: str):
    """Wait condition: the document tagged ``token`` is gone and its successor has finished loading."""
    return lambda d: d.execute_script(
        "return window.__synqaTestPage !== arguments[0] && document.readyState === 'complete';", token)


def current_row_id(driver) -> str | None:
    """The ``data-row-id`` of the row on screen (None on the complete / waiting page), read in one script call
    so that no element handle is held across a navigation."""
    return driver.execute_script("var r = document.getElementById('row'); return r && r.getAttribute('data-row-id');")


def decided_count(driver) -> int | None:
    """``#progress[data-decided]`` of the batch page on screen (None when the page has no progress line)."""
    value = driver.execute_script("var p = document.getElementById('progress'); return p && p.getAttribute('data-decided');")
    return None if value is None else int(value)


def sign_in(driver, base_url: str, token: str) -> None:
    """Sign in through the form and wait for the start page (signed in, fully loaded)."""
    driver.get(f"{base_url}/")
    driver.find_element(By.ID, "token").send_keys(token)
    page = mark_page(driver)
    driver.find_element(By.ID, "signin").click()
    wait_for(driver, left_page(page), "signing in did not load a new page")
    wait_for(driver, lambda d: d.find_elements(By.ID, "reviewer"), "the start page (signed in) did not load")


def press(driver, *keys: str, submits: bool | None = None) -> None:
    """Type keys into whatever has focus (as a reviewer at the keyboard would).

    When the keys submit the decision form (by default: when the last key is Enter), wait until the browser has
    replaced the page and finished loading the next one (review.js included), so that callers only ever touch
    elements of the new page: no stale element, no keypress lost to a page whose script has not run yet.
    """
    if submits is None:
        submits = bool(keys) and keys[-1] == Keys.ENTER
    page = mark_page(driver) if submits else None
    ActionChains(driver).send_keys(*keys).perform()
    if page is None:
        return
    try:
        wait_for(driver, left_page(page))
    except TimeoutException:
        hint = driver.find_element(By.ID, "form-hint").text if driver.find_elements(By.ID, "form-hint") else ""
        raise AssertionError(f"the keys did not submit the form (form hint: {hint!r})") from None


def decide(driver, *keys: str) -> None:
    """Press keys that end in a submit and wait until the next page shows exactly one more decision."""
    before = decided_count(driver)
    assert before is not None, "not on a batch page"
    press(driver, *keys, submits=True)
    wait_for(driver, lambda d: decided_count(d) == before + 1,
             f"the page after the submit does not show {before + 1} decided")


def page_errors(driver) -> list[str]:
    """Severe browser console messages (JS errors, CSP violations), favicon misses aside."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]


@pytest.mark.browser
def test_reviewer_rejects_a_hostile_row_with_keyboard_shortcuts(tmp_path: Path):
    store = ReviewStore.from_url(f"sqlite:///{tmp_path / 'review.db'}")
    items, slices = make_sample()
    store.push_sample(BATCH, "v1", items, slices)
    hostile_id, jailbreak_id = items.loc[0, "row_id"], items.loc[1, "row_id"]
    token = store.add_reviewer("alice")

    with start_review_server(store, reviewer_hash) as base_url, chromium_driver() as driver:
        sign_in(driver, base_url, token)
        driver.get(f"{base_url}/batch/{BATCH}")
        wait_for(driver, lambda d: page_loaded(d) and current_row_id(d) is not None, "the batch page did not load")
        row = driver.find_element(By.ID, "row")
        assert row.get_attribute("data-row-id") == hostile_id
        assert HOSTILE_HTML in row.text  # shown literally, as text
        assert driver.find_elements(By.CSS_SELECTOR, "#row img, #row script, #row b") == []
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        assert "a accept" in driver.find_element(By.ID, "shortcuts").text
        assert driver.find_element(By.ID, "progress").get_attribute("data-decided") == "0"

        press(driver, "r", "4")
        assert driver.find_element(By.ID, "reject").is_selected()
        assert Select(driver.find_element(By.ID, "category")).first_selected_option.get_attribute("value") == "unsafe"
        press(driver, "t")
        assert driver.switch_to.active_element.get_attribute("id") == "reason-text"
        press(driver, REASON, Keys.ESCAPE)  # "r", "a" and "4" inside the text are text, not shortcuts
        assert driver.find_element(By.ID, "reject").is_selected()
        press(driver, Keys.ENTER)  # returns once the next page has replaced this one and finished loading

        assert "notice=recorded" in driver.current_url
        assert driver.find_element(By.ID, "notice").text == "Decision recorded."
        assert decided_count(driver) == 1
        row = driver.find_element(By.ID, "row")
        assert row.get_attribute("data-row-id") == jailbreak_id
        assert JAILBREAK in row.text
        assert driver.execute_script("return typeof window.__pwned") == "undefined"

        decide(driver, "a", Keys.ENTER)  # accept the jailbreak row (its refusal is fine) from the keyboard
        assert current_row_id(driver) not in (None, hostile_id, jailbreak_id)
        assert page_errors(driver) == []

    decisions = store.decisions(BATCH).set_index("row_id")
    assert sorted(decisions.index) == sorted([hostile_id, jailbreak_id])
    decision = decisions.loc[hostile_id]
    assert (decision["verdict"], decision["reason_category"], decision["reason_text"]) == ("reject", "unsafe", REASON)
    assert decision["reviewer_hmac"] == reviewer_hash("alice")
    accepted = decisions.loc[jailbreak_id]
    assert accepted["verdict"] == "accept" and accepted["reason_category"] is None
    assert accepted["reviewer_hmac"] == reviewer_hash("alice")


def on_sign_in_page(driver) -> bool:
    """Wait condition: the sign-in page is on screen and loaded (token field present, nobody signed in)."""
    return driver.execute_script(
        "return document.readyState === 'complete' && !!document.getElementById('token') "
        "&& !document.getElementById('reviewer');")


@pytest.mark.browser
def test_sign_out_ends_the_session_and_a_replayed_cookie_is_refused(tmp_path: Path):
    from synqa_dagster.review.webapp import COOKIE_NAME

    store = ReviewStore.from_url(f"sqlite:///{tmp_path / 'review.db'}")
    store.push_sample(BATCH, "v1", *make_sample())
    token = store.add_reviewer("alice")

    with start_review_server(store, reviewer_hash) as base_url, chromium_driver() as driver:
        sign_in(driver, base_url, token)
        driver.get(f"{base_url}/batch/{BATCH}")
        wait_for(driver, lambda d: page_loaded(d) and current_row_id(d) is not None, "the batch page did not load")
        copied = driver.get_cookie(COOKIE_NAME)
        assert copied and copied["httpOnly"] and copied.get("sameSite") == "Strict"
        assert driver.execute_script("return document.cookie") == ""  # HttpOnly: page scripts cannot read it

        page = mark_page(driver)
        driver.find_element(By.ID, "signout").click()
        wait_for(driver, left_page(page), "signing out did not load a new page")
        wait_for(driver, on_sign_in_page, "signing out did not lead to the sign-in page")
        assert driver.current_url == f"{base_url}/"
        assert (driver.get_cookie(COOKIE_NAME) or {}).get("value") != copied["value"]

        # the copied cookie, put back into the browser, no longer opens the review page
        driver.delete_all_cookies()
        driver.add_cookie({"name": COOKIE_NAME, "value": copied["value"], "path": "/", "httpOnly": True})
        driver.get(f"{base_url}/batch/{BATCH}")
        wait_for(driver, on_sign_in_page, "the replayed cookie was not sent to the sign-in page")
        assert driver.current_url == f"{base_url}/"
        assert driver.find_elements(By.ID, "row") == []

        sign_in(driver, base_url, token)  # signing in again works
        driver.get(f"{base_url}/batch/{BATCH}")
        wait_for(driver, lambda d: page_loaded(d) and current_row_id(d) is not None, "the batch page did not load")
        assert page_errors(driver) == []
    assert store.progress(BATCH).decided == 0
