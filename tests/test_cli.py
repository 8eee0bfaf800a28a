"""The command-line paths a user runs: Dagster's own CLI against the repo's instance, and `synqa stale`."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from synqa_dagster.config import load_recipe
from tests.conftest import REPO_ROOT

VENV_BIN = Path(sys.executable).parent


def _env(**extra) -> dict:
    env = os.environ.copy()
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_dagster_cli_materializes_with_the_repo_instance(tmp_path):
    """`dagster asset materialize` with DAGSTER_HOME = the repo (its dagster.yaml, its .synqa instance)."""
    storage = tmp_path / "storage"
    proc = subprocess.run(
        [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "synqa_dagster.definitions",
         "--select", "seed_corpus", "--partition", "2026-11-03"],
        cwd=REPO_ROOT, env=_env(DAGSTER_HOME=REPO_ROOT, SYNQA_STORAGE=storage),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = pd.read_parquet(storage / "seed_corpus" / "batch=2026-11-03" / "data.parquet")
    assert len(rows) >= 120
    assert (REPO_ROOT / ".synqa" / "dagster" / "storage").is_dir()  # the run went to the repo's instance


def test_synqa_stale_lists_and_backfill_stale_targets_old_batches(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = _env(DAGSTER_HOME=home, SYNQA_STORAGE=tmp_path / "storage", SYNQA_HOME=tmp_path / "synqa_home")
    current = load_recipe().content_hash()
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            for batch, version in (("2026-11-04", "0ld0ld0ld0ld"), ("2026-11-05", current)):
                instance.report_runless_asset_event(
                    dg.AssetMaterialization("generated_candidates", partition=batch, tags={"dagster/code_version": version})
                )
    finally:
        os.environ.pop("DAGSTER_HOME")
    synqa = str(VENV_BIN / "synqa")
    out = subprocess.run([synqa, "stale"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "2026-11-04  built with recipe 0ld0ld0ld0ld" in out.stdout and "2026-11-05" not in out.stdout
    dry = subprocess.run([synqa, "backfill-stale", "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"would rebuild 2026-11-04 (recipe 0ld0ld0ld0ld -> {current})" in dry.stdout
    listing = subprocess.run([synqa, "batches"], env=env, capture_output=True, text=True, timeout=120)
    assert "2026-11-04  recipe 0ld0ld0ld0ld  STALE" in listing.stdout and "2026-11-05  recipe " + current + "  current" in listing.stdout


def test_cli_rejects_unknown_batches_and_reversed_ranges(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = _env(DAGSTER_HOME=home, SYNQA_STORAGE=tmp_path / "storage", SYNQA_HOME=tmp_path / "synqa_home")
    synqa = str(VENV_BIN / "synqa")
    bad = subprocess.run([synqa, "demo", "--batch", "2030-01-01"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown batch '2030-01-01'" in bad.stderr
    rev = subprocess.run([synqa, "backfill", "2026-11-07", "2026-11-01"], env=env, capture_output=True, text=True, timeout=120)
    assert rev.returncode == 2 and "empty range" in rev.stderr
