"""Crash safety end to end: `synqa demo` killed with SIGKILL during generation and during the gates, an overlapping
run of the same batch, and a re-run that fails — with the real tiny LLM, a real Dagster instance and the real CLI
in its own process group, as a user (or an OOM killer) would hit it.

What must hold after each: what the batch shipped (every published table, the signed handover folder, the
roll-up) is byte-identical to what it was; no generation process is left behind; the killed run does not stay
STARTED; and the next run succeeds with byte-identical outputs (same batch, same recipe, same machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import REPO_ROOT, TINY, write_recipe

BATCH = "2026-11-02"
RUNNER = "synqa_dagster.generation.runner"


def _digest(root: Path) -> dict[str, str]:
    """Every published file under ``root`` (run staging and dot-folders excluded) with its sha256."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _runner_pids(marker: str) -> list[int]:
    """Live generation-runner processes whose command line mentions ``marker`` (this test's folder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if RUNNER in cmd and marker in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids


class World:
    """One isolated instance (DAGSTER_HOME, storage, handover, caches) shared by the steps below."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        synqa_home = tmp / "synqa_home"
        synqa_home.mkdir()
        for sub in ("models",):  # reuse the tokenizer built from the GGUF (derived, rebuilt if absent)
            if (REPO_ROOT / ".synqa" / sub).is_dir():
                (synqa_home / sub).symlink_to(REPO_ROOT / ".synqa" / sub)
        if (REPO_ROOT / ".synqa" / "cache" / "models").is_dir():  # the distilled static embedding model
            (synqa_home / "cache").mkdir()
            (synqa_home / "cache" / "models").symlink_to(REPO_ROOT / ".synqa" / "cache" / "models")
        self.storage, self.handover = tmp / "storage", synqa_home / "handover"
        self.recipe = write_recipe(tmp / "tiny.yaml", **TINY)
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "SYNQA_STORAGE": str(self.storage),
                    "SYNQA_HOME": str(synqa_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "PYTHONUNBUFFERED": "1"}
        self.logs = 0

    def cmd(self) -> list[str]:
        return [sys.executable, "-m", "synqa_dagster.cli", "--recipe", str(self.recipe), "demo", "--batch", BATCH]

    def start(self, **env) -> tuple[subprocess.Popen, Path]:
        self.logs += 1
        log = self.tmp / f"run{self.logs}.log"
        proc = subprocess.Popen(self.cmd(), cwd=REPO_ROOT, env={**self.env, **env}, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log

    def run(self, timeout: int = 900, **env) -> tuple[int, str]:
        proc, log = self.start(**env)
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return rc, log.read_text(errors="replace")

    def published(self) -> dict[str, dict[str, str]]:
        return {"storage": _digest(self.storage), "handover": _digest(self.handover)}

    def kill_when(self, proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        while not ready(log.read_text(errors="replace")):
            assert proc.poll() is None, f"the run ended before {what}:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"{what} never happened:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole `synqa demo` process group, as a terminal's kill would
        proc.wait(timeout=30)

    def runs(self) -> list[dg.DagsterRun]:
        old = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.home)
        try:
            with dg.DagsterInstance.get() as instance:
                return list(instance.get_runs())
        finally:
            if old is None:
                os.environ.pop("DAGSTER_HOME")
            else:
                os.environ["DAGSTER_HOME"] = old


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("crash"))
    rc, out = w.run()
    assert rc == 0, out[-4000:]
    w.baseline = w.published()
    assert any(k.startswith("accepted_dataset/") for k in w.baseline["storage"])
    assert f"batch={BATCH}/manifest.dsse.json" in w.baseline["handover"] and "batches.json" in w.baseline["handover"]
    return w


def _assert_no_orphans(world: World) -> None:
    deadline = time.time() + 15
    while _runner_pids(str(world.tmp)) and time.time() < deadline:
        time.sleep(0.2)
    assert _runner_pids(str(world.tmp)) == [], "the generation child outlived its killed parent"


def test_kill_9_during_generation_leaves_no_orphan_and_the_shipped_batch_intact(world):
    proc, log = world.start()
    world.kill_when(proc, log, lambda _: bool(_runner_pids(str(world.tmp))), "generation started")
    _assert_no_orphans(world)
    assert world.published() == world.baseline  # nothing shipped was touched
    killed = [r for r in world.runs() if r.status == dg.DagsterRunStatus.STARTED]
    assert len(killed) == 1  # the killed run: STARTED until someone notices its worker is gone

    # an overlapping run of the same batch is refused while the re-run generates; the re-run then succeeds
    proc, log = world.start()
    deadline = time.time() + 600
    while not _runner_pids(str(world.tmp)):
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    second = subprocess.run(world.cmd(), cwd=REPO_ROOT, env=world.env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"batch {BATCH} is already being built by" in second.stderr and "Traceback" not in second.stderr
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    assert world.published() == world.baseline  # byte-identical outputs from the successful re-run
    by_id = {r.run_id: r for r in world.runs()}
    assert by_id[killed[0].run_id].status == dg.DagsterRunStatus.FAILURE  # marked failed by the next run


def test_kill_9_during_the_gates_then_a_rerun_gives_byte_identical_outputs(world):
    gate_started = lambda text: 'Started execution of step "quality_gate"' in text  # noqa: E731
    proc, log = world.start(SYNQA_LOG_LEVEL="DEBUG")  # step events are logged at DEBUG
    world.kill_when(proc, log, gate_started, "the quality gate started")
    _assert_no_orphans(world)
    assert world.published() == world.baseline
    staged = list((world.storage / ".runs").iterdir()) if (world.storage / ".runs").is_dir() else []
    assert staged, "the killed run had staged nothing (was it killed in the gates?)"
    rc, out = world.run()
    assert rc == 0, out[-4000:]
    assert world.published() == world.baseline
    assert not (world.storage / ".runs").is_dir() or not any((world.storage / ".runs").iterdir())  # staging swept
    assert not any(r.status == dg.DagsterRunStatus.STARTED for r in world.runs())


def test_a_failed_rerun_keeps_what_the_batch_shipped_and_says_so(world):
    rc, out = world.run(SYNQA_GENERATION_TIMEOUT_S="1")  # a stalled generation: the re-run fails
    assert rc == 1, out[-4000:]
    assert world.published() == world.baseline  # the old accepted split, handover and roll-up stay valid
    assert "FAILED" in out and "rolled back" in out
    assert "still holds the outputs of its last committed run" in out
    rolled = [r for r in world.runs() if r.tags.get("synqa/txn") == "rolled-back"]
    assert rolled and rolled[0].status == dg.DagsterRunStatus.FAILURE
    listed = json.loads((world.handover / "batches.json").read_text())
    assert [b["batch"] for b in listed] == [BATCH]
