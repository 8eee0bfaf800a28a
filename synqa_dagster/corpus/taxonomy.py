"""Versioned intent taxonomies with explicit mappings between versions.

A taxonomy file ``<dir>/<version>.yaml`` lists intents (``label``, ``group``, ``description``). A newer version
names the version it ``supersedes`` and gives ``mapping_from_<old>``: every old label mapped to exactly one new
label. Rows keep the label *and* the version it was written in; a label is only ever re-read under another
version through that explicit mapping, so a v2 taxonomy cannot silently change what a v1 row means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synqa_dagster.errors import InputError, is_blank, read_text_strict, yaml_error, yaml_line_of


class TaxonomyError(InputError):
    """A taxonomy file is missing, malformed, or cannot map one version onto another; the message names the file
    (and the line and field where there is one)."""


@dataclass(frozen=True)
class Taxonomy:
    """One version of the intent taxonomy.

    Attributes:
        version: e.g. ``"v1"``.
        labels: intent label -> group.
        supersedes: the previous version this one maps from (or None).
        mapping: previous-version label -> label in this version (complete over the previous version).
        path: the file it was read from.
        descriptions: intent label -> one-sentence definition.
    """

    version: str
    labels: dict[str, str]
    supersedes: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    path: str = ""
    descriptions: dict[str, str] = field(default_factory=dict)

    def __contains__(self, label: object) -> bool:
        return label in self.labels


def load_taxonomy(directory: str | Path, version: str) -> Taxonomy:
    """Read ``<directory>/<version>.yaml`` and check its mapping (if any) against the version it supersedes."""
    path = Path(directory) / f"{version}.yaml"
    if not path.is_file():
        raise TaxonomyError(f"taxonomy version {version!r} not found: {path}")
    text = read_text_strict(path, error=TaxonomyError)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc, error=TaxonomyError) from None
    if not isinstance(data, dict):
        raise TaxonomyError(f"expected a mapping (version, intents...), got {type(data).__name__}", path=path, line=1)
    if data.get("version") != version:
        raise TaxonomyError(f"{path}: field version is {data.get('version')!r}, expected {version!r}")
    labels: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    intents = data.get("intents") or []
    if not isinstance(intents, list):
        raise TaxonomyError(f"must be a list, got {type(intents).__name__}", path=path,
                            line=yaml_line_of(text, ["intents"]), field="intents")
    for i, intent in enumerate(intents, start=1):
        if not isinstance(intent, dict) or is_blank(intent.get("label")) or not isinstance(intent.get("label"), str):
            where = f"line {yaml_line_of(text, ['intents', i - 1])}: "
            raise TaxonomyError(f"{path}: {where}intents[{i}]: field label is missing, blank or not a string")
        if intent["label"] in labels:
            where = f"line {yaml_line_of(text, ['intents', i - 1, 'label'])}: "
            raise TaxonomyError(f"{path}: {where}intents[{i}]: duplicate label {intent['label']!r}")
        labels[intent["label"]] = str(intent.get("group") or intent["label"].split(".")[0])
        descriptions[intent["label"]] = str(intent.get("description") or intent["label"])
    if not labels:
        raise TaxonomyError(f"{path}: no intents")
    supersedes = data.get("supersedes")
    mapping: dict[str, str] = {}
    if supersedes:
        key = f"mapping_from_{supersedes}"
        mapping = dict(data.get(key) or {})
        previous = load_taxonomy(directory, supersedes)
        missing = sorted(set(previous.labels) - set(mapping))
        unknown_old = sorted(set(mapping) - set(previous.labels))
        unknown_new = sorted({v for v in mapping.values() if v not in labels})
        if missing:
            raise TaxonomyError(f"{path}: field {key} does not map {supersedes} labels {missing}")
        if unknown_old:
            raise TaxonomyError(f"{path}: field {key} maps labels not in {supersedes}: {unknown_old}")
        if unknown_new:
            raise TaxonomyError(f"{path}: field {key} maps to labels not in {version}: {unknown_new}")
    return Taxonomy(version=version, labels=labels, supersedes=supersedes, mapping=mapping, path=str(path), descriptions=descriptions)


def label_mapping(directory: str | Path, from_version: str, to_version: str) -> dict[str, str]:
    """Labels written under ``from_version`` -> their labels under ``to_version``, composed from explicit mappings.

    Raises :class:`TaxonomyError` if ``to_version`` does not descend from ``from_version`` through
    ``supersedes`` links (no mapping is ever guessed).
    """
    source = load_taxonomy(directory, from_version)
    if from_version == to_version:
        return {label: label for label in source.labels}
    chain: list[Taxonomy] = []
    current = load_taxonomy(directory, to_version)
    while current.version != from_version:
        chain.append(current)
        if not current.supersedes:
            raise TaxonomyError(
                f"no explicit mapping from taxonomy {from_version} to {to_version} "
                f"(the chain from {to_version} ends at {current.version})"
            )
        current = load_taxonomy(directory, current.supersedes)
    mapping = {label: label for label in source.labels}
    for taxonomy in reversed(chain):
        mapping = {old: taxonomy.mapping[new] for old, new in mapping.items()}
    return mapping
