"""Reviewer identity secrets: where the review secrets live and the keyed hash that stands in for a reviewer id.

Shared by the ``synqa review`` CLI, the web app and the Dagster review resource (each imports this module; none
imports another), so that every place pseudonymises reviewer ids with the same instance secret.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from synqa_dagster.lineage.keys import hmac_id, load_or_create_secret
from synqa_dagster.paths import keys_dir, reviewer_hmac_key_path

__all__ = ["default_key_paths", "reviewer_hasher"]


def default_key_paths() -> tuple[Path, Path]:
    """(reviewer-id HMAC secret, session-cookie secret) under ``<instance>/keys/``."""
    return reviewer_hmac_key_path(), keys_dir() / "review_session.key"


def reviewer_hasher(key_path: Path | None = None) -> Callable[[str], str]:
    """``reviewer_id -> hmac_id(secret, reviewer_id)`` with the instance's reviewer HMAC secret (created on first
    use at ``key_path``, default ``<instance>/keys/reviewer_hmac.key``)."""
    secret = load_or_create_secret(Path(key_path or default_key_paths()[0]))
    return lambda reviewer_id: hmac_id(secret, reviewer_id)
