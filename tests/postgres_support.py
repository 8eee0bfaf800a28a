"""A real PostgreSQL server for tests: the session-scoped ``postgres_url`` fixture.

Uses ``$SYNQA_TEST_POSTGRES_URL`` when set. Otherwise it finds the server binaries (``$SYNQA_PG_BINDIR``, then
``initdb`` on PATH, then the newest ``/usr/lib/postgresql/*/bin``), runs ``initdb`` into a temporary folder
(as the ``postgres`` user when the tests run as root: initdb refuses root), starts the server with ``pg_ctl`` on a
free 127.0.0.1 port with its unix socket inside that folder, creates a database and yields
``postgresql://<user>@127.0.0.1:<port>/synqa_test``. The server is stopped and the folder deleted at the end.
Missing binaries FAIL the requesting tests with a message saying what to install (never a skip).

Import it from a test module as ``from tests.postgres_support import postgres_url`` (``tests`` is a package in
this repo, so pytest puts the project root, not ``tests/``, on ``sys.path``). A session fixture imported into
several modules is one fixture per module (one server each); to share one server across modules, list this module
in ``pytest_plugins`` of the root ``tests/conftest.py`` instead of importing it. The function-scoped
``postgres_schema_url`` fixture (or :func:`fresh_schema_url`) gives each test its own schema in that database.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit, parse_qsl, urlencode

import pytest

ENV_URL = "SYNQA_TEST_POSTGRES_URL"
ENV_BINDIR = "SYNQA_PG_BINDIR"


def find_pg_bindir() -> Path | None:
    """Folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    candidates = [os.environ.get(ENV_BINDIR)]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).resolve().parent) if on_path else None)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version_key(Path(p).parent.name))
    candidates.extend(reversed(versions))
    for candidate in candidates:
        if candidate and all((Path(candidate) / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    return None


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """A throwaway PostgreSQL cluster in ``root`` (``start`` / ``stop``); trust auth, 127.0.0.1 only.

    Attributes:
        bindir: the server binaries. root: the temporary folder (data in ``root/data``, socket in ``root``).
        port: the TCP port. user: the superuser name (the OS user that owns the cluster).
    """

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="synqa-pg-"))
        self.port = 0
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.user = self.run_as or _current_user()

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def start(self, database: str = "synqa_test") -> str:
        """initdb, start on a free port, create ``database``; returns its URL."""
        if self.run_as:
            shutil.chown(self.root, user=self.run_as)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        for attempt in range(5):
            self.port = _free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
            try:
                self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                          "-o", options, "start")
                break
            except RuntimeError:
                if attempt == 4:
                    log = (self.root / "server.log")
                    raise RuntimeError(f"PostgreSQL did not start; log:\n{log.read_text() if log.exists() else ''}")
        import psycopg

        url = f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}"
        with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return f"{url}/{database}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the folder."""
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _current_user() -> str:
    import getpass

    return getpass.getuser()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database for this test session (``$SYNQA_TEST_POSTGRES_URL`` or a local server)."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the Debian package "
                    f"postgresql (e.g. postgresql-15), set {ENV_BINDIR} to their folder, or set {ENV_URL} to a "
                    f"running database", pytrace=False)
    server = LocalPostgres(bindir)
    try:
        url = server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"could not start a local PostgreSQL from {bindir}: {exc}", pytrace=False)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture()
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A fresh empty schema in the session's database (as search_path in the URL); dropped after the test."""
    url = fresh_schema_url(postgres_url)
    yield url
    drop_schema(url)


def drop_schema(url: str) -> None:
    """Drop the schema a :func:`fresh_schema_url` URL points at (and everything in it)."""
    import psycopg

    options = dict(parse_qsl(urlsplit(url).query)).get("options", "")
    schema = options.removeprefix("-csearch_path=")
    if not schema.startswith("t_"):
        raise ValueError(f"not a URL made by fresh_schema_url: options={options!r}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def fresh_schema_url(url: str) -> str:
    """Create a new empty schema in the database at ``url``; returns ``url`` with that schema as search_path.

    Gives each test an isolated set of tables without the cost of creating a database.
    """
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))
