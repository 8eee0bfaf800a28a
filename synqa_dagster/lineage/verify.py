"""Verify a signed handover folder and name exactly what is wrong with it.

:func:`verify_pack` checks, in order (see :mod:`.pack` for the folder contract):

1. the key: the trusted public key if given (and that the folder's ``signing_key.pub`` is the same key), else the
   folder's ``signing_key.pub``, which proves integrity but not who signed: the report says which key it trusted;
2. the DSSE envelope signature over the in-toto statement, the statement's shape, and the predicate (its
   ``key_id`` must be the verifying key; its ``batch`` must equal ``expected_batch`` when given);
3. every subject's sha256 against the file on disk (missing, changed, and unsigned extra files are named);
4. ``lineage.proofs.jsonl``: each entry's leaf is recomputed from its field digests and its inclusion proof is
   verified against the signed Merkle root (RFC 9162 §2.1.3.2), so each proven entry is authentic on its own;
5. ``lineage.jsonl``: each row's leaf is recomputed and matched by ``row_id`` to its proven entry, naming edited
   rows and fields (row id, line, field), added, deleted, duplicated and reordered rows ("row X at line i but
   signed at index j"; the rows outside a longest increasing run count as moved), rows of another batch, and
   finally the whole root is recomputed from the file;
6. every JSONL data file whose first row carries ``row_id``: each row's data fields against its lineage
   record's ``content_digests`` (file, line, row id, field).

A tampered folder never raises: every failure becomes a :class:`Problem`. Text taken from the folder (row ids,
field names, file names) is escaped before it reaches a terminal (control and bidi characters as ``\\x..``).

A handover on S3 (``s3://bucket/prefix/batch=<key>``) is verified by :func:`verify_location` /
:func:`verify_s3`: its objects are copied into a private temporary folder and :func:`verify_pack` runs on that copy,
so every check above applies unchanged and problems name the same relative file names; the report's ``folder`` is
the URI. A prefix without ``manifest.dsse.json`` is treated as absent (:class:`HandoverAbsent`): on S3 the manifest
is written last, so a folder without it is one that was never committed or is being committed right now.

CLI: ``main(["<folder or s3://...>", "--public-key", "key.pem", "--batch", "B"])`` (a leading ``"verify"`` is
accepted); exit 0 when ok, 1 when problems were found, 2 on usage errors (missing folder or key file, no handover
at the S3 URI).
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synqa_dagster.common import file_sha256

from .canonical import CanonicalJSONError, digest_of
from .dsse import (
    BadSignatureError, MalformedEnvelopeError, UnknownKeyIdError, decode_payload, parse_statement, verify_envelope,
)
from .keys import SigningKeyError, key_id_of, public_key_from_pem
from .merkle import MerkleTree, leaf_hash, verify_inclusion
from .pack import (
    LINEAGE_FILE, MANIFEST_FILE, MERKLE_ROOT_SUBJECT, PROOFS_FILE, PUBLIC_KEY_FILE, check_data_name, is_plain_file_inside,
    is_row_id, leaf_data, record_leaf,
)

__all__ = ["HandoverAbsent", "Problem", "VerifyReport", "batch_of", "verify_location", "verify_pack", "verify_s3", "main"]

_MAX_SHOWN = 200


def _safe(text: Any, limit: int = 300) -> str:
    """Printable rendering of untrusted text: non-printable characters escaped, long text cut."""
    s = str(text)
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)
    return out if len(out) <= limit else out[:limit] + "…"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a handover folder.

    Attributes:
        kind: machine-readable category, e.g. ``row_edited``, ``row_deleted``, ``row_added``, ``row_reordered``,
            ``row_duplicated``, ``file_changed``, ``missing_file``, ``unsigned_file``, ``bad_signature``,
            ``key_mismatch``, ``batch_mismatch``, ``data_row_edited``, ``data_field_missing``,
            ``data_row_unknown``, ``malformed_json``, ``malformed_manifest``, ``proof_invalid``, ``root_mismatch``.
        file: the file concerned (relative to the folder), if any.
        row: the row id concerned (as text), if any.
        field: the field concerned, if any.
        message: a human sentence saying what is wrong.
        line: 1-based line number in ``file``, if any.
    """

    kind: str
    file: str | None
    row: str | None
    field: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "(folder)"
        if self.line is not None:
            where += f":{self.line}"
        extra = "".join(f" {k}={_safe(v, 80)}" for k, v in (("row", self.row), ("field", self.field))
                        if v is not None)
        return f"[{self.kind}] {_safe(where, 120)}{extra}: {_safe(self.message)}"


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_pack`.

    Attributes:
        folder: the verified folder.
        problems: everything found wrong (empty when ok).
        key_id: id of the key the signature was checked with (None if no usable key).
        key_source: where that key came from: the trusted key file, or the folder's ``signing_key.pub``.
        key_trusted: True when the key came from the caller (``trusted_public_key``), not from the folder.
        signature_ok: the envelope verified with that key.
        batch: the signed batch id (None if unreadable).
        row_count: the signed number of lineage rows.
        merkle_root: the signed Merkle root, hex.
    """

    folder: Path | str
    problems: list[Problem] = field(default_factory=list)
    key_id: str | None = None
    key_source: str | None = None
    key_trusted: bool = False
    signature_ok: bool = False
    batch: str | None = None
    row_count: int | None = None
    merkle_root: str | None = None

    @property
    def ok(self) -> bool:
        """True when the signature verified and no problem was found."""
        return self.signature_ok and not self.problems

    def summary(self) -> str:
        """Human-readable multi-line text: verdict, what was trusted, then each problem."""
        trust = (f"key {self.key_id} from {self.key_source}" if self.key_id else "no usable key")
        if self.key_id and not self.key_trusted:
            trust += " (taken from the folder itself: proves integrity, not who signed; pass --public-key)"
        head = [f"{'OK' if self.ok else 'FAILED'}: {_safe(self.folder)}",
                f"  batch {_safe(self.batch)}, {self.row_count} rows, Merkle root {self.merkle_root}",
                f"  signature checked with {_safe(trust)}"]
        if self.problems:
            head.append(f"  {len(self.problems)} problem(s):")
            head += [f"  - {p}" for p in self.problems[:_MAX_SHOWN]]
            if len(self.problems) > _MAX_SHOWN:
                head.append(f"  ... and {len(self.problems) - _MAX_SHOWN} more")
        return "\n".join(head)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _rid_key(rid: Any) -> tuple[str, Any]:
    return (type(rid).__name__, rid)


def _longest_increasing(seq: Sequence[int]) -> set[int]:
    """Positions (into ``seq``) of one longest strictly increasing subsequence, O(n log n)."""
    tails: list[int] = []  # tails[k] = position of the smallest tail of an increasing run of length k+1
    tail_vals: list[int] = []
    prev = [-1] * len(seq)
    for pos, val in enumerate(seq):
        k = bisect.bisect_left(tail_vals, val)
        prev[pos] = tails[k - 1] if k else -1
        if k == len(tails):
            tails.append(pos)
            tail_vals.append(val)
        else:
            tails[k] = pos
            tail_vals[k] = val
    keep, pos = set(), tails[-1] if tails else -1
    while pos >= 0:
        keep.add(pos)
        pos = prev[pos]
    return keep


@dataclass
class _Entry:
    """A parsed, shape-checked line of ``lineage.proofs.jsonl``."""

    line: int
    index: int
    row_id: Any
    leaf: bytes
    digests: dict[str, str]
    proof: list[bytes]
    claimed: bool = False


class _Verifier:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.report = VerifyReport(folder=folder)

    def add(self, kind: str, message: str, file: str | None = None, row: Any = None, field: str | None = None,
            line: int | None = None) -> None:
        """Record one :class:`Problem` (row ids are kept as text)."""
        self.report.problems.append(Problem(kind, file, None if row is None else str(row), field, message, line))

    # -- reading --------------------------------------------------------------------------------------------
    def _read_jsonl(self, name: str) -> list[tuple[int, Any]] | None:
        """(line number, parsed object) for each non-empty line; malformed lines become problems."""
        path = self.folder / name
        if not path.is_file():
            self.add("missing_file", f"{name} is missing", file=name)
            return None
        rows = []
        for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                rows.append((n, _loads(raw.decode("utf-8"))))
            except (UnicodeDecodeError, ValueError) as exc:
                self.add("malformed_json", f"line {n} is not valid UTF-8 JSON ({_safe(exc, 120)})", file=name, line=n)
        return rows

    # -- 1. keys ----------------------------------------------------------------------------------------------
    def load_keys(self, trusted: Path | None) -> dict[str, Any]:
        """The verifying key by id: the trusted key (checked against signing_key.pub) or the folder's own."""
        folder_key = None
        pub_path = self.folder / PUBLIC_KEY_FILE
        if pub_path.is_file():
            try:
                folder_key = public_key_from_pem(pub_path.read_bytes())
            except SigningKeyError as exc:
                self.add("bad_public_key", f"{PUBLIC_KEY_FILE} is unusable: {exc}", file=PUBLIC_KEY_FILE)
        if trusted is not None:
            try:
                key = public_key_from_pem(Path(trusted).read_bytes())
            except (OSError, SigningKeyError) as exc:
                self.add("bad_trusted_key", f"trusted public key {trusted} is unusable: {exc}")
                return {}
            kid = key_id_of(key)
            self.report.key_id, self.report.key_source, self.report.key_trusted = kid, str(trusted), True
            if folder_key is not None and key_id_of(folder_key) != kid:
                self.add("key_mismatch", f"{PUBLIC_KEY_FILE} holds key {key_id_of(folder_key)}, but the trusted key is "
                                         f"{kid}: the folder's key was replaced", file=PUBLIC_KEY_FILE)
            return {kid: key}
        if folder_key is None:
            if not pub_path.is_file():
                self.add("missing_file", f"{PUBLIC_KEY_FILE} is missing and no trusted key was given",
                         file=PUBLIC_KEY_FILE)
            return {}
        kid = key_id_of(folder_key)
        self.report.key_id, self.report.key_source = kid, f"the folder's {PUBLIC_KEY_FILE}"
        return {kid: folder_key}

    # -- 2. envelope and statement ---------------------------------------------------------------------------
    def load_statement(self, keys: dict[str, Any]) -> dict[str, Any] | None:
        """Verify the envelope and parse its statement (kept, unauthenticated, when the signature fails)."""
        path = self.folder / MANIFEST_FILE
        if not path.is_file():
            self.add("missing_file", f"{MANIFEST_FILE} is missing: the folder is not signed", file=MANIFEST_FILE)
            return None
        try:
            envelope = _loads(path.read_bytes().decode("utf-8"))
        except json.JSONDecodeError as exc:
            self.add("malformed_json", f"not valid JSON: {exc.msg}", file=MANIFEST_FILE, line=exc.lineno)
            return None
        except (UnicodeDecodeError, ValueError) as exc:
            self.add("malformed_json", f"not valid UTF-8 JSON: {_safe(exc, 120)}", file=MANIFEST_FILE)
            return None
        try:
            if keys:
                payload = verify_envelope(envelope, keys)
                self.report.signature_ok = True
            else:
                payload = decode_payload(envelope)[1]
        except UnknownKeyIdError as exc:
            hint = "" if self.report.key_trusted else f" ({PUBLIC_KEY_FILE} does not match the manifest)"
            self.add("key_mismatch", f"{exc}{hint}", file=MANIFEST_FILE)
            payload = None
        except BadSignatureError as exc:
            hint = ("" if self.report.key_trusted else
                    f"; or {PUBLIC_KEY_FILE} was replaced by another key claiming the same id")
            self.add("bad_signature", f"{exc}{hint}", file=MANIFEST_FILE)
            payload = None
        except MalformedEnvelopeError as exc:
            self.add("malformed_manifest", str(exc), file=MANIFEST_FILE)
            return None
        if payload is None:  # keep diagnosing with the unauthenticated payload; the report is failed anyway
            try:
                payload = decode_payload(envelope)[1]
            except MalformedEnvelopeError as exc:
                self.add("malformed_manifest", str(exc), file=MANIFEST_FILE)
                return None
        try:
            return parse_statement(payload)
        except MalformedEnvelopeError as exc:
            self.add("malformed_manifest", str(exc), file=MANIFEST_FILE)
            return None

    def check_predicate(self, stmt: dict[str, Any], expected_batch: str | None) -> tuple[int, bytes] | None:
        """Signed (row_count, root) from the predicate; checks its key id and batch."""
        pred = stmt["predicate"]
        batch, count, root, kid = (pred.get(k) for k in ("batch", "row_count", "merkle_root", "key_id"))
        if not (isinstance(batch, str) and isinstance(count, int) and not isinstance(count, bool) and count >= 0
                and isinstance(root, str) and len(root) == 64 and isinstance(kid, str)):
            self.add("malformed_manifest", "predicate lacks a valid batch / row_count / merkle_root / key_id",
                     file=MANIFEST_FILE)
            return None
        try:
            root_bytes = bytes.fromhex(root)
        except ValueError:
            self.add("malformed_manifest", "predicate merkle_root is not hex", file=MANIFEST_FILE)
            return None
        self.report.batch, self.report.row_count, self.report.merkle_root = batch, count, root
        if self.report.key_id and kid != self.report.key_id:
            self.add("key_mismatch", f"the signed predicate names key {_safe(kid)}, but the signature was checked with "
                                     f"{self.report.key_id}", file=MANIFEST_FILE)
        if expected_batch is not None and batch != expected_batch:
            self.add("batch_mismatch", f"the manifest is for batch {batch!r}, expected batch {expected_batch!r}",
                     file=MANIFEST_FILE)
        return count, root_bytes

    # -- 3. subjects --------------------------------------------------------------------------------------------
    def check_subjects(self, stmt: dict[str, Any], root_hex: str) -> list[str]:
        """Compare every subject with the file on disk; returns the names of signed files present."""
        signed: list[str] = []
        names = set()
        for subject in stmt["subject"]:
            name, digest = subject["name"], subject["digest"]["sha256"]
            if name == MERKLE_ROOT_SUBJECT:
                if digest != root_hex:
                    self.add("root_mismatch", "subject merkle-root differs from predicate merkle_root",
                             file=MANIFEST_FILE)
                continue
            try:
                if name not in (LINEAGE_FILE, PROOFS_FILE):
                    check_data_name(name)
            except ValueError as exc:
                self.add("malformed_manifest", f"unsafe subject name: {exc}", file=MANIFEST_FILE)
                continue
            names.add(name)
            path = self.folder / name
            if not (path.exists() or path.is_symlink()):
                self.add("missing_file", f"signed file {name} is missing", file=name)
            elif not is_plain_file_inside(self.folder, name):
                self.add("file_changed", f"{name} is no longer a regular file inside the folder", file=name)
            else:
                actual = file_sha256(path)
                if actual != digest:
                    self.add("file_changed", f"{name} was modified: sha256 {actual}, signed {digest}", file=name)
                signed.append(name)
        if MERKLE_ROOT_SUBJECT not in {s["name"] for s in stmt["subject"]}:
            self.add("malformed_manifest", "no merkle-root subject", file=MANIFEST_FILE)
        for path in sorted(self.folder.rglob("*")):
            rel = path.relative_to(self.folder).as_posix()
            expected = rel in names or rel in (MANIFEST_FILE, PUBLIC_KEY_FILE)
            if (path.is_file() or path.is_symlink()) and not expected:
                self.add("unsigned_file", f"{rel} is in the folder but not in the signed manifest", file=rel)
        return signed

    # -- 4. proofs ----------------------------------------------------------------------------------------------
    def load_proofs(self, count: int, root: bytes) -> dict[tuple[str, Any], _Entry]:
        """Proven entries by row id (each one's leaf recomputed and its inclusion proof verified)."""
        rows = self._read_jsonl(PROOFS_FILE)
        proven: dict[tuple[str, Any], _Entry] = {}
        for n, obj in rows or []:
            entry = self._parse_entry(n, obj)
            if entry is None:
                continue
            rid = _safe(entry.row_id)
            try:
                expected_leaf = leaf_hash(leaf_data(entry.row_id, entry.digests))
            except CanonicalJSONError as exc:
                self.add("proof_invalid", f"entry cannot be hashed: {exc}", file=PROOFS_FILE, row=rid, line=n)
                continue
            if expected_leaf != entry.leaf:
                self.add("proof_invalid", f"leaf of row {rid} does not match its field digests", file=PROOFS_FILE,
                         row=rid, line=n)
            elif not verify_inclusion(entry.leaf, entry.index, count, entry.proof, root):
                self.add("proof_invalid", f"inclusion proof of row {rid} (index {entry.index}) does not lead to the "
                                          "signed Merkle root", file=PROOFS_FILE, row=rid, line=n)
            elif _rid_key(entry.row_id) in proven:
                self.add("row_duplicated", f"row {rid} has two proof entries", file=PROOFS_FILE, row=rid, line=n)
            else:
                proven[_rid_key(entry.row_id)] = entry
        if rows is not None and len(proven) != count:
            self.add("proof_invalid", f"{len(proven)} of the {count} signed rows have a valid proof entry",
                     file=PROOFS_FILE)
        return proven

    def _parse_entry(self, n: int, obj: Any) -> _Entry | None:
        try:
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            index, rid, digests, proof, leaf = (obj[k] for k in ("index", "row_id", "field_digests", "proof", "leaf"))
            well_typed = (isinstance(index, int) and not isinstance(index, bool) and is_row_id(rid)
                          and isinstance(digests, dict) and isinstance(proof, list) and isinstance(leaf, str)
                          and all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()))
            if not well_typed:
                raise ValueError("ill-typed field")
            return _Entry(n, index, rid, bytes.fromhex(leaf), digests, [bytes.fromhex(h) for h in proof])
        except (KeyError, TypeError, ValueError):
            self.add("proof_invalid", "entry must be {index, row_id, leaf, field_digests, proof} with hex hashes",
                     file=PROOFS_FILE, line=n)
            return None

    # -- 5. lineage rows ---------------------------------------------------------------------------------------
    def check_lineage(self, count: int, root: bytes, proven: dict[tuple[str, Any], _Entry],
                      batch: str) -> dict[tuple[str, Any], dict[str, Any]]:
        """Match lineage rows to proven entries; returns the lineage records by row id."""
        rows = self._read_jsonl(LINEAGE_FILE)
        if rows is None:
            return {}
        by_index = {e.index: e for e in proven.values()}
        records: dict[tuple[str, Any], dict[str, Any]] = {}
        leaves: list[bytes] = []
        matched: list[tuple[int, int, _Entry]] = []  # (position in file, signed index, entry)
        unmatched: list[tuple[int, int, dict[str, Any], dict[str, str]]] = []
        wrong_batch: dict[str, list[tuple[str, int]]] = {}  # repr of the wrong value -> (row id, line)
        for pos, (n, rec) in enumerate(rows):
            if not isinstance(rec, dict) or not is_row_id(rec.get("row_id")):
                self.add("row_invalid", "lineage record must be an object with a row_id", file=LINEAGE_FILE, line=n)
                continue
            rid = rec["row_id"]
            try:
                leaf, digests = record_leaf(rec)
            except CanonicalJSONError as exc:
                self.add("malformed_json", f"row {_safe(rid)}: {exc}", file=LINEAGE_FILE, row=rid, line=n)
                continue
            leaves.append(leaf)
            if _rid_key(rid) in records:
                self.add("row_duplicated", f"row {_safe(rid)} appears again at line {n}", file=LINEAGE_FILE, row=rid,
                         line=n)
                continue
            records[_rid_key(rid)] = rec
            if rec.get("batch", batch) != batch:
                wrong_batch.setdefault(repr(rec.get("batch")), []).append((str(rid), n))
            entry = proven.get(_rid_key(rid))
            if entry is None or entry.claimed:
                unmatched.append((pos, n, rec, digests))
                continue
            entry.claimed = True
            matched.append((pos, entry.index, entry))
            if leaf != entry.leaf:
                self._name_fields(rid, n, digests, entry.digests)
        for pos, n, rec, digests in unmatched:
            entry = by_index.get(pos)
            if entry is not None and not entry.claimed:  # same position, different row_id: an edited row_id
                entry.claimed = True
                matched.append((pos, entry.index, entry))
                self._name_fields(entry.row_id, n, digests, entry.digests)
            else:
                self.add("row_added", f"row {_safe(rec['row_id'])} at line {n} is not in the signed lineage",
                         file=LINEAGE_FILE, row=rec["row_id"], line=n)
        for entry in sorted(proven.values(), key=lambda e: e.index):
            if not entry.claimed:
                self.add("row_deleted", f"row {_safe(entry.row_id)} signed at index {entry.index} (line "
                                        f"{entry.index + 1}) is missing from {LINEAGE_FILE}", file=LINEAGE_FILE,
                         row=entry.row_id)
        matched.sort()
        in_order = _longest_increasing([idx for _, idx, _ in matched])
        for k, (pos, idx, entry) in enumerate(matched):
            if k not in in_order:
                line = rows[pos][0]
                self.add("row_reordered", f"row {_safe(entry.row_id)} is at line {line} but was signed at index {idx} "
                                          f"(line {idx + 1})", file=LINEAGE_FILE, row=entry.row_id, line=line)
        for wrong, where in wrong_batch.items():
            self.add("batch_mismatch", f"{len(where)} row(s) carry batch {_safe(wrong)} but the manifest is for batch "
                                       f"{_safe(batch)!r} (first: row {_safe(where[0][0])} at line {where[0][1]})",
                     file=LINEAGE_FILE, row=where[0][0], field="batch", line=where[0][1])
        actual = MerkleTree(leaves).root
        if actual != root or len(leaves) != count:
            self.add("root_mismatch", f"{LINEAGE_FILE} ({len(leaves)} rows) has Merkle root {actual.hex()}, the signed "
                                      f"root is {root.hex()} ({count} rows)", file=LINEAGE_FILE)
        return records

    def _name_fields(self, rid: Any, line: int, actual: Mapping[str, str], signed: Mapping[str, str]) -> None:
        for name in sorted(set(actual) | set(signed)):
            if actual.get(name) == signed.get(name):
                continue
            what = ("was added" if name not in signed else "was removed" if name not in actual
                    else "differs from the signed value")
            self.add("row_edited", f"row {_safe(rid)} at line {line}: field {_safe(name)!r} {what}", file=LINEAGE_FILE,
                     row=rid, field=name, line=line)

    # -- 6. data rows -------------------------------------------------------------------------------------------
    def check_data_file(self, name: str, records: dict[tuple[str, Any], dict[str, Any]]) -> None:
        """Each row of a JSONL data file against its lineage record's content_digests."""
        rows = self._read_jsonl(name)
        if not rows or not (isinstance(rows[0][1], dict) and "row_id" in rows[0][1]):
            return  # not a file of rows
        seen: set[tuple[str, Any]] = set()
        for n, row in rows:
            rid = row.get("row_id") if isinstance(row, dict) else None
            if not is_row_id(rid):
                self.add("data_row_invalid", "row must be an object with a row_id", file=name, line=n)
                continue
            if _rid_key(rid) in seen:
                self.add("row_duplicated", f"row {_safe(rid)} appears again", file=name, row=rid, line=n)
                continue
            seen.add(_rid_key(rid))
            rec = records.get(_rid_key(rid))
            if rec is None:
                self.add("data_row_unknown", f"row {_safe(rid)} has no lineage record", file=name, row=rid, line=n)
                continue
            digests = rec.get("content_digests")
            if not isinstance(digests, dict):
                self.add("row_invalid", f"lineage record of row {_safe(rid)} has no content_digests",
                         file=LINEAGE_FILE, row=rid)
                continue
            for fname, digest in digests.items():
                if fname not in row:
                    self.add("data_field_missing", f"row {_safe(rid)} at line {n} lacks field {_safe(fname)!r}",
                             file=name, row=rid, field=fname, line=n)
                    continue
                try:
                    actual = digest_of(row[fname])
                except CanonicalJSONError as exc:
                    actual = f"unhashable ({exc})"
                if actual != digest:
                    self.add("data_row_edited", f"row {_safe(rid)} at line {n}: field {_safe(fname)!r} differs from "
                                                "its signed lineage digest", file=name, row=rid, field=fname, line=n)

    # -- driver -------------------------------------------------------------------------------------------------
    def run(self, trusted: Path | None, expected_batch: str | None) -> None:
        """All checks, in the order of the module docstring."""
        if not self.folder.is_dir():
            self.add("missing_folder", f"{self.folder} is not a folder")
            return
        keys = self.load_keys(trusted)
        stmt = self.load_statement(keys)
        if stmt is None:
            return
        signed = self.check_predicate(stmt, expected_batch)
        if signed is None:
            return
        count, root = signed
        present = self.check_subjects(stmt, root.hex())
        proven = self.load_proofs(count, root)
        records = self.check_lineage(count, root, proven, self.report.batch or "")
        for name in present:
            if name.endswith(".jsonl") and name not in (LINEAGE_FILE, PROOFS_FILE):
                self.check_data_file(name, records)


def verify_pack(folder: Path, trusted_public_key: Path | None = None,
                expected_batch: str | None = None) -> VerifyReport:
    """Verify a signed handover folder (see the module docstring for every check).

    Args:
        folder: the handover folder.
        trusted_public_key: PEM file of the key the folder must be signed with; without it the folder's own
            ``signing_key.pub`` is used, which detects tampering but not a complete re-signing with another key.
        expected_batch: the batch the folder must be for.
    Returns:
        A :class:`VerifyReport`; ``report.ok`` is True only if the signature verified and nothing is wrong.
        Never raises on a tampered or malformed folder.
    """
    verifier = _Verifier(Path(folder))
    try:
        verifier.run(Path(trusted_public_key) if trusted_public_key is not None else None, expected_batch)
    except Exception as exc:  # last resort: a hostile folder must yield a report, not a traceback
        verifier.add("internal_error", f"verification stopped: {type(exc).__name__}: {_safe(exc, 200)}")
    return verifier.report


class HandoverAbsent(FileNotFoundError):
    """No handover at the location: no folder / no objects, or (on S3) no signed manifest yet."""


def batch_of(location: str | Path) -> str | None:
    """The batch a handover location's name promises (``.../batch=<key>``), or None."""
    text = str(location).rstrip("/")
    name = text.rsplit("/", 1)[-1] if "://" in text else Path(text).resolve().name
    return name[len("batch="):] if name.startswith("batch=") else None


def verify_s3(uri: str, trusted_public_key: Path | None = None, expected_batch: str | None = None,
              client: Any = None, attempts: int = 3) -> VerifyReport:
    """Verify a handover folder on S3 exactly as a local one (see the module docstring).

    Args:
        uri: ``s3://bucket/prefix/batch=<key>``.
        client: a boto3 S3 client; default: the standard AWS environment (``AWS_ENDPOINT_URL``, keys, profile).
        attempts: a commit that replaces the manifest while the objects are read makes the copy re-read.
    Raises:
        HandoverAbsent: there is no ``manifest.dsse.json`` under ``uri``.
    """
    from synqa_dagster.storage import S3Objects  # boto3 stays behind the storage interface

    objects = S3Objects.from_uri(uri, client)
    for attempt in range(max(1, attempts)):
        tag = objects.etag(MANIFEST_FILE)
        if tag is None:
            raise HandoverAbsent(f"no handover at {uri}: {MANIFEST_FILE} is missing (never committed, or being "
                                 "committed now)")
        with tempfile.TemporaryDirectory(prefix="synqa-verify-") as tmp:
            refused = objects.download_folder("", Path(tmp))
            if objects.etag(MANIFEST_FILE) != tag and attempt + 1 < attempts:
                continue  # the pack was replaced while it was read: read the new one
            report = verify_pack(Path(tmp), trusted_public_key, expected_batch)
        break
    report.folder = uri
    for name in refused:
        report.problems.append(Problem("unsigned_file", name, None, None,
                                       f"{_safe(name)} is in the folder but not in the signed manifest (an object name "
                                       "that cannot be a file of the folder)"))
    return report


def verify_location(location: str | Path, trusted_public_key: Path | None = None, expected_batch: str | None = None,
                    client: Any = None) -> VerifyReport:
    """:func:`verify_s3` for an ``s3://`` URI, :func:`verify_pack` for a local folder.

    Raises:
        HandoverAbsent: the local folder does not exist, or the S3 prefix has no manifest.
    """
    if isinstance(location, str) and location.startswith("s3://"):
        return verify_s3(location, trusted_public_key, expected_batch, client)
    if not Path(location).is_dir():
        raise HandoverAbsent(f"{location} is not a folder")
    return verify_pack(Path(location), trusted_public_key, expected_batch)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``verify <folder> [--public-key PEM] [--batch B]``; prints the summary.

    Returns:
        0 when the folder verifies, 1 when problems were found, 2 on usage errors (bad arguments, missing folder
        or key file).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "verify":
        args = args[1:]
    parser = argparse.ArgumentParser(prog="synqa verify", description="Verify a signed synqa handover folder.")
    parser.add_argument("folder", help="the handover folder, or s3://bucket/prefix/batch=<key>")
    parser.add_argument("--public-key", type=Path, default=None, help="PEM public key the folder must be signed with")
    parser.add_argument("--batch", default=None, help="the batch id the folder must be for")
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if ns.public_key is not None and not ns.public_key.is_file():
        print(f"synqa verify: public key file {ns.public_key} does not exist", file=sys.stderr)
        return 2
    try:
        report = verify_location(ns.folder, ns.public_key, ns.batch)
    except HandoverAbsent as exc:
        print(f"synqa verify: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
