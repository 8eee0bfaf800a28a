"""Signed per-row lineage for handover folders (no Dagster imports).

* :mod:`.canonical` - RFC 8785 canonical JSON (``canonical_json``);
* :mod:`.merkle` - RFC 6962 Merkle tree, inclusion proofs, RFC 9162 verification;
* :mod:`.keys` - Ed25519 signing keys (env / configured / default file, 0600), key ids, HMAC reviewer ids;
* :mod:`.dsse` - DSSE v1 envelopes carrying in-toto Statement v1;
* :mod:`.pack` - ``write_signed_pack``: lineage.jsonl, lineage.proofs.jsonl, signing_key.pub, manifest.dsse.json;
* :mod:`.verify` - ``verify_pack``: checks a folder and names every problem (file, line, row id, field).
"""

from .canonical import CanonicalJSONError, canonical_json
from .keys import (
    SigningKey, SigningKeyError, hmac_id, key_id_of, load_or_create_secret, load_signing_key, public_key_from_pem,
)
from .merkle import inclusion_proof, merkle_root, verify_inclusion
from .pack import PackManifest, compute_lineage, content_digests, write_signed_pack
from .verify import Problem, VerifyReport, verify_pack

__all__ = [
    "CanonicalJSONError", "canonical_json", "SigningKey", "SigningKeyError", "hmac_id", "key_id_of",
    "load_or_create_secret", "load_signing_key", "public_key_from_pem", "inclusion_proof", "merkle_root",
    "verify_inclusion", "PackManifest", "compute_lineage", "content_digests", "write_signed_pack", "Problem",
    "VerifyReport", "verify_pack",
]
