"""DSSE v1 envelopes signed with Ed25519, carrying an in-toto Statement v1.

* PAE (pre-authentication encoding, DSSE v1 protocol):
  ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, LEN = byte length in ASCII decimal, SP = one space.
  The signature is over PAE, never over the bare payload, so the payload type is signed too.
* Envelope: ``{"payloadType": ..., "payload": base64(payload), "signatures": [{"keyid": ..., "sig": base64}]}``
  (standard base64 with padding; the verifier also accepts URL-safe and unpadded forms, as DSSE allows).
* Statement (in-toto v1): ``{"_type": "https://in-toto.io/Statement/v1", "subject": [{"name", "digest":
  {"sha256": hex}}...], "predicateType": "https://synqa.dev/handover/v1", "predicate": {...}}``, serialised as
  RFC 8785 canonical JSON so the same statement always gives the same bytes.

References: https://github.com/secure-systems-lab/dsse (protocol.md, envelope.md);
https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import canonical_json
from .keys import SigningKey

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE", "STATEMENT_TYPE", "PREDICATE_TYPE", "DsseError", "MalformedEnvelopeError",
    "UnknownKeyIdError", "BadSignatureError", "pae", "sign_envelope", "verify_envelope", "decode_payload",
    "make_statement", "parse_statement",
]

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://synqa.dev/handover/v1"


class DsseError(ValueError):
    """Base class: the envelope cannot be trusted."""


class MalformedEnvelopeError(DsseError):
    """The envelope (or its statement) is not the expected JSON shape, or its base64 is invalid."""


class UnknownKeyIdError(DsseError):
    """No signature is by a trusted key id.

    Attributes:
        seen: key ids found in the envelope's signatures.
        trusted: key ids the verifier was given.
    """

    def __init__(self, seen: list[str], trusted: list[str]) -> None:
        super().__init__(f"envelope is signed by key id(s) {', '.join(map(repr, seen)) or '(none)'}, "
                         f"but the trusted key id is {', '.join(map(repr, trusted)) or '(none)'}")
        self.seen = seen
        self.trusted = trusted


class BadSignatureError(DsseError):
    """A signature names a trusted key id but does not verify (payload, type or signature changed).

    Attributes:
        key_id: the key id the failing signature claims.
    """

    def __init__(self, key_id: str) -> None:
        super().__init__(f"signature by key id {key_id!r} does not verify: the payload, its type or the signature "
                         "was changed, or it was made by another key claiming this id")
        self.key_id = key_id


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload`` with ``payload_type``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedEnvelopeError(f"{what} must be a base64 string, found {type(text).__name__}")
    s = text.strip()
    s += "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s.encode("ascii"))
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedEnvelopeError(f"{what} is not valid base64") from None


def sign_envelope(payload: bytes, payload_type: str, key: SigningKey) -> dict[str, Any]:
    """Sign ``payload`` into a DSSE v1 envelope with one Ed25519 signature.

    Args:
        payload: the bytes to sign (for synqa: a canonical-JSON in-toto statement).
        payload_type: its media type, e.g. :data:`IN_TOTO_PAYLOAD_TYPE`.
        key: the signing key; its ``key_id`` becomes the signature's ``keyid``.
    Returns:
        The envelope dict (JSON-able).
    """
    sig = key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": key.key_id, "sig": base64.b64encode(sig).decode("ascii")}],
    }


def decode_payload(envelope: Any) -> tuple[str, bytes]:
    """Check the envelope's shape and return ``(payloadType, payload bytes)`` WITHOUT checking any signature.

    Raises:
        MalformedEnvelopeError: not an object, missing/ill-typed fields, invalid base64.
    """
    if not isinstance(envelope, Mapping):
        raise MalformedEnvelopeError(f"envelope must be a JSON object, found {type(envelope).__name__}")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise MalformedEnvelopeError("envelope field 'payloadType' is missing or not a string")
    return payload_type, _b64decode(envelope.get("payload"), "envelope field 'payload'")


def verify_envelope(envelope: Any, public_keys: Mapping[str, Ed25519PublicKey],
                    payload_type: str | None = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """Verify a DSSE envelope and return its payload.

    Succeeds when at least one signature carries a key id present in ``public_keys`` and every such signature
    verifies over ``PAE(payloadType, payload)``. Signatures by other key ids are ignored unless none is trusted.

    Args:
        envelope: the parsed envelope JSON.
        public_keys: trusted keys by key id (``{key.key_id: key.public_key}``).
        payload_type: required ``payloadType`` (``None``: accept any).
    Returns:
        The verified payload bytes.
    Raises:
        MalformedEnvelopeError: bad shape, base64, or unexpected payload type.
        UnknownKeyIdError: no signature by a trusted key id.
        BadSignatureError: a signature by a trusted key id does not verify.
    """
    ptype, payload = decode_payload(envelope)
    if payload_type is not None and ptype != payload_type:
        raise MalformedEnvelopeError(f"payloadType is {ptype!r}, expected {payload_type!r}")
    sigs = envelope.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        raise MalformedEnvelopeError("envelope field 'signatures' is missing or empty")
    seen: list[str] = []
    verified = 0
    message = pae(ptype, payload)
    for i, entry in enumerate(sigs):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("keyid", ""), str):
            raise MalformedEnvelopeError(f"signatures[{i}] must be an object with a string 'keyid'")
        key_id = entry.get("keyid", "")
        sig = _b64decode(entry.get("sig"), f"signatures[{i}].sig")
        seen.append(key_id)
        if key_id not in public_keys:
            continue
        try:
            public_keys[key_id].verify(sig, message)
        except InvalidSignature:
            raise BadSignatureError(key_id) from None
        verified += 1
    if not verified:
        raise UnknownKeyIdError(seen, sorted(public_keys))
    return payload


def make_statement(subjects: list[dict[str, Any]], predicate: Mapping[str, Any],
                   predicate_type: str = PREDICATE_TYPE) -> bytes:
    """The canonical-JSON bytes of an in-toto Statement v1.

    Args:
        subjects: ``[{"name": str, "digest": {"sha256": hex}}, ...]``.
        predicate: the predicate object.
        predicate_type: its type URI.
    """
    return canonical_json({"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": predicate_type,
                           "predicate": dict(predicate)})


def parse_statement(payload: bytes, predicate_type: str = PREDICATE_TYPE) -> dict[str, Any]:
    """Parse and shape-check an in-toto Statement v1 (subjects with sha256 digests, expected predicate type).

    Returns:
        The statement dict.
    Raises:
        MalformedEnvelopeError: invalid JSON or unexpected shape (the message says which part).
    """
    try:
        stmt = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEnvelopeError(f"statement is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(stmt, dict):
        raise MalformedEnvelopeError("statement must be a JSON object")
    if stmt.get("_type") != STATEMENT_TYPE:
        raise MalformedEnvelopeError(f"statement _type is {stmt.get('_type')!r}, expected {STATEMENT_TYPE!r}")
    if stmt.get("predicateType") != predicate_type:
        raise MalformedEnvelopeError(f"predicateType is {stmt.get('predicateType')!r}, expected {predicate_type!r}")
    if not isinstance(stmt.get("predicate"), dict):
        raise MalformedEnvelopeError("statement predicate must be an object")
    subjects = stmt.get("subject")
    if not isinstance(subjects, list):
        raise MalformedEnvelopeError("statement subject must be a list")
    for i, s in enumerate(subjects):
        ok = (isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
              and isinstance(s["digest"].get("sha256"), str))
        if not ok:
            raise MalformedEnvelopeError(f"statement subject[{i}] must be {{'name': str, 'digest': {{'sha256': hex}}}}")
    return stmt
