"""The one home of the small helpers every package shares: JSON cleaning, hashing and atomic writes.

Dagster-free and dependency-light (numpy and pandas only), so gates, stats, lineage, handover, review and the
Dagster assets can all import it without import cycles.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, NaN/inf as None and tuples as lists (for ``json.dumps``).

    Also used for lineage records and gate metrics: canonical JSON has no non-finite numbers, and a gate score of
    -inf means "no score".
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, pd.DataFrame):
        return jsonable(value.to_dict("records"))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (the digest the signed manifest records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    """Short content id of a file: the first 16 hex digits of its SHA-256 (seed corpus, reference, models)."""
    return file_sha256(path)[:16]


def files_hash(paths: Iterable[Path]) -> str:
    """Short content id of a set of files: SHA-256 over ``name:file_hash`` of each, in the order given."""
    return hashlib.sha256("".join(f"{Path(p).name}:{file_hash(p)}" for p in paths).encode()).hexdigest()[:16]


def stable_int(*parts: object, bits: int = 32) -> int:
    """A stable non-negative integer from ``parts`` (SHA-256; independent of PYTHONHASHSEED and platform)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (1 << bits)


def atomic_write(path: str | Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write ``path`` through a temporary file in the same folder (``write(fh)`` fills it), fsync, then
    ``os.replace`` it into place: a reader sees the old file or the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{secrets.token_hex(4)}.tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; shipped files get the usual permissions
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": "\n"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """:func:`atomic_write` of a bytes value."""
    atomic_write(path, lambda fh: fh.write(data), binary=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text value (``\\n`` line ends)."""
    atomic_write(path, lambda fh: fh.write(text))
