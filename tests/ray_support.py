"""A real local Ray cluster for the engine tests (pytest plugin, registered in ``tests/conftest.py``).

``ray_address`` starts ``ray start --head --block`` in its own temp dir on free ports (2 CPUs, no dashboard), with
``PYTHONPATH`` = the repo so workers import the test modules, waits for it, yields ``127.0.0.1:<port>``, and on
teardown disconnects this process and stops *that* head (SIGTERM to the process it started, which takes its
Ray processes down with it) — never ``ray stop``, which would stop every Ray on the machine. A missing ``ray``
fails the test (it is a dependency of the engine), it is never skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    import ray  # noqa: F401  (missing ray = a failure, not a skip)

    ray_bin = Path(sys.executable).with_name("ray")
    assert ray_bin.exists(), f"ray CLI not found next to {sys.executable}"
    temp = tempfile.mkdtemp(prefix="synqa-ray-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp) / "head.log", "wb")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", temp, "--disable-usage-stats",
         "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
         "--metrics-export-port", str(_free_port())],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"ray head exited ({head.returncode}): {(Path(temp) / 'head.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("ray head did not open its port in 90 s")
                time.sleep(0.5)
        time.sleep(2)  # raylet registers after the GCS opens its port
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # our own process group (start_new_session): the head and its children
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=10)
        log.close()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
