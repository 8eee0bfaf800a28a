"""RFC 6962 Merkle tree hash, inclusion proofs and their verification (SHA-256).

Definitions (RFC 6962 §2.1, unchanged in RFC 9162 §2.1.1):

* leaf hash ``= SHA-256(0x00 || data)``; interior node ``= SHA-256(0x01 || left || right)``;
* ``MTH({})`` is ``SHA-256("")``; ``MTH({d0}) = leaf hash``; for n > 1, with k the largest power of two < n,
  ``MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))``.

That recursive definition equals the bottom-up construction used here (pair neighbours level by level; an
odd node at the end of a level is promoted unchanged, never duplicated), which builds the tree in O(n) hashes
and yields every inclusion proof (RFC 6962 §2.1.1 ``PATH``, leaf-to-root order) by walking the stored levels.
:func:`verify_inclusion` is the verifier of RFC 9162 §2.1.3.2.

All hashes are 32-byte ``bytes``; indexes are 0-based.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "HASH_SIZE", "EMPTY_ROOT", "leaf_hash", "node_hash", "MerkleTree", "merkle_root", "inclusion_proof",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _check_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(leaf_hashes):
        if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
            raise ValueError(f"leaf hash #{i} must be {HASH_SIZE} bytes, got {type(h).__name__} of "
                             f"length {len(h) if hasattr(h, '__len__') else '?'}")


class MerkleTree:
    """An RFC 6962 tree over already-hashed leaves, built once; root and every proof come from its levels.

    Args:
        leaf_hashes: the leaf hashes (each 32 bytes, e.g. from :func:`leaf_hash`), in tree order.
    Attributes:
        size: number of leaves.
        root: the Merkle tree hash (``EMPTY_ROOT`` for no leaves).
        levels: ``levels[0]`` are the leaves, ``levels[-1] == [root]`` (absent for an empty tree).
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        _check_hashes(leaf_hashes)
        self.size = len(leaf_hashes)
        self.levels: list[list[bytes]] = []
        if not self.size:
            self.root = EMPTY_ROOT
            return
        level = [bytes(h) for h in leaf_hashes]
        self.levels.append(level)
        while len(level) > 1:
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])  # promoted, RFC 6962's right subtree of a non-power-of-two size
            self.levels.append(nxt)
            level = nxt
        self.root = level[0]

    def proof(self, index: int) -> list[bytes]:
        """The RFC 6962 audit path (``PATH(index, D[n])``) of leaf ``index``: sibling hashes, leaf to root.

        Raises:
            IndexError: index outside ``0 .. size-1``.
        """
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of {self.size} leaves")
        path: list[bytes] = []
        i = index
        for level in self.levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return path


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle tree hash of ``leaf_hashes`` (32-byte hashes, in order); ``SHA-256("")`` if empty."""
    return MerkleTree(leaf_hashes).root


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The RFC 6962 ``PATH(index, D[n])`` of one leaf (builds the tree; use :class:`MerkleTree` for many proofs)."""
    return MerkleTree(leaf_hashes).proof(index)


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Check an inclusion proof with the algorithm of RFC 9162 §2.1.3.2.

    Args:
        leaf_hash: the 32-byte hash of the leaf (already ``0x00``-prefixed and hashed).
        index: the leaf's 0-based index.
        tree_size: number of leaves of the tree the proof is for.
        proof: the audit path, leaf to root.
        root: the expected 32-byte tree hash.
    Returns:
        True if and only if the proof leads from the leaf at ``index`` to ``root`` in a tree of ``tree_size``;
        malformed input (wrong sizes or types, index out of range) gives False, never an exception.
    """
    if not isinstance(index, int) or not isinstance(tree_size, int) or isinstance(index, bool):
        return False
    if not 0 <= index < tree_size:
        return False
    if not isinstance(leaf_hash, (bytes, bytearray)) or len(leaf_hash) != HASH_SIZE:
        return False
    if not isinstance(root, (bytes, bytearray)) or len(root) != HASH_SIZE:
        return False
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    for p in proof:
        if not isinstance(p, (bytes, bytearray)) or len(p) != HASH_SIZE:
            return False
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(bytes(p), r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, bytes(p))
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == bytes(root)
