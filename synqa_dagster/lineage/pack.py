"""The signed handover folder: per-row lineage, its RFC 6962 Merkle tree, and a DSSE/in-toto manifest.

Contract of a handover folder (all files written atomically: temporary file, fsync, ``os.replace``)::

    <data files>            written by the caller first (accepted.jsonl, rejected.jsonl, README.md, ...)
    lineage.jsonl           one lineage record per candidate row, canonical JSON (RFC 8785), LF-terminated
    lineage.proofs.jsonl    per row: {"index", "row_id", "leaf", "field_digests", "proof": [hex, ...]}
    signing_key.pub         the signer's Ed25519 public key (PEM) - a convenience, NOT a trust anchor
    manifest.dsse.json      DSSE v1 envelope of an in-toto Statement v1 (written last)

Lineage records: JSON objects, one per candidate row (accepted and rejected), in the caller's order, each with a
unique ``row_id`` (str or int) and ``content_digests`` = ``{field: sha256 hex of canonical_json(value)}`` over
the row's data fields (:func:`content_digests`), so a verifier can tie each row of a JSONL data file to its
record. An optional ``batch`` field must equal the pack's batch.

Merkle leaf of a record (the "leaf construction", also written into the predicate)::

    field_digests = {field: hex(SHA-256(canonical_json(value))) for every top-level field of the record}
    leaf          = SHA-256(0x00 || canonical_json({"row_id": row_id, "field_digests": field_digests}))

Hashing each field separately lets the verifier name the edited FIELD of a row, not just the row. The tree is
RFC 6962 over the leaves in lineage order (:mod:`.merkle`); its root is signed twice: as the in-toto subject
``merkle-root`` (``{"sha256": root hex}``) and as ``predicate.merkle_root``.

Statement subjects: every data file (``{"name": relative path, "digest": {"sha256": ...}}``), ``lineage.jsonl``,
``lineage.proofs.jsonl`` and ``merkle-root``. Predicate: the caller's dict plus ``batch``, ``row_count``,
``merkle_root``, ``merkle_tree`` (``"RFC 6962 SHA-256"``), ``leaf`` (the construction above) and ``key_id``;
a caller key that collides with these is refused.

Determinism: same inputs (records, data file bytes, predicate, key) give byte-identical files (canonical JSON,
fixed order, Ed25519 signatures are deterministic). A dataset card that must show the root and key id can be
written first with :func:`compute_lineage` and ``key.key_id``, then listed in ``data_files``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from synqa_dagster.common import atomic_write_bytes, file_sha256

from .canonical import CanonicalJSONError, canonical_json, canonical_members, child_path, digest_of, sha256_hex
from .dsse import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope
from .keys import SigningKey
from .merkle import MerkleTree, leaf_hash

__all__ = [
    "LINEAGE_FILE", "PROOFS_FILE", "MANIFEST_FILE", "PUBLIC_KEY_FILE", "MERKLE_ROOT_SUBJECT", "RESERVED_NAMES",
    "MERKLE_TREE", "LEAF_CONSTRUCTION", "PREDICATE_KEYS", "PackManifest",
    "content_digests", "field_digests", "leaf_data", "record_leaf", "compute_lineage", "write_signed_pack",
    "check_data_name", "is_row_id", "is_plain_file_inside",
]

LINEAGE_FILE = "lineage.jsonl"
PROOFS_FILE = "lineage.proofs.jsonl"
MANIFEST_FILE = "manifest.dsse.json"
PUBLIC_KEY_FILE = "signing_key.pub"
MERKLE_ROOT_SUBJECT = "merkle-root"
RESERVED_NAMES = frozenset({LINEAGE_FILE, PROOFS_FILE, MANIFEST_FILE, PUBLIC_KEY_FILE, MERKLE_ROOT_SUBJECT})
MERKLE_TREE = "RFC 6962 SHA-256"
LEAF_CONSTRUCTION = ('SHA-256(0x00 || JCS({"row_id": row_id, "field_digests": {field: hex(SHA-256(JCS(value))) '
                     "for every top-level field of the lineage record}}))")
PREDICATE_KEYS = ("batch", "row_count", "merkle_root", "merkle_tree", "leaf", "key_id")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PackManifest:
    """What :func:`write_signed_pack` wrote.

    Attributes:
        folder: the handover folder.
        batch: the batch id signed into the predicate.
        row_count: number of lineage records (Merkle leaves).
        merkle_root: the RFC 6962 root, hex.
        key_id: id of the signing key.
        files: ``{relative name: sha256 hex}`` of every file subject (data files, lineage, proofs).
        statement: the signed in-toto statement (dict).
        envelope: the DSSE envelope written to ``manifest.dsse.json``.
    """

    folder: Path
    batch: str
    row_count: int
    merkle_root: str
    key_id: str
    files: dict[str, str] = field(default_factory=dict)
    statement: dict[str, Any] = field(default_factory=dict)
    envelope: dict[str, Any] = field(default_factory=dict)


def is_row_id(value: Any) -> bool:
    """True for a valid ``row_id``: a non-empty str, or an int (not bool)."""
    return (isinstance(value, str) and value != "") or (isinstance(value, int) and not isinstance(value, bool))


def content_digests(row: Mapping[str, Any], fields: Iterable[str]) -> dict[str, str]:
    """``{field: sha256 hex of canonical_json(row[field])}`` for the given data fields of a row.

    Raises:
        KeyError: a field is missing from the row (message names it).
        ValueError: a value has no canonical JSON form (message names the field and the path inside it).
    """
    out: dict[str, str] = {}
    for name in fields:
        if name not in row:
            raise KeyError(f"row {row.get('row_id')!r} has no field {name!r}")
        try:
            out[name] = _digest_at(name, row[name])
        except CanonicalJSONError as exc:
            raise ValueError(f"row {row.get('row_id')!r}, field {name!r}: {exc}") from None
    return out


def _digest_at(name: str, value: Any) -> str:
    try:
        return digest_of(value)
    except CanonicalJSONError as exc:  # re-anchor the path at the record: $.scores.toxicity, not $.toxicity
        raise CanonicalJSONError(child_path("$", name) + exc.path[1:], exc.reason) from None


def field_digests(record: Mapping[str, Any]) -> dict[str, str]:
    """``{field: sha256 hex of canonical_json(value)}`` for every top-level field of a lineage record.

    Raises:
        CanonicalJSONError: a value has no canonical form; its path is given from the record (``$.scores.x``).
    """
    return {name: _digest_at(name, value) for name, value in record.items()}


def leaf_data(row_id: Any, digests: Mapping[str, str]) -> bytes:
    """The bytes hashed into a record's leaf: ``canonical_json({"row_id": ..., "field_digests": ...})``."""
    return canonical_json({"row_id": row_id, "field_digests": dict(digests)})


