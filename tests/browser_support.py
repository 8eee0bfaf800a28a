"""Helpers for browser tests: the review app served by uvicorn in a thread, and headless Debian chromium.

``start_review_server(store, reviewer_hash)`` yields the base URL of a live review app on a free 127.0.0.1 port
(bound before the server starts, so there is no port race); ``chromium_driver()`` yields a Selenium WebDriver for
``/usr/bin/chromium`` through ``/usr/bin/chromedriver``. Both paths are given explicitly and ``SE_OFFLINE`` is set,
so Selenium Manager never downloads a browser or a driver. Missing binaries FAIL the test with what to install.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = os.environ.get("SYNQA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SYNQA_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000")


@contextmanager
def start_review_server(store, reviewer_hash: Callable[[str], str], session_secret: bytes | None = None,
                        host: str = "127.0.0.1", **app_options) -> Iterator[str]:
    """Serve ``create_app(store, reviewer_hash, session_secret, **app_options)`` with uvicorn in a daemon thread.

    Yields:
        the base URL, e.g. ``http://127.0.0.1:41234`` (no trailing slash). The server stops on exit.
    """
    import uvicorn

    from synqa_dagster.review.webapp import create_app

    app = create_app(store, reviewer_hash, session_secret or os.urandom(32), **app_options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="review-server")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the review server did not start within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def chromium_driver(extra_args: tuple[str, ...] = ()) -> Iterator:
    """A headless chromium WebDriver (Debian's chromium + chromedriver) with a throwaway profile; quits on exit.

    Browser console messages are captured (``driver.get_log("browser")``).
    """
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} not found: install the Debian package {package} (or set SYNQA_CHROMIUM / "
                        f"SYNQA_CHROMEDRIVER)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must never go online
    profile = tempfile.mkdtemp(prefix="synqa-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", *extra_args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
