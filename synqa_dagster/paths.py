"""Where things live: the project root, the instance folder and the shipped configuration files."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent

DEFAULT_RECIPE = PROJECT_ROOT / "recipes" / "demo.yaml"
DEFAULT_GATES = PROJECT_ROOT / "gates" / "default.yaml"


def instance_dir() -> Path:
    """synqa's instance folder (``$SYNQA_HOME``, default ``<project>/.synqa``, git-ignored).

    Holds Parquet outputs (``storage/``, unless ``$SYNQA_STORAGE`` says otherwise), the tokenizer built from the
    GGUF (``models/``) and the generation caches (``cache/``: distilabel's and Hugging Face's, so generation never
    writes to ``~/.cache``). The Dagster run storage of the project instance is ``.synqa/dagster`` (dagster.yaml).
    """
    return Path(os.environ.get("SYNQA_HOME") or PROJECT_ROOT / ".synqa").resolve()


def default_storage_base() -> str:
    """Base path of the Parquet outputs: ``$SYNQA_STORAGE`` (local path or ``s3://bucket/prefix``)."""
    return os.environ.get("SYNQA_STORAGE") or str(instance_dir() / "storage")


def resolve_path(path: str | os.PathLike[str], base: Path = PROJECT_ROOT) -> Path:
    """Resolve a config-relative path against the project root (absolute paths are kept)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def keys_dir() -> Path:
    """Where synqa keeps its secrets (``<instance>/keys``, 0700): the embedded-default Ed25519 signing key and the
    HMAC keys for reviewer ids and review-app sessions. Never inside the handover folder or the repo."""
    return instance_dir() / "keys"


def default_signing_key_path() -> Path:
    """The embedded default signing key, created on first use (``$SYNQA_SIGNING_KEY`` overrides it)."""
    return keys_dir() / "signing_ed25519.pem"


def reviewer_hmac_key_path() -> Path:
    """The key of the HMAC that replaces reviewer ids in decisions and lineage."""
    return keys_dir() / "reviewer_hmac.key"


def default_review_store_url() -> str:
    """The review store: ``$SYNQA_REVIEW_STORE`` (``sqlite:///…`` or ``postgresql://…``), else SQLite in the instance."""
    return os.environ.get("SYNQA_REVIEW_STORE") or f"sqlite:///{instance_dir() / 'review' / 'review.db'}"


def default_handover_base() -> Path:
    """Where handover folders are written locally: ``$SYNQA_HANDOVER``, else ``<instance>/handover``.

    Local paths only; :func:`default_handover_location` also knows about S3."""
    return Path(os.environ.get("SYNQA_HANDOVER") or instance_dir() / "handover").resolve()


def default_handover_location(storage_base: str | None = None) -> str:
    """Where handover folders are written: ``$SYNQA_HANDOVER`` (a local folder or ``s3://bucket/prefix``), else
    ``<storage>/handover`` when the storage base (``storage_base`` or ``$SYNQA_STORAGE``) is on S3, else
    ``<instance>/handover``. One setting, ``SYNQA_STORAGE=s3://bucket/prefix``, moves tables and handover alike."""
    explicit = os.environ.get("SYNQA_HANDOVER")
    if explicit:
        return explicit if explicit.startswith("s3://") else str(Path(explicit).resolve())
    storage = storage_base or default_storage_base()
    if storage.startswith("s3://"):
        return storage.rstrip("/") + "/handover"
    return str(default_handover_base())