def record_leaf(record: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A record's Merkle leaf hash and its field digests (see the module docstring for the construction)."""
    leaf, digests, _ = _record_leaf_and_line(record)
    return leaf, digests


def _record_leaf_and_line(record: Mapping[str, Any]) -> tuple[bytes, dict[str, str], bytes]:
    """Leaf hash, field digests and the record's canonical JSON line, each field encoded once."""
    line, parts = canonical_members(record)
    digests = {name: sha256_hex(parts[name]) for name in record}  # = field_digests(record), in record order
    return leaf_hash(leaf_data(record.get("row_id"), digests)), digests, line


def _check_records(records: Sequence[Mapping[str, Any]], batch: str | None) -> None:
    seen: dict[Any, int] = {}
    for i, rec in enumerate(records):
        where = f"lineage record #{i}"
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where} must be a mapping, found {type(rec).__name__}")
        rid = rec.get("row_id")
        if not is_row_id(rid):
            raise ValueError(f"{where} has no valid 'row_id' (non-empty str or int), found {rid!r}")
        where = f"{where} (row_id {rid!r})"
        key = (type(rid).__name__, rid)
        if key in seen:
            raise ValueError(f"{where}: duplicate row_id, already used by record #{seen[key]}")
        seen[key] = i
        digests = rec.get("content_digests")
        if not isinstance(digests, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and _HEX64.match(v) for k, v in digests.items()):
            raise ValueError(f"{where}: 'content_digests' must map field names to sha256 hex "
                             "(use content_digests(row, fields))")
        if batch is not None and "batch" in rec and rec["batch"] != batch:
            raise ValueError(f"{where}: field 'batch' is {rec['batch']!r}, the pack is for batch {batch!r}")


