"""Load and validate the real-data reference sample (the drift baseline) the way the seed corpus is validated.

Input: JSONL / CSV / Parquet with ``text``, ``label``, ``locale`` and an id column (``message_id``, ``seed_id``,
``row_id`` or ``id``; the line number when absent), optional ``taxonomy_version`` and any extra columns (e.g.
``channel``, kept). Validation reuses :func:`synqa_dagster.corpus.seeds.read_rows` and the seed corpus's
great-expectations suite (non-null, unique ids, text lengths, labels in the taxonomy, locale format) and rejects
whitespace-only texts and ids; any problem (a file that is not UTF-8 included) raises :class:`ReferenceCorpusError`
(an :class:`~synqa_dagster.errors.InputError`) naming the file, the line and the field. Labels are carried to the target
taxonomy version through the taxonomy's explicit mappings, into ``intent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synqa_dagster.common import file_hash
from synqa_dagster.corpus.seeds import (
    SeedCorpusError, blank_problems, read_rows, validate_with_great_expectations, validation_report,
)
from synqa_dagster.corpus.taxonomy import TaxonomyError, label_mapping, load_taxonomy

ID_COLUMNS = ("message_id", "seed_id", "row_id", "id")
REQUIRED_COLUMNS = ("text", "label", "locale")
OUTPUT_COLUMNS = ("ref_id", "intent", "taxonomy_version", "source_label", "source_taxonomy_version", "locale", "text", "line")


class ReferenceCorpusError(SeedCorpusError):
    """The reference sample is unreadable or fails validation; the message names file, line and field."""


@dataclass(frozen=True)
class ReferenceCorpus:
    """A validated reference sample.

    Attributes:
        rows: :data:`OUTPUT_COLUMNS` plus any extra input columns, one row per message, in file order.
        path: the file read.
        content_hash: SHA-256 of the file's bytes (first 16 hex digits): the reference's version.
        taxonomy_version: the version ``intent`` is expressed in.
    """

    rows: pd.DataFrame
    path: str
    content_hash: str
    taxonomy_version: str


def load_reference_corpus(
    path: str | Path,
    taxonomy_dir: str | Path,
    taxonomy_version: str | None = None,
    min_chars: int = 1,
    max_chars: int = 5000,
) -> ReferenceCorpus:
    """Read, validate and version the reference sample; ``taxonomy_version`` None keeps each row's own version
    (every row must then share one version)."""
    path = Path(path)
    try:
        frame = read_rows(path)
    except SeedCorpusError as exc:
        raise ReferenceCorpusError(str(exc)) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ReferenceCorpusError(f"{path}: line 1: missing required field(s) {missing} (columns: {sorted(frame.columns)})")
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    frame["_ref_id"] = frame[id_column].astype("string") if id_column else frame["line"].map(lambda n: f"line-{n}").astype("string")
    if "taxonomy_version" not in frame:
        if taxonomy_version is None:
            raise ReferenceCorpusError(f"{path}: line 1: field taxonomy_version is missing and no target version was given")
        frame["taxonomy_version"] = taxonomy_version
    frame["taxonomy_version"] = frame["taxonomy_version"].fillna(taxonomy_version or "").astype(str)
    versions = sorted(frame["taxonomy_version"].unique())
    target = taxonomy_version or versions[0]
    if taxonomy_version is None and len(versions) > 1:
        raise ReferenceCorpusError(f"{path}: rows use taxonomy versions {versions}; name a target version to map them to")
    for column in REQUIRED_COLUMNS:
        frame[column] = frame[column].astype("string")

    problems: list[str] = []
    parts = []
    try:
        load_taxonomy(taxonomy_dir, target)
        for version, group in frame.groupby("taxonomy_version", sort=True):
            # The seed corpus's suite, with the id column in seed_id's place; messages name the real field.
            view = group.assign(seed_id=group["_ref_id"])[["seed_id", "label", "text", "locale", "line"]].reset_index(drop=True)
            found = validate_with_great_expectations(view, path, load_taxonomy(taxonomy_dir, str(version)), min_chars, max_chars)
            found = [p.replace("field seed_id", f"field {id_column or 'line'}") for p in found]
            found += blank_problems(group, path, {"text": "text", **({id_column: id_column} if id_column else {})})
            problems += found
            if not found:
                mapping = label_mapping(taxonomy_dir, str(version), target)
                parts.append(group.assign(intent=group["label"].map(mapping)))
    except TaxonomyError as exc:
        raise ReferenceCorpusError(f"{path}: {exc}") from None
    if problems:
        raise ReferenceCorpusError(validation_report("reference corpus", problems))

    rows = pd.concat(parts).sort_values("line", kind="stable").reset_index(drop=True)
    rows = rows.rename(columns={"label": "source_label", "taxonomy_version": "source_taxonomy_version", "_ref_id": "ref_id"})
    rows["taxonomy_version"] = target
    extra = [c for c in rows.columns if c not in OUTPUT_COLUMNS and c != id_column]
    rows = rows[list(OUTPUT_COLUMNS) + extra]
    return ReferenceCorpus(rows=rows, path=str(path), content_hash=file_hash(path), taxonomy_version=target)
