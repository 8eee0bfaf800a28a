"""A reviewer in headless chromium: sign in, see a hostile row as plain text, reject it with the keyboard."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def sign_in(driver, base_url: str, token: str) -> None:
    """Sign in through the form and wait for the start page."""
    driver.get(f"{base_url}/")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin").click()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "reviewer"))


def press(driver, *keys: str) -> None:
    """Type keys into whatever has focus (as a reviewer at the keyboard would)."""
    ActionChains(driver).send_keys(*keys).perform()


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
        press(driver, Keys.ENTER)

        WebDriverWait(driver, 10).until(lambda d: "notice=recorded" in d.current_url)
        assert driver.find_element(By.ID, "notice").text == "Decision recorded."
        assert driver.find_element(By.ID, "progress").get_attribute("data-decided") == "1"
        row = driver.find_element(By.ID, "row")
        assert row.get_attribute("data-row-id") == jailbreak_id
        assert JAILBREAK in row.text
        assert driver.execute_script("return typeof window.__pwned") == "undefined"
        assert page_errors(driver) == []

    decisions = store.decisions(BATCH)
    assert len(decisions) == 1
    decision = decisions.iloc[0]
    assert (decision["row_id"], decision["verdict"], decision["reason_category"], decision["reason_text"]) == \
        (hostile_id, "reject", "unsafe", REASON)
    assert decision["reviewer_hmac"] == reviewer_hash("alice")
