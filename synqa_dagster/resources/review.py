"""Resources of the human review gate and the handover pack: the review store and the signing key."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from synqa_dagster.lineage.keys import load_signing_key
from synqa_dagster.paths import default_handover_base, default_review_store_url, default_signing_key_path, reviewer_hmac_key_path
from synqa_dagster.review.identity import reviewer_hasher
from synqa_dagster.review.store import ReviewStore


class ReviewStoreResource(dg.ConfigurableResource):
    """The review store the sample is pushed to and decisions are read from.

    Attributes:
        url: ``sqlite:///path.db`` (embedded default, under the instance folder) or ``postgresql://user@host/db``;
            empty means ``$SYNQA_REVIEW_STORE`` or the embedded default.
    """

    url: str = ""

    def resolved_url(self) -> str:
        """The store URL in use: ``url``, else ``$SYNQA_REVIEW_STORE``, else the instance's SQLite file."""
        return self.url or default_review_store_url()

    def store(self):
        """An open :class:`synqa_dagster.review.store.ReviewStore` (schema ensured; a SQLite file is owner-only,
        0600, and an existing one with group/other permissions is tightened on open)."""
        return ReviewStore.from_url(self.resolved_url())

    def reviewer_hash(self):
        """The keyed HMAC that stands in for a reviewer id everywhere outside the reviewers table (its secret
        file is created 0600 in a 0700 folder, and refused if group/others may access it)."""
        return reviewer_hasher(reviewer_hmac_key_path())


class HandoverResource(dg.ConfigurableResource):
    """Where handover folders go and which key signs them.

    Attributes:
        base_path: folder of the per-batch handover folders (``batch=<key>/``) and the dataset roll-up; empty means
            ``$SYNQA_HANDOVER`` or ``<instance>/handover``.
        signing_key_path: Ed25519 PKCS8 PEM; empty means ``$SYNQA_SIGNING_KEY`` (a PEM or a path) or the embedded
            default key, created on first use under ``<instance>/keys`` with owner-only permissions.
    """

    base_path: str = ""
    signing_key_path: str = ""

    def base(self) -> Path:
        """The folder holding the handover folders (resolved)."""
        return Path(self.base_path).resolve() if self.base_path else default_handover_base()

    def signing_key(self):
        """The Ed25519 :class:`~synqa_dagster.lineage.keys.SigningKey` (see
        :func:`~synqa_dagster.lineage.keys.load_signing_key`; a key file group/others may access is refused)."""
        return load_signing_key(self.signing_key_path or None, default_path=default_signing_key_path())
