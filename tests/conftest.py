"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real third-party datasets, used by path (never copied into the repo): ``$SYNQA_SHARED_DATA`` or ../shared/data."""
    path = Path(os.environ.get("SYNQA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        raise RuntimeError(f"shared data folder not found at {path}; set SYNQA_SHARED_DATA")
    return path


def write_recipe(path: Path, **overrides) -> Path:
    """Write the demo recipe with dotted-key overrides (e.g. ``{"generator.sampling.max_new_tokens": 32}``)."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "recipes" / "demo.yaml").read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    # relative paths in the demo recipe are relative to the project root; keep them absolute here
    data["seed_corpus"]["path"] = str(REPO_ROOT / data["seed_corpus"]["path"]) if not Path(data["seed_corpus"]["path"]).is_absolute() else data["seed_corpus"]["path"]
    data["seed_corpus"]["taxonomy_dir"] = str(REPO_ROOT / data["seed_corpus"]["taxonomy_dir"]) if not Path(data["seed_corpus"]["taxonomy_dir"]).is_absolute() else data["seed_corpus"]["taxonomy_dir"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


TINY = {
    "seed_corpus.seeds_per_batch": 2,
    "generator.sampling.max_new_tokens": 40,
    "techniques.self_instruct.num_instructions": 1,
}


@pytest.fixture()
def tiny_recipe(tmp_path: Path) -> Path:
    """The demo recipe cut down to 2 seeds and short completions, for real-LLM tests that stay fast."""
    return write_recipe(tmp_path / "tiny.yaml", **TINY)


@pytest.fixture()
def isolated_instance(tmp_path: Path, monkeypatch):
    """A fresh Dagster instance + storage + caches under tmp_path (DAGSTER_HOME and SYNQA_STORAGE point there)."""
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SYNQA_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("SYNQA_HOME", str(tmp_path / "synqa_home"))
    models = REPO_ROOT / ".synqa" / "models"
    if models.is_dir():  # reuse the tokenizer built from the GGUF (derived data, rebuilt if absent)
        (tmp_path / "synqa_home").mkdir()
        (tmp_path / "synqa_home" / "models").symlink_to(models)
    with dg.DagsterInstance.get() as instance:
        yield instance


# One real PostgreSQL server per test session, shared by every module that asks for `postgres_url`.
pytest_plugins = ["tests.postgres_support", "tests.s3_support", "tests.ray_support"]  # + one SeaweedFS S3 server, started on first use
