"""A real signed handover folder, tampered in every way the verifier promises to catch and name.

Each test builds a fresh pack in tmp_path (30 lineage records, accepted and rejected, with hostile and unicode
text; data files written first, a README that carries the root and key id), changes it the way an attacker or
an accident would, and checks that :func:`verify_pack` fails AND names the row id / line / field / file.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from synqa_dagster.lineage.canonical import canonical_json
from synqa_dagster.lineage.dsse import IN_TOTO_PAYLOAD_TYPE, make_statement, sign_envelope
from synqa_dagster.lineage.keys import SigningKey, hmac_id, load_or_create_secret, load_signing_key
from synqa_dagster.lineage.pack import compute_lineage, content_digests, prepare_lineage, write_signed_pack
from synqa_dagster.lineage.verify import main, verify_pack

BATCH = "2026-11-21-a"
FIELDS = ("instruction", "response", "technique", "seed_id")
HOSTILE = ["<script>alert(1)</script>", "Ünïcødé — 日本語 😀 עברית", "'; DROP TABLE rows; --",
           "\u202eevil.exe", 'line\nbreak "quoted" \\ back', "{{7*7}} ${jndi:ldap://x}", "\x1b[31mred\x1b[0m"]
DATA_FILES = ["accepted.jsonl", "rejected.jsonl", "README.md", "recipe.yaml", "gates.yaml", "funnel.png"]


@dataclass
class Pack:
    folder: Path
    key: SigningKey
    key_path: Path
    pub_path: Path
    rows: list[dict]
    records: list[dict]
    root: str

    def rid(self, i: int) -> str:
        return self.records[i]["row_id"]


def make_rows(batch: str, n: int = 30) -> list[dict]:
    return [{
        "row_id": f"{batch}-{i:04d}",
        "instruction": f"Explain topic {i}: {HOSTILE[i % len(HOSTILE)]}",
        "response": f"Answer {i}. {HOSTILE[(i + 3) % len(HOSTILE)]} Score={0.1 * i}",
        "technique": ["self_instruct", "evol_instruct", "magpie"][i % 3],
        "seed_id": f"seed-{i % 7}",
    } for i in range(n)]


def make_records(rows: list[dict], batch: str, secret: bytes) -> list[dict]:
    records = []
    for i, row in enumerate(rows):
        rejected = i % 4 == 0
        records.append({
            "row_id": row["row_id"], "batch": batch, "status": "rejected" if rejected else "accepted",
            "gate": "toxicity" if rejected else None,
            "reason": f"toxicity score {0.91 + i / 1000:.3f} > 0.8" if rejected else None,
            "scores": {"toxicity": round(0.01 * i, 4), "quality": 0.5 + i / 100},
            "generator_id": "smollm2-135m-instruct-q4_1", "technique": row["technique"], "seed_id": row["seed_id"],
            "reviewer": hmac_id(secret, f"reviewer{i % 2}@example.com") if i % 5 == 0 else None,
            "created_at": f"2026-11-21T12:{i:02d}:00Z",
            "content_digests": content_digests(row, FIELDS),
        })
    return records


def _jsonl(objs) -> bytes:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs).encode("utf-8")


def build_pack(base: Path, batch: str = BATCH, key: SigningKey | None = None, key_path: Path | None = None) -> Pack:
    folder = base / f"batch={batch}"
    folder.mkdir(parents=True)
    keys_dir = base / "keys"
    if key is None:
        key_path = keys_dir / "signing_ed25519.pem"
        key = load_signing_key(None, env_var="SYNQA_TEST_UNSET_SIGNING_KEY", default_path=key_path)
    secret = load_or_create_secret(keys_dir / "reviewer_hmac.key")
    rows = make_rows(batch)
    records = make_records(rows, batch, secret)
    accepted = [r for r, rec in zip(rows, records) if rec["status"] == "accepted"]
    rejected = [dict(r, reason=rec["reason"]) for r, rec in zip(rows, records) if rec["status"] == "rejected"]
    (folder / "accepted.jsonl").write_bytes(_jsonl(accepted))
    (folder / "rejected.jsonl").write_bytes(_jsonl(rejected))
    root, _ = compute_lineage(records)  # the card carries root and key id, so it is written before signing
    (folder / "README.md").write_text(f"---\nbatch: {batch}\nmerkle_root: {root}\nkey_id: {key.key_id}\n---\n"
                                      f"# Dataset card\n\n{HOSTILE[0]} is data here.\n", encoding="utf-8")
    (folder / "recipe.yaml").write_text("generator:\n  model: smollm2\n")
    (folder / "gates.yaml").write_text("toxicity:\n  threshold: 0.8\n")
    (folder / "funnel.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    manifest = write_signed_pack(folder, batch=batch, records=records, data_files=DATA_FILES,
                                 predicate={"recipe_hash": "sha256:" + "ab" * 32, "gates": {"toxicity": 0.8}},
                                 key=key)
    assert manifest.merkle_root == root
    pub_path = base / "trusted.pub"
    pub_path.write_text(key.public_pem())
    return Pack(folder, key, key_path or Path(), pub_path, rows, records, root)


@pytest.fixture()
def pack(tmp_path, monkeypatch) -> Pack:
    monkeypatch.delenv("SYNQA_SIGNING_KEY", raising=False)
    return build_pack(tmp_path)


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, items: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in items))


def kinds(report) -> set[str]:
    return {p.kind for p in report.problems}


def problems(report, kind: str) -> list:
    return [p for p in report.problems if p.kind == kind]


def assert_no_internal_error(report) -> None:
    assert "internal_error" not in kinds(report), report.summary()
    report.summary()  # renders


# --------------------------------------------------------------------------------------------------------------
# the untouched pack
# --------------------------------------------------------------------------------------------------------------

def test_untouched_pack_verifies(pack):
    report = verify_pack(pack.folder)
    assert report.ok, report.summary()
    assert (report.key_id, report.key_trusted, report.batch, report.row_count, report.merkle_root) == (
        pack.key.key_id, False, BATCH, 30, pack.root)
    assert "OK" in report.summary() and "not who signed" in report.summary()
    trusted = verify_pack(pack.folder, trusted_public_key=pack.pub_path, expected_batch=BATCH)
    assert trusted.ok and trusted.key_trusted and "not who signed" not in trusted.summary()


def test_pack_contents_follow_the_contract(pack):
    folder = pack.folder
    lineage = lines(folder / "lineage.jsonl")
    assert [json.loads(line)["row_id"] for line in lineage] == [r["row_id"] for r in pack.records]
    assert all(line == canonical_json(json.loads(line)) for line in lineage)
    assert sum(json.loads(line)["status"] == "rejected" for line in lineage) == 8
    env = json.loads((folder / "manifest.dsse.json").read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    names = [s["name"] for s in stmt["subject"]]
    assert names == DATA_FILES + ["lineage.jsonl", "lineage.proofs.jsonl", "merkle-root"]
    assert stmt["subject"][-1]["digest"] == {"sha256": pack.root}
    pred = stmt["predicate"]
    assert pred["batch"] == BATCH and pred["row_count"] == 30 and pred["merkle_root"] == pack.root
    assert pred["key_id"] == pack.key.key_id and pred["merkle_tree"] == "RFC 6962 SHA-256" and pred["leaf"]
    assert pred["gates"] == {"toxicity": 0.8}
    proofs = [json.loads(line) for line in lines(folder / "lineage.proofs.jsonl")]
    assert [p["index"] for p in proofs] == list(range(30))
    assert f"merkle_root: {pack.root}" in (folder / "README.md").read_text()
    # hostile text stays data: stored as JSON strings, read back unchanged
    accepted = [json.loads(line) for line in lines(folder / "accepted.jsonl")]
    assert {r["row_id"]: r for r in accepted}[pack.rid(1)]["instruction"] == pack.rows[1]["instruction"]


def test_signing_is_deterministic(pack, tmp_path):
    other = tmp_path / "again"
    other.mkdir()
    for name in DATA_FILES:
        shutil.copy(pack.folder / name, other / name)
    write_signed_pack(other, batch=BATCH, records=pack.records, data_files=DATA_FILES,
                      predicate={"recipe_hash": "sha256:" + "ab" * 32, "gates": {"toxicity": 0.8}}, key=pack.key)
    for name in ("lineage.jsonl", "lineage.proofs.jsonl", "manifest.dsse.json", "signing_key.pub"):
        assert (other / name).read_bytes() == (pack.folder / name).read_bytes(), name


def test_prepared_lineage_signs_the_same_bytes_and_is_not_trusted_for_other_records(pack, tmp_path):
    """write_signed_pack(prepared=...) (records encoded once, as the batch handover does) writes byte-identical
    files; a preparation of *other* records is ignored rather than signed."""
    predicate = {"recipe_hash": "sha256:" + "ab" * 32, "gates": {"toxicity": 0.8}}
    prepared = prepare_lineage(pack.records, BATCH)
    assert prepared.merkle_root == compute_lineage(pack.records)[0]
    for label, records, prep in (("prepared", pack.records, prepared),
                                 ("stale preparation", [dict(r) for r in pack.records],
                                  prepare_lineage(pack.records[:-1], BATCH))):
        other = tmp_path / label.replace(" ", "_")
        other.mkdir()
        for name in DATA_FILES:
            shutil.copy(pack.folder / name, other / name)
        write_signed_pack(other, batch=BATCH, records=records, data_files=DATA_FILES, predicate=predicate,
                          key=pack.key, prepared=prep)
        for name in ("lineage.jsonl", "lineage.proofs.jsonl", "manifest.dsse.json"):
            assert (other / name).read_bytes() == (pack.folder / name).read_bytes(), (label, name)
        assert verify_pack(other, expected_batch=BATCH).ok, label


# --------------------------------------------------------------------------------------------------------------
# lineage rows
# --------------------------------------------------------------------------------------------------------------

def test_edited_byte_in_a_row_names_row_line_and_field(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    assert b"smollm2-135m" in items[4]
    items[4] = items[4].replace(b"smollm2-135m", b"smollm3-135m", 1)  # one byte
    write_lines(path, items)
    report = verify_pack(pack.folder)
    assert not report.ok
    edited = problems(report, "row_edited")
    assert [(p.row, p.field, p.line, p.file) for p in edited] == [(pack.rid(4), "generator_id", 5, "lineage.jsonl")]
    assert {"row_added", "row_deleted", "row_reordered"}.isdisjoint(kinds(report))
    assert any(p.file == "lineage.jsonl" for p in problems(report, "file_changed"))
    assert "root_mismatch" in kinds(report)
    assert pack.rid(4) in report.summary() and "generator_id" in report.summary()


def test_edited_nested_value_and_row_id_are_named(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    rec = json.loads(items[9])
    rec["scores"]["toxicity"] = 0.0
    items[9] = canonical_json(rec)
    rec = json.loads(items[20])
    rec["row_id"] = "forged-id"
    items[20] = canonical_json(rec)
    write_lines(path, items)
    report = verify_pack(pack.folder)
    edited = {(p.row, p.field, p.line) for p in problems(report, "row_edited")}
    assert (pack.rid(9), "scores", 10) in edited
    assert (pack.rid(20), "row_id", 21) in edited  # named by the id it was signed with
    assert {"row_added", "row_deleted"}.isdisjoint(kinds(report))


def test_deleted_row_is_named_without_false_reorders(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    del items[7]
    write_lines(path, items)
    report = verify_pack(pack.folder)
    deleted = problems(report, "row_deleted")
    assert [p.row for p in deleted] == [pack.rid(7)] and "index 7" in deleted[0].message
    assert {"row_reordered", "row_edited", "row_added"}.isdisjoint(kinds(report))
    assert "root_mismatch" in kinds(report)


def test_added_row_is_named(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    forged = dict(pack.records[1], row_id=f"{BATCH}-9999", status="accepted")
    items.insert(9, canonical_json(forged))
    write_lines(path, items)
    report = verify_pack(pack.folder)
    added = problems(report, "row_added")
    assert [(p.row, p.line) for p in added] == [(f"{BATCH}-9999", 10)]
    assert {"row_reordered", "row_edited", "row_deleted"}.isdisjoint(kinds(report))


def test_reordered_rows_are_named_with_signed_index(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    items[2], items[10] = items[10], items[2]
    write_lines(path, items)
    report = verify_pack(pack.folder)
    moved = problems(report, "row_reordered")
    assert {p.row for p in moved} <= {pack.rid(2), pack.rid(10)} and moved
    assert any(f"{pack.rid(10)} is at line 3 but was signed at index 10" in p.message for p in moved) or any(
        f"{pack.rid(2)} is at line 11 but was signed at index 2" in p.message for p in moved)
    assert {"row_edited", "row_added", "row_deleted"}.isdisjoint(kinds(report))


def test_one_moved_row_is_the_only_one_named(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    items.append(items.pop(1))
    write_lines(path, items)
    report = verify_pack(pack.folder)
    moved = problems(report, "row_reordered")
    assert [(p.row, p.line) for p in moved] == [(pack.rid(1), 30)]


def test_duplicated_row_is_named(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    items.append(items[3])
    write_lines(path, items)
    report = verify_pack(pack.folder)
    assert [(p.row, p.line) for p in problems(report, "row_duplicated")] == [(pack.rid(3), 31)]


def test_tampered_proof_entry_is_named(pack):
    path = pack.folder / "lineage.proofs.jsonl"
    items = lines(path)
    entry = json.loads(items[6])
    entry["proof"][0] = "00" * 32
    items[6] = canonical_json(entry)
    write_lines(path, items)
    report = verify_pack(pack.folder)
    bad = problems(report, "proof_invalid")
    assert any(p.row == pack.rid(6) and p.line == 7 for p in bad)
    assert any(p.file == "lineage.proofs.jsonl" for p in problems(report, "file_changed"))


# --------------------------------------------------------------------------------------------------------------
# keys and batches
# --------------------------------------------------------------------------------------------------------------

def test_replaced_public_key_is_caught(pack, tmp_path):
    intruder = SigningKey.generate()
    (pack.folder / "signing_key.pub").write_text(intruder.public_pem())
    report = verify_pack(pack.folder)
    assert not report.ok and "key_mismatch" in kinds(report)  # envelope keyid is not the folder key's id
    assert pack.key.key_id in report.summary() and intruder.key_id in report.summary()
    trusted = verify_pack(pack.folder, trusted_public_key=pack.pub_path)
    mismatch = problems(trusted, "key_mismatch")
    assert mismatch and mismatch[0].file == "signing_key.pub" and intruder.key_id in mismatch[0].message
    assert not trusted.ok


def test_replaced_public_key_claiming_the_same_id_is_a_bad_signature(pack):
    intruder = SigningKey.generate()
    env_path = pack.folder / "manifest.dsse.json"
    env = json.loads(env_path.read_text())
    payload = base64.b64decode(env["payload"])
    forged = sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, intruder)
    forged["signatures"][0]["keyid"] = pack.key.key_id  # lie about the key id
    env_path.write_text(json.dumps(forged))
    report = verify_pack(pack.folder, trusted_public_key=pack.pub_path)
    assert [p.file for p in problems(report, "bad_signature")] == ["manifest.dsse.json"]
    assert not report.ok and not report.signature_ok


def test_statement_resigned_by_another_key_names_the_key_mismatch(pack):
    # the attacker re-signs the original statement and swaps signing_key.pub: no trusted key is given, but the
    # signed predicate still names the original key id
    intruder = SigningKey.generate()
    env_path = pack.folder / "manifest.dsse.json"
    payload = base64.b64decode(json.loads(env_path.read_text())["payload"])
    env_path.write_text(json.dumps(sign_envelope(payload, IN_TOTO_PAYLOAD_TYPE, intruder)))
    (pack.folder / "signing_key.pub").write_text(intruder.public_pem())
    report = verify_pack(pack.folder)
    assert report.signature_ok and not report.ok
    [mismatch] = problems(report, "key_mismatch")
    assert pack.key.key_id in mismatch.message and intruder.key_id in mismatch.message


def test_everything_resigned_with_another_key(pack, tmp_path):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    rec = json.loads(items[0])
    rec["status"] = "accepted"  # the reason to re-sign: flip a rejected row to accepted
    records = [rec] + pack.records[1:]
    for stale in ("lineage.jsonl", "lineage.proofs.jsonl", "manifest.dsse.json", "signing_key.pub"):
        (pack.folder / stale).unlink()
    intruder = SigningKey.generate()
    write_signed_pack(pack.folder, batch=BATCH, records=records, data_files=DATA_FILES, predicate={}, key=intruder)
    trusted = verify_pack(pack.folder, trusted_public_key=pack.pub_path)
    assert not trusted.ok
    text = " ".join(p.message for p in problems(trusted, "key_mismatch"))
    assert intruder.key_id in text and pack.key.key_id in text
    # without a trust anchor the folder is self-consistent; the report must say which key it trusted
    untrusted = verify_pack(pack.folder)
    assert untrusted.ok and untrusted.key_id == intruder.key_id and not untrusted.key_trusted
    assert "not who signed" in untrusted.summary()


def test_manifest_from_another_batch(pack, tmp_path):
    other = build_pack(tmp_path / "other", batch="2026-11-20-z", key=pack.key)
    shutil.copy(other.folder / "manifest.dsse.json", pack.folder / "manifest.dsse.json")
    report = verify_pack(pack.folder, trusted_public_key=pack.pub_path)
    assert report.signature_ok and not report.ok  # authentic, but for the wrong batch
    batch = problems(report, "batch_mismatch")
    assert batch and "2026-11-20-z" in batch[0].message and BATCH in batch[0].message
    assert batch[0].field == "batch" and batch[0].row == pack.rid(0)
    assert {p.file for p in problems(report, "file_changed")} >= {"accepted.jsonl", "lineage.jsonl"}


def test_expected_batch_is_enforced(pack):
    report = verify_pack(pack.folder, expected_batch="2026-12-01-b")
    assert not report.ok
    assert [p.file for p in problems(report, "batch_mismatch")] == ["manifest.dsse.json"]


# --------------------------------------------------------------------------------------------------------------
# data files
# --------------------------------------------------------------------------------------------------------------

def test_edited_data_file_row_names_file_line_row_and_field(pack):
    path = pack.folder / "accepted.jsonl"
    items = lines(path)
    row = json.loads(items[2])
    row["response"] = row["response"].replace("Answer", "Answr")
    items[2] = json.dumps(row, ensure_ascii=False).encode()
    write_lines(path, items)
    report = verify_pack(pack.folder)
    edited = problems(report, "data_row_edited")
    assert [(p.file, p.line, p.row, p.field) for p in edited] == [("accepted.jsonl", 3, row["row_id"], "response")]
    assert [p.file for p in problems(report, "file_changed")] == ["accepted.jsonl"]
    assert "lineage.jsonl" not in {p.file for p in report.problems}


def test_dropped_field_and_unknown_row_in_rejected_file(pack):
    path = pack.folder / "rejected.jsonl"
    items = lines(path)
    row = json.loads(items[1])
    del row["seed_id"]
    items[1] = json.dumps(row).encode()
    items.append(json.dumps({"row_id": "smuggled", "instruction": "x"}).encode())
    write_lines(path, items)
    report = verify_pack(pack.folder)
    assert [(p.line, p.row, p.field) for p in problems(report, "data_field_missing")] == [(2, row["row_id"], "seed_id")]
    assert [(p.line, p.row) for p in problems(report, "data_row_unknown")] == [(len(items), "smuggled")]


def test_missing_changed_and_unsigned_files_are_named(pack, tmp_path):
    (pack.folder / "README.md").unlink()
    shutil.move(pack.folder / "recipe.yaml", tmp_path / "recipe.yaml")
    (pack.folder / "recipe.yaml").symlink_to(tmp_path / "recipe.yaml")  # same bytes, but from outside
    (pack.folder / "gates.yaml").write_text("toxicity:\n  threshold: 0.99\n")
    (pack.folder / "extra.csv").write_text("a,b\n")
    report = verify_pack(pack.folder)
    assert [p.file for p in problems(report, "missing_file")] == ["README.md"]
    assert [p.file for p in problems(report, "file_changed")] == ["recipe.yaml", "gates.yaml"]
    assert [p.file for p in problems(report, "unsigned_file")] == ["extra.csv"]


# --------------------------------------------------------------------------------------------------------------
# malformed input never crashes
# --------------------------------------------------------------------------------------------------------------

def test_malformed_json_names_file_and_line(pack):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    items[5] = items[5][:40]
    write_lines(path, items)
    data = pack.folder / "accepted.jsonl"
    items = lines(data)
    items[3] = b'{"row_id": "x", NaN}'
    write_lines(data, items)
    report = verify_pack(pack.folder)
    assert_no_internal_error(report)
    where = {(p.file, p.line) for p in problems(report, "malformed_json")}
    assert ("lineage.jsonl", 6) in where and ("accepted.jsonl", 4) in where
    assert [p.row for p in problems(report, "row_deleted")] == [pack.rid(5)]


def test_malformed_manifest_is_a_problem(pack):
    (pack.folder / "manifest.dsse.json").write_text('{"payloadType": "application/vnd.in-toto+json",\n "payload": ')
    report = verify_pack(pack.folder)
    assert [(p.file, p.line) for p in problems(report, "malformed_json")] == [("manifest.dsse.json", 2)]
    (pack.folder / "manifest.dsse.json").write_text('{"payloadType": 1}')
    assert "malformed_manifest" in kinds(verify_pack(pack.folder))


def test_hostile_subject_names_are_refused(pack, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    stmt = make_statement([{"name": "../outside.txt", "digest": {"sha256": "0" * 64}},
                           {"name": "merkle-root", "digest": {"sha256": pack.root}}],
                          {"batch": BATCH, "row_count": 30, "merkle_root": pack.root, "key_id": pack.key.key_id})
    (pack.folder / "manifest.dsse.json").write_text(json.dumps(sign_envelope(stmt, IN_TOTO_PAYLOAD_TYPE, pack.key)))
    report = verify_pack(pack.folder, trusted_public_key=pack.pub_path)
    assert_no_internal_error(report)
    assert any("unsafe subject name" in p.message for p in problems(report, "malformed_manifest"))
    assert not report.ok


def test_random_corruption_never_crashes(pack, tmp_path):
    rng = random.Random(6962)
    pristine = tmp_path / "pristine"
    shutil.copytree(pack.folder, pristine)
    names = sorted(p.name for p in pristine.iterdir())
    for name in names:
        for trial in range(6):
            shutil.rmtree(pack.folder)
            shutil.copytree(pristine, pack.folder)
            target = pack.folder / name
            data = bytearray(target.read_bytes())
            if trial == 0:
                target.unlink()
            elif trial == 1:
                target.write_bytes(bytes(data[: len(data) // 2]))
            elif trial == 2:
                target.write_bytes(b"")
            elif trial == 3:
                target.write_bytes(b'[1, {"row_id": [], "index": "x", "proof": 7}, null]\n{"row_id": {}}\n'
                                   b'{"row_id": "zz", "batch": [1], "content_digests": []}\n'
                                   b'{"row_id": "y", "n": 1e999}\n')
            else:
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
                target.write_bytes(bytes(data))
            report = verify_pack(pack.folder)
            assert_no_internal_error(report)
            assert not report.ok, (name, trial)
            assert report.problems, (name, trial)


# --------------------------------------------------------------------------------------------------------------
# secrets and output
# --------------------------------------------------------------------------------------------------------------

def test_private_key_never_leaves_the_key_file(pack, tmp_path):
    pem = pack.key_path.read_bytes()
    raw = serialization.load_pem_private_key(pem, None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    needles = body + [raw, raw.hex().encode(), base64.b64encode(raw), base64.b64encode(raw).rstrip(b"=")]
    assert stat.S_IMODE(pack.key_path.stat().st_mode) == 0o600
    checked = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != pack.key_path:
            data = path.read_bytes()
            checked += 1
            for needle in needles:
                assert needle not in data, f"private key material found in {path}"
    assert checked >= 12
    assert b"PRIVATE" not in (pack.folder / "signing_key.pub").read_bytes()


def test_group_readable_key_is_refused_before_signing(pack):
    os.chmod(pack.key_path, 0o640)
    with pytest.raises(ValueError, match="group/others"):
        load_signing_key(pack.key_path)


def test_hostile_text_in_the_summary_is_escaped(pack, tmp_path):
    path = pack.folder / "lineage.jsonl"
    items = lines(path)
    rec = json.loads(items[0])
    rec["row_id"] = "\x1b[2J\u202eevil"
    items[0] = canonical_json(rec)
    items.append(canonical_json(dict(rec, row_id="\x1b]0;pwned\x07\u202e")))
    write_lines(path, items)
    summary = verify_pack(pack.folder).summary()
    assert "\x1b" not in summary and "\u202e" not in summary and "\x07" not in summary
    assert "row=\\x1b]0;pwned\\x07\\u202e" in summary  # escaped, still recognisable


def test_cli_exit_codes(pack, tmp_path, capsys):
    assert main([str(pack.folder)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", str(pack.folder), "--public-key", str(pack.pub_path), "--batch", BATCH]) == 0
    capsys.readouterr()
    assert main([str(pack.folder), "--batch", "nope"]) == 1
    assert "batch_mismatch" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(pack.folder), "--public-key", str(tmp_path / "missing.pub")]) == 2
    assert main([]) == 2
    items = lines(pack.folder / "accepted.jsonl")
    row = json.loads(items[0])
    row["instruction"] += "!"
    items[0] = json.dumps(row).encode()
    write_lines(pack.folder / "accepted.jsonl", items)
    assert main([str(pack.folder)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and row["row_id"] in out and "instruction" in out


# --------------------------------------------------------------------------------------------------------------
# the writer refuses what it cannot sign honestly
# --------------------------------------------------------------------------------------------------------------

def test_writer_refuses_bad_inputs(pack, tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "a.jsonl").write_text("{}\n")
    good = pack.records[:3]
    sign = lambda **kw: write_signed_pack(folder, **{"batch": BATCH, "records": good, "data_files": ["a.jsonl"],
                                                    "predicate": {}, "key": pack.key, **kw})
    with pytest.raises(ValueError, match=r"\['batch', 'merkle_root'\]"):
        sign(predicate={"batch": "x", "merkle_root": "y", "ok": 1})
    with pytest.raises(ValueError, match=f"record #2 \\(row_id '{pack.rid(0)}'\\): duplicate"):
        sign(records=good[:2] + [good[0]])
    with pytest.raises(ValueError, match="content_digests"):
        sign(records=[{"row_id": "x"}])
    with pytest.raises(ValueError, match="batch"):
        sign(records=[dict(good[0], batch="other")])
    with pytest.raises(ValueError, match=r"\$\.scores\.toxicity"):
        sign(records=[dict(good[0], scores={"toxicity": float("nan")})])
    for bad_name in ("../a.jsonl", "/etc/passwd", "lineage.jsonl", "merkle-root", "sub/../a.jsonl"):
        with pytest.raises(ValueError):
            sign(data_files=[bad_name])
    with pytest.raises(FileNotFoundError, match="absent.md"):
        sign(data_files=["absent.md"])
    (folder / "link.jsonl").symlink_to(folder / "a.jsonl")
    with pytest.raises(ValueError, match="symlink"):
        sign(data_files=["link.jsonl"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jsonl").write_text("{}\n")
    (folder / "sub").symlink_to(outside)
    with pytest.raises(ValueError, match="inside the folder"):
        sign(data_files=["sub/x.jsonl"])
    (folder / "sub").unlink()
    assert not (folder / "manifest.dsse.json").exists()  # nothing signed on refusal
    sign()
    assert [(p.kind, p.file) for p in verify_pack(folder).problems] == [("unsigned_file", "link.jsonl")]
    (folder / "link.jsonl").unlink()
    assert verify_pack(folder).ok


@pytest.mark.slow
def test_100k_rows_sign_and_verify(tmp_path):
    import time

    key = SigningKey.generate()
    folder = tmp_path / "batch=big"
    folder.mkdir()
    rows = make_rows("big", 100_000)
    records = [{"row_id": r["row_id"], "batch": "big", "status": "accepted", "scores": {"toxicity": 0.01},
                "content_digests": content_digests(r, FIELDS)} for r in rows]
    (folder / "accepted.jsonl").write_bytes(_jsonl(rows))
    start = time.perf_counter()
    write_signed_pack(folder, batch="big", records=records, data_files=["accepted.jsonl"], predicate={}, key=key)
    signed = time.perf_counter()
    report = verify_pack(folder)
    verified = time.perf_counter()
    assert report.ok, report.summary()
    print(f"100k rows: sign {signed - start:.1f}s, verify {verified - signed:.1f}s")
    assert signed - start < 120 and verified - signed < 120
    items = lines(folder / "lineage.jsonl")
    items[54_321] = items[54_321].replace(b'"accepted"', b'"rejected"')
    write_lines(folder / "lineage.jsonl", items)
    edited = problems(verify_pack(folder), "row_edited")
    assert [(p.row, p.field, p.line) for p in edited] == [(records[54_321]["row_id"], "status", 54_322)]