def _leaves(records: Sequence[Mapping[str, Any]]) -> tuple[list[bytes], list[dict[str, str]], list[bytes]]:
    """Leaf hashes, field digests and canonical JSON lines of checked records; errors name the record and the
    JSON path."""
    leaves, digests, lines = [], [], []
    for i, rec in enumerate(records):
        try:
            leaf, fields, line = _record_leaf_and_line(rec)
        except CanonicalJSONError as exc:
            raise ValueError(f"lineage record #{i} (row_id {rec.get('row_id')!r}): {exc}") from None
        leaves.append(leaf)
        digests.append(fields)
        lines.append(line)
    return leaves, digests, lines


@dataclass(frozen=True)
class PreparedLineage:
    """Checked lineage records with their leaves, field digests and canonical lines, computed once.

    :func:`prepare_lineage` builds it; pass it to :func:`write_signed_pack` (``prepared=``) after stating the
    Merkle root in a card, so the records are not canonicalised a second time.

    Attributes:
        records: the records (the same sequence object the pack is then asked to sign).
        merkle_root: hex Merkle root over the leaves.
        leaves / digests / lines: per record, in order.
    """

    records: Sequence[Mapping[str, Any]]
    merkle_root: str
    leaves: list[bytes]
    digests: list[dict[str, str]]
    lines: list[bytes]


def prepare_lineage(records: Sequence[Mapping[str, Any]], batch: str | None = None) -> PreparedLineage:
    """Check the records and compute their leaves, digests, lines and Merkle root (nothing is written).

    Raises:
        ValueError: as :func:`compute_lineage`.
    """
    _check_records(records, batch)
    leaves, digests, lines = _leaves(records)
    return PreparedLineage(records, MerkleTree(leaves).root.hex(), leaves, digests, lines)


def compute_lineage(records: Sequence[Mapping[str, Any]]) -> tuple[str, list[bytes]]:
    """The Merkle root (hex) and leaf hashes of lineage records, without writing anything.

    Use it to put the root into a dataset card before :func:`write_signed_pack` signs the folder; the result is
    identical to what the pack will sign for the same records.

    Raises:
        ValueError: a record lacks a unique ``row_id`` or valid ``content_digests``, or is not canonical-JSON-able
            (the message names the record and field).
    """
    _check_records(records, None)
    leaves, _, _ = _leaves(records)
    return MerkleTree(leaves).root.hex(), leaves


def check_data_name(name: Any) -> str:
    """Validate a data file name: a relative POSIX path inside the folder, no ``..``, not a reserved name.

    Returns:
        The name. Raises ValueError otherwise.
    """
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ValueError(f"data file name {name!r} must be a non-empty relative POSIX path")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise ValueError(f"data file name {name!r} must stay inside the folder (no absolute path, '.', '..')")
    if name in RESERVED_NAMES:
        raise ValueError(f"data file name {name!r} is reserved for the signed pack itself")
    return name


def is_plain_file_inside(folder: Path, name: str) -> bool:
    """True when ``folder/name`` is a regular file, not a symlink, and (parents resolved) inside ``folder``."""
    path = Path(folder) / name
    try:
        return (not path.is_symlink() and path.is_file()
                and path.resolve().is_relative_to(Path(folder).resolve()))
    except OSError:
        return False


def _jsonl(objects: Iterable[Any]) -> bytes:
    return b"".join(canonical_json(o) + b"\n" for o in objects)


