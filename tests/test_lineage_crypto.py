"""Canonical JSON (RFC 8785), RFC 6962 Merkle trees, Ed25519 keys and DSSE envelopes, against published vectors.

Vectors come from the standards or their reference test suites (cited next to each), or from independent
implementations written here from the RFC text (the naive recursive MTH/PATH, hashlib/hmac/cryptography calls).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import pickle
import random
import stat
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from synqa_dagster.lineage.canonical import CanonicalJSONError, canonical_json, canonical_members, format_number
from synqa_dagster.lineage.dsse import (
    IN_TOTO_PAYLOAD_TYPE, BadSignatureError, MalformedEnvelopeError, UnknownKeyIdError, make_statement, pae,
    parse_statement, sign_envelope, verify_envelope,
)
from synqa_dagster.lineage.keys import (
    SigningKey, SigningKeyError, hmac_id, key_id_of, load_or_create_secret, load_signing_key, public_key_from_pem,
)
from synqa_dagster.lineage.merkle import (
    EMPTY_ROOT, MerkleTree, inclusion_proof, leaf_hash, merkle_root, node_hash, verify_inclusion,
)

# --------------------------------------------------------------------------------------------------------------
# RFC 8785 canonical JSON
# --------------------------------------------------------------------------------------------------------------

# RFC 8785 §3.2.2 input (JSON text) and §3.2.4 expected UTF-8 bytes, in hex as the RFC prints them.
RFC8785_INPUT = r'''{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}'''
RFC8785_OUTPUT_HEX = (
    "7b226c69746572616c73223a5b6e756c6c2c747275652c66616c73655d2c226e756d62657273223a5b333333333333333333"
    "2e333333333333332c31652b33302c342e352c302e3030322c31652d32375d2c22737472696e67223a22e282ac245c753030"
    "30665c6e4127425c225c5c5c5c5c222f227d"
)

# RFC 8785 Appendix B: IEEE-754 bit patterns and their ECMAScript serialisation.
APPENDIX_B = {
    0x0000000000000000: "0", 0x8000000000000000: "0", 0x0000000000000001: "5e-324",
    0x8000000000000001: "-5e-324", 0x7FEFFFFFFFFFFFFF: "1.7976931348623157e+308",
    0xFFEFFFFFFFFFFFFF: "-1.7976931348623157e+308", 0x4340000000000000: "9007199254740992",
    0xC340000000000000: "-9007199254740992", 0x4430000000000000: "295147905179352830000",
    0x44B52D02C7E14AF5: "9.999999999999997e+22", 0x44B52D02C7E14AF6: "1e+23",
    0x44B52D02C7E14AF7: "1.0000000000000001e+23", 0x444B1AE4D6E2EF4E: "999999999999999700000",
    0x444B1AE4D6E2EF4F: "999999999999999900000", 0x444B1AE4D6E2EF50: "1e+21",
    0x3EB0C6F7A0B5ED8C: "9.999999999999997e-7", 0x3EB0C6F7A0B5ED8D: "0.000001",
    0x41B3DE4355555553: "333333333.3333332", 0x41B3DE4355555554: "333333333.33333325",
    0x41B3DE4355555555: "333333333.3333333", 0x41B3DE4355555556: "333333333.3333334",
    0x41B3DE4355555557: "333333333.33333343", 0xBECBF647612F3696: "-0.0000033333333333333333",
    0x43143FF3C1CB0959: "1424953923781206.2",
}


def _double(bits: int) -> float:
    return struct.unpack(">d", bits.to_bytes(8, "big"))[0]


def test_rfc8785_section_3_2_2_example_bytes():
    assert canonical_json(json.loads(RFC8785_INPUT)).hex() == RFC8785_OUTPUT_HEX


def test_rfc8785_section_3_2_3_sorting_by_utf16_code_units():
    doc = json.loads(r'''{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis"}''')
    out = canonical_json(doc).decode("utf-8")
    order = list(json.loads(out))  # dicts keep the serialised order
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    # code-point order would put U+FB33 before the emoji: the RFC example exists to catch exactly that
    assert sorted(doc) != order
    assert out.startswith('{"\\r":"Carriage Return","1":"One"')


def test_canonical_members_assembles_the_same_bytes_and_names_the_path():
    """canonical_members (the pack's one-pass encoder) gives canonical_json's bytes and each member's own."""
    doc = json.loads(r'''{"\u20ac": [1.0, 1e21, {"\ufb33": null}], "\r": "a\nb", "\ud83d\ude00": true, "1": -0.0}''')
    whole, parts = canonical_members(doc)
    assert whole == canonical_json(doc)
    assert parts == {k: canonical_json(v) for k, v in doc.items()}
    with pytest.raises(CanonicalJSONError, match=r"\$\.gates\.toxicity: nan"):
        canonical_members({"gates": {"toxicity": float("nan")}})
    with pytest.raises(CanonicalJSONError):
        canonical_members({1: "int key"})


@pytest.mark.parametrize("bits,expected", sorted(APPENDIX_B.items()))
def test_rfc8785_appendix_b_numbers(bits, expected):
    assert format_number(_double(bits)) == expected
    assert canonical_json([_double(bits)]) == f"[{expected}]".encode()


@pytest.mark.parametrize("value,expected", [(1.0, "1"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
                                            (1e-7, "1e-7"), (1e-6, "0.000001"), (-0.0, "0"), (0.1, "0.1"),
                                            (-1.5e-9, "-1.5e-9"), (123.456, "123.456"),
                                            (2**53 - 1, "9007199254740991")])
def test_ecmascript_number_forms(value, expected):
    assert format_number(value) == expected


def test_random_doubles_round_trip_in_ecmascript_shape():
    rng = random.Random(8785)
    pattern = __import__("re").compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?(e[+-][1-9][0-9]*)?$")
    for _ in range(20000):
        x = _double(rng.getrandbits(64))
        if math.isnan(x) or math.isinf(x):
            continue
        text = format_number(x)
        assert float(text) == x, (x, text)
        assert pattern.match(text), text
        if "e" in text:  # ECMAScript uses exponents only outside [1e-7, 1e21)
            assert abs(x) >= 1e21 or abs(x) < 1e-6


def test_strings_use_minimal_escaping():
    s = "".join(chr(c) for c in range(0x20)) + "\"\\/\x7f\u2028<script>alert(1)</script>é😀"
    out = canonical_json(s).decode("utf-8")
    assert out == ('"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f'
                   '\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c'
                   '\\u001d\\u001e\\u001f\\"\\\\/\x7f\u2028<script>alert(1)</script>é😀"')
    assert json.loads(out) == s


def test_matches_stdlib_sorted_compact_json_where_they_must_agree():
    # For BMP-only keys below U+D800, UTF-16 order equals code-point order, so json.dumps(sort_keys) is an oracle.
    rng = random.Random(1)
    alphabet = "abcXYZ019 _-é€<>&\"\\\n\t"
    for _ in range(300):
        def value(depth):
            kind = rng.randrange(6 if depth < 3 else 4)
            if kind == 0:
                return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
            if kind == 1:
                return rng.randrange(-10**12, 10**12)
            if kind == 2:
                return rng.choice([True, False, None])
            if kind == 3:
                return rng.choice(["", "x"])
            if kind == 4:
                return [value(depth + 1) for _ in range(rng.randrange(4))]
            return {"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 5))): value(depth + 1)
                    for _ in range(rng.randrange(4))}
        obj = value(0)
        expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        assert canonical_json(obj) == expected


def test_nan_and_infinity_are_refused_with_their_path():
    doc = {"gates": {"toxicity": {"score": float("nan")}}}
    with pytest.raises(CanonicalJSONError) as err:
        canonical_json(doc)
    assert err.value.path == "$.gates.toxicity.score"
    assert "$.gates.toxicity.score" in str(err.value) and "NaN" in str(err.value)
    with pytest.raises(CanonicalJSONError) as err:
        canonical_json({"rows": [1, {"odd key": [float("-inf")]}]})
    assert err.value.path == '$.rows[1]["odd key"][0]'
    with pytest.raises(CanonicalJSONError, match=r"\$\.x"):
        canonical_json({"x": np.float64("inf")})


def test_unsupported_values_are_refused_with_their_path():
    for bad, where in [({"a": {1: "x"}}, "$.a"), ({"a": b"bytes"}, "$.a"), ({"a": {1, 2}}, "$.a"),
                       ({"a": 2**53}, "$.a"), ({"a": "\ud800"}, "$.a"), ({"a": [object()]}, "$.a[0]")]:
        with pytest.raises(CanonicalJSONError) as err:
            canonical_json(bad)
        assert err.value.path == where


def test_numpy_and_pandas_values_are_converted():
    doc = {"f": np.float64(0.5), "f32": np.float32(0.1), "i": np.int64(-7), "u": np.uint8(200), "b": np.bool_(True),
           "s": np.str_("x"), "na": pd.NA, "nat": pd.NaT, "none": None, "arr": np.array([1, 2])}
    plain = {"f": 0.5, "f32": float(np.float32(0.1)), "i": -7, "u": 200, "b": True, "s": "x", "na": None, "nat": None,
             "none": None, "arr": [1, 2]}
    assert canonical_json(doc) == canonical_json(plain)
    assert b'"b":true' in canonical_json(doc) and b'"na":null' in canonical_json(doc)
    # a pandas row (object dtype keeps NA) hashes like the plain dict
    row = pd.DataFrame({"a": [1], "b": ["x"], "c": pd.array([None], dtype="Int64")}).iloc[0].to_dict()
    assert canonical_json(row) == b'{"a":1,"b":"x","c":null}'


# --------------------------------------------------------------------------------------------------------------
# RFC 6962 Merkle tree
# --------------------------------------------------------------------------------------------------------------

# Certificate Transparency / transparency-dev/merkle reference leaves and the root for each size 0..8
# (proof/verify_test.go, testonly/constants.go).
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (0-based index, tree size, audit path) from transparency-dev/merkle proof/verify_test.go
CT_PROOFS = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(data: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, written straight from the text over raw leaf data."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = _k(len(data))
    return hashlib.sha256(b"\x01" + naive_mth(data[:k]) + naive_mth(data[k:])).digest()


def naive_path(m: int, data: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    if len(data) == 1:
        return []
    k = _k(len(data))
    if m < k:
        return naive_path(m, data[:k]) + [naive_mth(data[k:])]
    return naive_path(m - k, data[k:]) + [naive_mth(data[:k])]


def test_ct_reference_roots():
    hashes = [leaf_hash(d) for d in CT_LEAVES]
    assert EMPTY_ROOT.hex() == CT_ROOTS[0] == hashlib.sha256(b"").hexdigest()
    for n in range(len(CT_LEAVES) + 1):
        assert merkle_root(hashes[:n]).hex() == CT_ROOTS[n], n


@pytest.mark.parametrize("index,size,path", CT_PROOFS)
def test_ct_reference_inclusion_proofs(index, size, path):
    hashes = [leaf_hash(d) for d in CT_LEAVES[:size]]
    assert [h.hex() for h in inclusion_proof(index, hashes)] == path
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(hashes[index], index, size, [bytes.fromhex(h) for h in path], root)


def test_every_index_of_sizes_1_to_33_proves_and_tampering_fails():
    data = [f"row-{i}".encode() * (i % 3 + 1) for i in range(33)]
    for n in range(1, 34):
        hashes = [leaf_hash(d) for d in data[:n]]
        tree = MerkleTree(hashes)
        assert tree.root == naive_mth(data[:n])
        for i in range(n):
            proof = tree.proof(i)
            assert proof == naive_path(i, data[:n])
            assert verify_inclusion(hashes[i], i, n, proof, tree.root)
            assert not verify_inclusion(leaf_hash(b"other"), i, n, proof, tree.root)  # wrong leaf
            assert not verify_inclusion(hashes[i], i, n, proof, leaf_hash(b"root"))  # wrong root
            # wrong sizes, as transparency-dev probes them (n +- 1 can share a path: the root pins the size)
            assert not verify_inclusion(hashes[i], i, 2 * n, proof, tree.root)
            if n > 1:
                assert not verify_inclusion(hashes[i], i, n // 2, proof, tree.root)
                assert not verify_inclusion(hashes[i], (i + 1) % n, n, proof, tree.root)  # wrong index
                assert not verify_inclusion(hashes[i], i ^ 1, n, proof, tree.root)
                assert not verify_inclusion(hashes[i], i, n, proof[:-1], tree.root)  # truncated
                assert not verify_inclusion(hashes[i], i, n, proof + [tree.root], tree.root)  # extended
                flipped = [bytes([proof[0][0] ^ 8]) + proof[0][1:]] + proof[1:]
                assert not verify_inclusion(hashes[i], i, n, flipped, tree.root)  # one bit
            assert not verify_inclusion(hashes[i], n, n, proof, tree.root)  # index out of range


def test_malformed_proof_inputs_give_false_not_errors():
    h = leaf_hash(b"x")
    assert verify_inclusion(h, 0, 1, [], h)
    assert not verify_inclusion(h, 0, 0, [], h)
    assert not verify_inclusion(h, -1, 1, [], h)
    assert not verify_inclusion(h[:31], 0, 1, [], h[:31])
    assert not verify_inclusion(h, 0, 2, [b"short"], h)
    assert not verify_inclusion(h, 0, 2, ["not bytes"], h)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="leaf hash #1"):
        merkle_root([h, b"short"])
    with pytest.raises(IndexError):
        inclusion_proof(3, [h, h])
    assert node_hash(h, h) == hashlib.sha256(b"\x01" + h + h).digest()


def test_100k_leaves_are_fast():
    hashes = [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(100_000)]
    start = time.perf_counter()
    tree = MerkleTree(hashes)
    proofs = [tree.proof(i) for i in range(0, 100_000, 997)]
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"100k-leaf tree + proofs took {elapsed:.2f}s"
    for j, i in enumerate(range(0, 100_000, 997)):
        assert verify_inclusion(hashes[i], i, 100_000, proofs[j], tree.root)
    assert len(tree.proof(0)) == math.ceil(math.log2(100_000))  # 17 levels above the first leaf
    assert verify_inclusion(hashes[-1], 99_999, 100_000, tree.proof(99_999), tree.root)


@pytest.mark.slow
def test_100k_leaves_every_proof_verifies():
    hashes = [hashlib.sha256(b"\x00" + i.to_bytes(4, "big")).digest() for i in range(100_000)]
    tree = MerkleTree(hashes)
    assert all(verify_inclusion(hashes[i], i, tree.size, tree.proof(i), tree.root) for i in range(tree.size))


# --------------------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------------------

def _pem_body(pem: bytes) -> bytes:
    return b"".join(line for line in pem.splitlines() if not line.startswith(b"-----"))


def _raw_private(key: SigningKey) -> bytes:
    return serialization.load_pem_private_key(key.private_pem(), None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@pytest.fixture()
def no_env_key(monkeypatch):
    monkeypatch.delenv("SYNQA_SIGNING_KEY", raising=False)


def test_default_key_is_created_0600_in_a_0700_folder_and_reused(tmp_path, no_env_key):
    path = tmp_path / "keys" / "signing_ed25519.pem"
    key = load_signing_key(None, default_path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert load_signing_key(None, default_path=path).key_id == key.key_id
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_concurrent_first_use_creates_one_key(tmp_path, no_env_key):
    path = tmp_path / "race" / "k.pem"
    barrier = threading.Barrier(8)

    def load(_):
        barrier.wait()
        return load_signing_key(None, default_path=path).key_id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(load, range(8)))
    assert len(ids) == 1 and ids == {load_signing_key(None, default_path=path).key_id}
    assert [p.name for p in path.parent.iterdir()] == ["k.pem"]


def test_key_id_is_sha256_of_the_raw_public_key(tmp_path, no_env_key):
    key = load_signing_key(None, default_path=tmp_path / "k.pem")
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key.key_id == "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    assert key_id_of(public_key_from_pem(key.public_pem())) == key.key_id


def test_precedence_env_pem_then_env_path_then_configured_then_default(tmp_path, monkeypatch):
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    pems = [k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) for k in keys]
    ids = [key_id_of(k.public_key()) for k in keys]
    configured = tmp_path / "configured.pem"
    fd = os.open(configured, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, pems[1])
    os.close(fd)
    env_file = tmp_path / "env.pem"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, pems[2])
    os.close(fd)
    default = tmp_path / "default" / "k.pem"

    monkeypatch.setenv("SYNQA_SIGNING_KEY", pems[0].decode())
    assert load_signing_key(configured, default_path=default).key_id == ids[0]
    monkeypatch.setenv("SYNQA_SIGNING_KEY", str(env_file))
    assert load_signing_key(configured, default_path=default).key_id == ids[2]
    monkeypatch.delenv("SYNQA_SIGNING_KEY")
    assert load_signing_key(configured, default_path=default).key_id == ids[1]
    assert not default.exists()
    created = load_signing_key(None, default_path=default)
    assert default.exists() and created.key_id not in ids
    monkeypatch.setenv("OTHER_VAR", pems[2].decode())
    assert load_signing_key(None, env_var="OTHER_VAR", default_path=default).key_id == ids[2]


def test_group_readable_key_is_refused(tmp_path, no_env_key):
    path = tmp_path / "k.pem"
    load_signing_key(None, default_path=path)
    os.chmod(path, 0o640)
    with pytest.raises(SigningKeyError, match=r"0640.*group/others.*chmod 600") as err:
        load_signing_key(path)
    assert str(path) in str(err.value)
    os.chmod(path, 0o604)
    with pytest.raises(SigningKeyError):
        load_signing_key(None, default_path=path)


def test_missing_encrypted_and_non_ed25519_keys_are_refused(tmp_path, no_env_key):
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(tmp_path / "absent.pem")
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    os.chmod(encrypted, 0o600)
    with pytest.raises(SigningKeyError, match="encrypted"):
        load_signing_key(encrypted)
    ecdsa = tmp_path / "ec.pem"
    ecdsa.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(ecdsa, 0o600)
    with pytest.raises(SigningKeyError, match="only Ed25519"):
        load_signing_key(ecdsa)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        load_signing_key(garbage)


def test_repr_and_pickle_never_expose_the_private_key(tmp_path, no_env_key):
    key = load_signing_key(None, default_path=tmp_path / "k.pem")
    raw = _raw_private(key)
    body = _pem_body(key.private_pem())
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert key.key_id in text
        assert body.decode() not in text and raw.hex() not in text
        assert base64.b64encode(raw).decode() not in text and "PRIVATE" not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert not hasattr(key, "__dict__")


def test_signature_verifies_with_cryptography_directly(tmp_path, no_env_key):
    key = load_signing_key(None, default_path=tmp_path / "k.pem")
    sig = key.sign(b"message")
    assert len(sig) == 64
    public_key_from_pem(key.public_pem()).verify(sig, b"message")  # raises InvalidSignature if wrong
    assert key.sign(b"message") == sig  # Ed25519 is deterministic (RFC 8032)


def test_hmac_secret_and_ids(tmp_path):
    path = tmp_path / "secrets" / "reviewer_hmac.key"
    secret = load_or_create_secret(path)
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_secret(path) == secret
    assert load_or_create_secret(tmp_path / "other.key") != secret
    # RFC 4231 test case 1: key = 0x0b * 20, data = "Hi There"
    assert hmac_id(b"\x0b" * 20, "Hi There") == (
        "hmac-sha256:b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    assert hmac_id(secret, "reviewer@example.com") == "hmac-sha256:" + hmac.new(
        secret, "reviewer@example.com".encode(), hashlib.sha256).hexdigest()
    with pytest.raises(ValueError):
        hmac_id(b"short", "x")
    os.chmod(path, 0o644)
    with pytest.raises(SigningKeyError, match="group/others"):
        load_or_create_secret(path)
    bad = tmp_path / "bad.key"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"too short")
    os.close(fd)
    with pytest.raises(SigningKeyError, match="exactly 32 bytes"):
        load_or_create_secret(bad)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_keys_and_secrets_are_exactly_0600_in_0700_folders_whatever_the_umask(tmp_path, no_env_key, umask):
    previous = os.umask(umask)  # 0o000 and 0o022 would widen a plain open(); 0o277 would narrow it to 0400
    try:
        secret_path = tmp_path / "secrets" / "review_session.key"
        key_path = tmp_path / "keys" / "signing_ed25519.pem"
        load_or_create_secret(secret_path)
        load_signing_key(None, default_path=key_path)
    finally:
        os.umask(previous)
    for path in (secret_path, key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(load_or_create_secret(secret_path)) == 32  # and both read back
    assert load_signing_key(None, default_path=key_path).key_id.startswith("ed25519:")


def test_a_secret_that_is_not_a_regular_file_is_refused(tmp_path):
    folder = tmp_path / "secret-dir"
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)
    with pytest.raises(SigningKeyError, match="not a regular file"):
        load_or_create_secret(folder)


# --------------------------------------------------------------------------------------------------------------
# DSSE / in-toto
# --------------------------------------------------------------------------------------------------------------

def test_pae_matches_the_dsse_spec_example():
    # secure-systems-lab/dsse protocol.md test vector
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("http://example.com/HelloWorld", b"hello world") == expected
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"  # lengths in bytes


def test_envelope_round_trip_and_independent_check():
    key = SigningKey.generate()
    stmt = make_statement([{"name": "a.jsonl", "digest": {"sha256": "0" * 64}}], {"batch": "b"})
    env = sign_envelope(stmt, IN_TOTO_PAYLOAD_TYPE, key)
    assert set(env) == {"payloadType", "payload", "signatures"}
    assert env["signatures"][0]["keyid"] == key.key_id
    assert verify_envelope(env, {key.key_id: key.public_key}) == stmt
    # verify with cryptography and a PAE built here from the spec, not with our verifier
    msg = b"DSSEv1 %d %s %d %s" % (len(IN_TOTO_PAYLOAD_TYPE), IN_TOTO_PAYLOAD_TYPE.encode(), len(stmt), stmt)
    key.public_key.verify(base64.b64decode(env["signatures"][0]["sig"]), msg)
    parsed = parse_statement(stmt)
    assert parsed["_type"] == "https://in-toto.io/Statement/v1"
    assert parsed["predicateType"] == "https://synqa.dev/handover/v1"


def test_envelope_errors_are_specific():
    key, other = SigningKey.generate(), SigningKey.generate()
    env = sign_envelope(b'{"x":1}', IN_TOTO_PAYLOAD_TYPE, key)
    with pytest.raises(UnknownKeyIdError) as err:
        verify_envelope(env, {other.key_id: other.public_key})
    assert key.key_id in str(err.value) and other.key_id in str(err.value)
    tampered = dict(env, payload=base64.b64encode(b'{"x":2}').decode())
    with pytest.raises(BadSignatureError):
        verify_envelope(tampered, {key.key_id: key.public_key})
    forged = dict(env, signatures=[{"keyid": key.key_id, "sig": sign_envelope(
        b'{"x":1}', IN_TOTO_PAYLOAD_TYPE, other)["signatures"][0]["sig"]}])
    with pytest.raises(BadSignatureError):
        verify_envelope(forged, {key.key_id: key.public_key})
    retyped = dict(env, payloadType="text/plain")
    with pytest.raises(MalformedEnvelopeError, match="payloadType"):
        verify_envelope(retyped, {key.key_id: key.public_key})
    with pytest.raises(BadSignatureError):  # type is signed too (PAE)
        verify_envelope(retyped, {key.key_id: key.public_key}, payload_type=None)
    for bad in ([], {"payloadType": IN_TOTO_PAYLOAD_TYPE}, dict(env, payload="***"), dict(env, signatures=[]),
                dict(env, signatures=[{"keyid": key.key_id, "sig": "%%%"}]), dict(env, signatures=["x"])):
        with pytest.raises(MalformedEnvelopeError):
            verify_envelope(bad, {key.key_id: key.public_key})


def test_statement_shape_is_checked():
    for bad in (b"not json", b"[]", b'{"_type": "x"}',
                make_statement([{"name": "a"}], {}),  # subject without digest
                make_statement([], {}, predicate_type="https://example.com/other")):
        with pytest.raises(MalformedEnvelopeError):
            parse_statement(bad)
