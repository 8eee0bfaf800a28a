"""Seed corpus validation (great-expectations) and taxonomy versioning."""

import json
from pathlib import Path

import pandas as pd
import pytest

from synqa_dagster.corpus.seeds import SeedCorpusError, load_seed_corpus
from synqa_dagster.corpus.taxonomy import TaxonomyError, label_mapping, load_taxonomy
from tests.conftest import REPO_ROOT

SEEDS = REPO_ROOT / "data" / "demo" / "seeds.jsonl"
TAXONOMY = REPO_ROOT / "data" / "demo" / "taxonomy"


def _demo_rows() -> list[dict]:
    return [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_demo_corpus_is_valid_and_hashed():
    corpus = load_seed_corpus(SEEDS, TAXONOMY, "v1")
    rows = corpus.rows
    assert rows["seed_id"].is_unique and len(rows) >= 120
    assert rows["intent"].nunique() >= 40
    assert set(rows["locale"]) == {"en-GB", "en-US"}
    assert (rows.groupby("intent")["seed_id"].count() >= 3).all()
    assert len(corpus.content_hash) == 16 and corpus.taxonomy.version == "v1"


@pytest.mark.parametrize(
    "mutate, line, field, words",
    [
        (lambda r: r.__setitem__("label", "billing.teleport_request"), 5, "label", "not a label of taxonomy v1"),
        (lambda r: r.__setitem__("text", None), 7, "text", "missing"),
        (lambda r: r.__setitem__("text", "hi"), 3, "text", "length outside"),
        (lambda r: r.__setitem__("locale", "english"), 9, "locale", "locale"),
    ],
)
def test_bad_seed_names_file_line_and_field(tmp_path: Path, mutate, line, field, words):
    rows = _demo_rows()[:12]
    mutate(rows[line - 1])
    path = _write_jsonl(tmp_path / "seeds.jsonl", rows)
    with pytest.raises(SeedCorpusError) as err:
        load_seed_corpus(path, TAXONOMY, "v1")
    message = str(err.value)
    assert f"{path}: line {line}: field {field}" in message and words in message


def test_duplicate_ids_are_reported_on_both_lines(tmp_path: Path):
    rows = _demo_rows()[:6]
    rows[4]["seed_id"] = rows[1]["seed_id"]
    path = _write_jsonl(tmp_path / "dups.jsonl", rows)
    with pytest.raises(SeedCorpusError) as err:
        load_seed_corpus(path, TAXONOMY, "v1")
    assert "line 2: field seed_id: is not unique" in str(err.value)
    assert "line 5: field seed_id: is not unique" in str(err.value)


def test_broken_json_and_missing_column(tmp_path: Path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_demo_rows()[0]) + "\n{not json\n")
    with pytest.raises(SeedCorpusError, match=r"broken.jsonl: line 2: not valid JSON"):
        load_seed_corpus(path, TAXONOMY, "v1")
    rows = [{k: v for k, v in r.items() if k != "locale"} for r in _demo_rows()[:3]]
    with pytest.raises(SeedCorpusError, match=r"missing required field\(s\) \['locale'\]"):
        load_seed_corpus(_write_jsonl(tmp_path / "nolocale.jsonl", rows), TAXONOMY, "v1")


def test_csv_and_parquet_inputs_report_their_own_line_numbers(tmp_path: Path):
    frame = pd.DataFrame(_demo_rows()[:8])
    frame.loc[3, "label"] = "nope.nope"
    csv = tmp_path / "seeds.csv"
    frame.to_csv(csv, index=False)
    with pytest.raises(SeedCorpusError, match=r"seeds.csv: line 5: field label"):  # header is line 1
        load_seed_corpus(csv, TAXONOMY, "v1")
    parquet = tmp_path / "seeds.parquet"
    frame.to_parquet(parquet)
    with pytest.raises(SeedCorpusError, match=r"seeds.parquet: line 4: field label"):
        load_seed_corpus(parquet, TAXONOMY, "v1")
    frame.loc[3, "label"] = frame.loc[2, "label"]
    frame.to_parquet(parquet)
    assert len(load_seed_corpus(parquet, TAXONOMY, "v1").rows) == 8


def test_v1_rows_read_under_v2_only_through_the_explicit_mapping():
    v2 = load_taxonomy(TAXONOMY, "v2")
    assert v2.supersedes == "v1"
    corpus = load_seed_corpus(SEEDS, TAXONOMY, "v2")
    rows = corpus.rows
    assert (rows["source_taxonomy_version"] == "v1").all() and (rows["taxonomy_version"] == "v2").all()
    mapping = label_mapping(TAXONOMY, "v1", "v2")
    assert (rows["intent"] == rows["source_label"].map(mapping)).all()
    assert rows["intent"].isin(list(v2.labels)).all()
    changed = rows[rows["intent"] != rows["source_label"]]
    assert len(changed) > 0  # some labels really were renamed or merged, and the original is kept


def test_incomplete_mapping_is_refused(tmp_path: Path):
    import yaml

    for version in ("v1", "v2"):
        (tmp_path / f"{version}.yaml").write_text((TAXONOMY / f"{version}.yaml").read_text())
    v2 = yaml.safe_load((tmp_path / "v2.yaml").read_text())
    dropped = sorted(v2["mapping_from_v1"])[0]
    del v2["mapping_from_v1"][dropped]
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(v2))
    with pytest.raises(TaxonomyError, match=f"does not map v1 labels \\['{dropped}'\\]"):
        load_taxonomy(tmp_path, "v2")
    with pytest.raises(TaxonomyError, match="no explicit mapping from taxonomy v2 to v1"):
        label_mapping(TAXONOMY, "v2", "v1")


def test_duplicate_ids_across_taxonomy_versions_are_caught(tmp_path: Path):
    rows = _demo_rows()[:4]
    v2 = load_taxonomy(TAXONOMY, "v2")
    rows[3]["seed_id"] = rows[0]["seed_id"]
    rows[3]["taxonomy_version"] = "v2"
    rows[3]["label"] = sorted(v2.labels)[0]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(SeedCorpusError) as err:
        load_seed_corpus(path, TAXONOMY, "v2")
    assert "line 1: field seed_id: is not unique" in str(err.value) and "line 4: field seed_id: is not unique" in str(err.value)
