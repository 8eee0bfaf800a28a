"""The Dagster UI serves the code location: the webserver starts on 127.0.0.1 and shows the funnel's lineage."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPO_ROOT

QUERY = """{ assetNodes { assetKey { path } groupName description dependencyKeys { path } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webserver_shows_the_asset_lineage(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "SYNQA_STORAGE": str(tmp_path / "storage")}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-m", "synqa_dagster.definitions"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/server_info", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("webserver did not start:\n" + proc.stdout.read1(20000).decode(errors="replace"))
                time.sleep(1)
        request = urllib.request.Request(base + "/graphql", data=json.dumps({"query": QUERY}).encode(), headers={"Content-Type": "application/json"})
        nodes = json.loads(urllib.request.urlopen(request, timeout=60).read())["data"]["assetNodes"]
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert {"seed_corpus", "generated_candidates", "accepted_dataset", "reject_log"} <= set(by_key)
        deps = {"/".join(d["path"]) for d in by_key["generated_candidates"]["dependencyKeys"]}
        assert deps == {"seed_corpus"}
        assert by_key["generated_candidates"]["groupName"] == "generation" and by_key["generated_candidates"]["description"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