def write_signed_pack(folder: Path, *, batch: str, records: Sequence[Mapping[str, Any]], data_files: Sequence[str],
                      predicate: Mapping[str, Any], key: SigningKey,
                      prepared: PreparedLineage | None = None) -> PackManifest:
    """Write lineage, proofs, public key and signed manifest into a handover folder.

    Args:
        folder: the handover folder; the data files must already be in it.
        batch: the batch id (signed as ``predicate.batch``).
        records: lineage records (see the module docstring), accepted and rejected rows, in the order to sign.
        data_files: names (relative to ``folder``) of the caller's files to sign: each must be a regular file,
            not a symlink, not a reserved name.
        predicate: caller's predicate fields (recipe hash, gate summary...); must not use :data:`PREDICATE_KEYS`.
        key: the signing key.
        prepared: :func:`prepare_lineage` of these same ``records`` (used only if it is for this very sequence
            object; otherwise the records are prepared here).
    Returns:
        The :class:`PackManifest`.
    Raises:
        ValueError: invalid batch, records, data file names, or colliding predicate keys (named in the message).
        FileNotFoundError: a data file is missing.
    """
    folder = Path(folder)
    if not isinstance(batch, str) or not batch:
        raise ValueError(f"batch must be a non-empty str, found {batch!r}")
    if not folder.is_dir():
        raise FileNotFoundError(f"handover folder {folder} does not exist")
    if not isinstance(predicate, Mapping):
        raise ValueError(f"predicate must be a mapping, found {type(predicate).__name__}")
    collisions = sorted(set(predicate) & set(PREDICATE_KEYS))
    if collisions:
        raise ValueError(f"predicate keys {collisions} are reserved for the signed pack ({', '.join(PREDICATE_KEYS)})")
    if prepared is None or prepared.records is not records:
        prepared = prepare_lineage(records, batch)
    else:
        _check_records(records, batch)  # cheap; the batch may not have been checked when it was prepared
    names = [check_data_name(n) for n in data_files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"data files listed twice: {dupes}")
    files: dict[str, str] = {}
    for name in names:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            raise FileNotFoundError(f"data file {name!r} is not in {folder}")
        if not is_plain_file_inside(folder, name):
            raise ValueError(f"data file {name!r} must be a regular file inside the folder (not a symlink or folder)")
        files[name] = file_sha256(path)

    leaves, digests, lines = prepared.leaves, prepared.digests, prepared.lines
    tree = MerkleTree(leaves)
    root_hex = tree.root.hex()
    lineage_bytes = b"".join(line + b"\n" for line in lines)  # = _jsonl(records), each field encoded once
    proofs_bytes = _jsonl(
        {"index": i, "row_id": rec["row_id"], "leaf": leaves[i].hex(), "field_digests": digests[i],
         "proof": [h.hex() for h in tree.proof(i)]}
        for i, rec in enumerate(records))
    files[LINEAGE_FILE] = hashlib.sha256(lineage_bytes).hexdigest()
    files[PROOFS_FILE] = hashlib.sha256(proofs_bytes).hexdigest()

    full_predicate = dict(predicate)
    full_predicate.update({"batch": batch, "row_count": len(records), "merkle_root": root_hex,
                           "merkle_tree": MERKLE_TREE, "leaf": LEAF_CONSTRUCTION, "key_id": key.key_id})
    subjects = [{"name": n, "digest": {"sha256": d}} for n, d in files.items()]
    subjects.append({"name": MERKLE_ROOT_SUBJECT, "digest": {"sha256": root_hex}})
    try:
        payload = make_statement(subjects, full_predicate)
    except CanonicalJSONError as exc:
        raise ValueError(f"predicate is not canonical-JSON-able: {exc}") from None
    envelope = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, key)

    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # until the new manifest lands, the folder reads as unsigned
    atomic_write_bytes(folder / LINEAGE_FILE, lineage_bytes)
    atomic_write_bytes(folder / PROOFS_FILE, proofs_bytes)
    atomic_write_bytes(folder / PUBLIC_KEY_FILE, key.public_pem().encode("ascii"))
    atomic_write_bytes(folder / MANIFEST_FILE, (json.dumps(envelope, indent=2, sort_keys=True) + "\n").encode())
    return PackManifest(folder=folder, batch=batch, row_count=len(records), merkle_root=root_hex,
                        key_id=key.key_id, files=files, statement=json.loads(payload), envelope=envelope)
