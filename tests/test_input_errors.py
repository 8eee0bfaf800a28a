"""Every input error names the file, the line and the field, without a traceback (issue 17, crash safety).

Real files in ``tmp_path``; the command line is run for real (``python -m synqa_dagster.cli``) where the point is
what a user sees: exit status 2, ``synqa: error: FILE: line N: field F: ...`` on stderr, and no traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from synqa_dagster.audit import AuditInputError, ColumnMap, candidate_rows, read_table
from synqa_dagster.config import ConfigError, load_gate_config, load_recipe
from synqa_dagster.corpus.seeds import SeedCorpusError, load_seed_corpus, read_rows
from synqa_dagster.corpus.taxonomy import TaxonomyError, load_taxonomy
from synqa_dagster.errors import (
    InputError, cli_errors, csv_records, decode_strict, read_text_strict, require_text, yaml_line_of,
)
from synqa_dagster.gates.eval_sets import EvalSetError, EvalSetSpec, load_eval_set
from synqa_dagster.stats.reference import ReferenceCorpusError, load_reference_corpus
from tests.conftest import REPO_ROOT, write_recipe

SEEDS = REPO_ROOT / "data" / "demo" / "seeds.jsonl"
TAXONOMY = REPO_ROOT / "data" / "demo" / "taxonomy"
DEMO_RECIPE = REPO_ROOT / "recipes" / "demo.yaml"
DEFAULT_GATES = REPO_ROOT / "gates" / "default.yaml"


def _seed_rows(n: int = 8) -> list[dict]:
    return [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()][:n]


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for i, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in text")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # this checkout
    env.pop("SYNQA_RECIPE", None)
    env.pop("SYNQA_GATES", None)
    env.pop("SYNQA_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "synqa_dagster.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------------------------------------------ the error type


def test_input_error_renders_file_line_field_and_survives_pickling():
    err = InputError("is blank (whitespace only)", path="data/x.csv", line=7, field="text")
    assert str(err) == "data/x.csv: line 7: field text: is blank (whitespace only)"
    assert (err.path, err.line, err.field, err.message) == ("data/x.csv", 7, "text", "is blank (whitespace only)")
    assert str(InputError("bad", path="p.parquet", row=3)) == "p.parquet: row 3: bad"
    assert str(InputError("bad", path="p.csv", line=9, row=4)) == "p.csv: line 9 (record 4): bad"
    again = pickle.loads(pickle.dumps(SeedCorpusError("no rows", path="s.jsonl", line=2)))
    assert type(again) is SeedCorpusError and str(again) == "s.jsonl: line 2: no rows" and again.line == 2
    for cls in (ConfigError, SeedCorpusError, ReferenceCorpusError, TaxonomyError, EvalSetError, AuditInputError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("value, words", [(None, "is missing"), (float("nan"), "is missing"), ("", "is empty"),
                                          (" \t\n ", "is blank"), (42, "must be a string")])
def test_require_text_rejects_missing_empty_and_whitespace_only(value, words):
    with pytest.raises(InputError) as err:
        require_text(value, path="f.jsonl", line=3, field="text")
    assert str(err.value).startswith("f.jsonl: line 3: field text: ") and words in str(err.value)
    assert require_text(" ok ", path="f.jsonl", line=3, field="text") == " ok "


def test_decode_strict_names_line_and_offset_of_the_first_bad_byte(tmp_path: Path):
    data = "line one\nline two\nthird: caf".encode() + b"\xff" + b"\nfourth\n"
    path = tmp_path / "x.txt"
    path.write_bytes(data)
    with pytest.raises(InputError) as err:
        read_text_strict(path)
    offset = data.index(b"\xff")
    assert str(err.value).startswith(f"{path}: line 3: not valid UTF-8 (byte 0xff at offset {offset}, column 11)")
    assert err.value.line == 3
    with pytest.raises(InputError, match="line 2: .* at offset 6,"):  # the BOM counts in the offset
        decode_strict(b"\xef\xbb\xbfab\n\xc3\x28", "bom.csv", encoding="utf-8-sig")
    assert decode_strict(b"\xef\xbb\xbfab", "bom.csv", encoding="utf-8-sig") == "ab"


def test_yaml_line_of_follows_keys_and_indexes():
    text = "a: 1\nb:\n  c:\n    - x: 1\n    - x: 2\n      y: 3\n"
    assert yaml_line_of(text, ("b", "c", 1, "y")) == 6
    assert yaml_line_of(text, ("b", "c", 0)) == 4
    assert yaml_line_of(text, ("b", "missing")) == 2  # the deepest node that exists
    assert yaml_line_of(text, ("b", "function-after[check()]", "c")) == 3  # pydantic's tags are skipped


def test_csv_records_report_the_physical_line_a_record_starts_on():
    text = 'a,b\n1,"two\nlines"\n\n3,"three\n\nlines"\n4,x\n'
    assert [line for line, _ in csv_records(text, "f.csv")] == [1, 2, 5, 8]
    with pytest.raises(InputError, match=r"f\.csv: line 3: malformed CSV: a quoted cell is never closed"):
        csv_records('a,b\n1,2\n3,"open\n4,5\n', "f.csv")


def test_cli_errors_prints_one_line_and_returns_2(capsys):
    def bad(_args):
        raise ConfigError("Input should be a number", path="r.yaml", line=4, field="x.y")

    assert cli_errors(bad)(None) == 2
    assert capsys.readouterr().err == "synqa: error: r.yaml: line 4: field x.y: Input should be a number\n"

    def bug(_args):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):  # anything else keeps its traceback
        cli_errors(bug)(None)


# ----------------------------------------------------------------------------------------- recipe and gate config


def test_non_utf8_recipe_names_the_file_and_line(tmp_path: Path):
    text = DEMO_RECIPE.read_text(encoding="utf-8")
    line = _line_of(text, "description:")
    raw = text.encode("utf-8")
    at = raw.index(b"description:")
    path = tmp_path / "latin1.yaml"
    path.write_bytes(raw[:at] + "descripción: x\n".encode("latin-1") + raw[at:])
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: line {line}: not valid UTF-8 (byte 0xf3 at offset {at + 9}, column 10)")
    assert "\n" not in str(err.value)


def test_non_utf8_gate_config_names_the_file_and_line(tmp_path: Path):
    raw = DEFAULT_GATES.read_bytes()
    path = tmp_path / "gates.yaml"
    path.write_bytes(raw + b"# caf\xe9\n")
    line = raw.count(b"\n") + 1
    with pytest.raises(ConfigError) as err:
        load_gate_config(path)
    assert str(err.value).startswith(f"{path}: line {line}: not valid UTF-8 (byte 0xe9 at offset {len(raw) + 5}")


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nversion: '1'\nseed_corpus: [path, x\nbatches: {}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 4: not valid YAML") and "\n" not in message


def test_bad_type_and_unknown_key_name_their_yaml_lines(tmp_path: Path):
    path = write_recipe(tmp_path / "bad.yaml", **{"generator.sampling.temperature": "hot",
                                                   "generator.sampling.temprature": 0.5})
    text = path.read_text()
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    message = str(err.value)
    hot, typo = _line_of(text, "temperature: hot"), _line_of(text, "temprature:")
    assert hot != typo
    assert f"{path}: line {hot}: field generator.sampling.temperature: Input should be a valid number" in message
    assert f"{path}: line {typo}: field generator.sampling.temprature: unknown key (did you mean 'temperature'?)" in message


def test_invalid_gate_value_names_its_line(tmp_path: Path):
    data = yaml.safe_load(DEFAULT_GATES.read_text())
    data["dedup"]["threshold"] = 1.7
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    text = path.read_text()
    dedup = _line_of(text, "dedup:")
    line = next(i for i, ln in enumerate(text.splitlines(), start=1) if i > dedup and ln.strip().startswith("threshold:"))
    with pytest.raises(ConfigError) as err:
        load_gate_config(path)
    assert str(err.value).startswith(f"{path}: line {line}: field dedup.threshold: ")


@pytest.mark.parametrize("override, field", [({"name": "   "}, "name"), ({"seed_corpus.taxonomy_version": " "},
                                                                           "seed_corpus.taxonomy_version")])
def test_whitespace_only_recipe_string_is_invalid(tmp_path: Path, override, field):
    path = write_recipe(tmp_path / "blank.yaml", **override)
    key = field.rsplit(".", 1)[-1]
    line = _line_of(path.read_text(), f"{key}: ")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: line {line}: field {field}: must not be empty or whitespace-only")


def test_build_definitions_raises_the_clear_message(tmp_path: Path):
    """What `dagster dev` shows at the top of the code location error: the same one-line message."""
    from synqa_dagster.definitions import build_definitions

    path = write_recipe(tmp_path / "bad.yaml", **{"expansion_factor": 0})
    with pytest.raises(ConfigError) as err:
        build_definitions(str(path), str(DEFAULT_GATES))
    line = _line_of(path.read_text(), "expansion_factor:")
    assert str(err.value).startswith(f"{path}: line {line}: field expansion_factor: Input should be greater than")
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no pydantic trace chained under it


def test_cli_bad_recipe_exits_2_with_file_line_field_and_no_traceback(tmp_path: Path):
    path = write_recipe(tmp_path / "bad.yaml", **{"generator.sampling.temperature": "hot"})
    line = _line_of(path.read_text(), "temperature: hot")
    done = _cli("--recipe", str(path), "demo", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"synqa: error: {path}: line {line}: field generator.sampling.temperature: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_non_utf8_gate_config_exits_2_without_traceback(tmp_path: Path):
    path = tmp_path / "gates.yaml"
    data = b"version: '1'\ndedup:\n  threshold: 0.9 # \xff\n"
    path.write_bytes(data)
    offset = data.index(b"\xff")
    done = _cli("--gates", str(path), "demo", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"synqa: error: {path}: line 3: not valid UTF-8 (byte 0xff at offset {offset}," in done.stderr


# ------------------------------------------------------------------------------------ seeds, taxonomy, reference


def test_non_utf8_seed_file_names_line(tmp_path: Path):
    rows = _seed_rows(4)
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows]
    lines[2] = lines[2].replace(b"password", b"pass\xe9word")  # latin-1 é on line 3
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(SeedCorpusError) as err:
        load_seed_corpus(path, TAXONOMY, "v1")
    assert str(err.value).startswith(f"{path}: line 3: not valid UTF-8 (byte 0xe9")
    csv_path = tmp_path / "seeds.csv"
    csv_path.write_bytes(b"seed_id,label,text,locale\ns1,account.login_issue,caf\xe9 please help me,en-GB\n")
    with pytest.raises(SeedCorpusError, match=rf"{csv_path.name}: line 2: not valid UTF-8 \(byte 0xe9"):
        load_seed_corpus(csv_path, TAXONOMY, "v1")


def test_whitespace_only_seed_text_is_invalid(tmp_path: Path):
    rows = _seed_rows(6)
    rows[3]["text"] = " " * 20  # long enough for the length rule
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SeedCorpusError) as err:
        load_seed_corpus(path, TAXONOMY, "v1")
    assert f"{path}: line 4: field text: is blank (whitespace only)" in str(err.value)


def test_seed_csv_with_a_multiline_cell_reports_the_physical_line(tmp_path: Path):
    frame = pd.DataFrame(_seed_rows(6)).drop(columns=["reference_answer"])
    frame.loc[1, "text"] = "first line of a long question\nsecond line\nthird line"
    frame.loc[4, "label"] = "nope.not_a_label"  # record 5 (line 6 without the newlines)
    path = tmp_path / "seeds.csv"
    frame.to_csv(path, index=False)
    physical = 1 + 4 + 2 + 1  # header, four records before it, two extra lines inside record 2
    with pytest.raises(SeedCorpusError) as err:
        load_seed_corpus(path, TAXONOMY, "v1")
    assert f"{path}: line {physical}: field label: is not a label of taxonomy v1" in str(err.value)
    assert read_rows(path)["line"].tolist() == [2, 3, 6, 7, 8, 9]


def test_taxonomy_not_utf8_or_blank_label_names_line(tmp_path: Path):
    (tmp_path / "v1.yaml").write_bytes(b"version: v1\nintents:\n  - label: a.b\n    description: caf\xe9\n")
    with pytest.raises(TaxonomyError, match=r"v1\.yaml: line 4: not valid UTF-8"):
        load_taxonomy(tmp_path, "v1")
    (tmp_path / "v1.yaml").write_text("version: v1\nintents:\n  - label: a.b\n  - label: '   '\n")
    with pytest.raises(TaxonomyError, match=r"v1\.yaml: line 4: intents\[2\]: field label is missing, blank"):
        load_taxonomy(tmp_path, "v1")


def test_reference_not_utf8_or_whitespace_text_names_line(tmp_path: Path):
    path = tmp_path / "ref.jsonl"
    good = {"message_id": "m1", "text": "Where is my card?", "label": "account.login_issue", "locale": "en-GB"}
    path.write_bytes((json.dumps(good) + "\n").encode() + b'{"message_id": "m2", "text": "\xff"}\n')
    with pytest.raises(ReferenceCorpusError, match=rf"{path.name}: line 2: not valid UTF-8 \(byte 0xff"):
        load_reference_corpus(path, TAXONOMY, "v1")
    blank = {**good, "message_id": "m2", "text": "  \t "}
    path.write_text(json.dumps(good) + "\n" + json.dumps(blank) + "\n")
    with pytest.raises(ReferenceCorpusError) as err:
        load_reference_corpus(path, TAXONOMY, "v1")
    assert f"{path}: line 2: field text: is blank (whitespace only)" in str(err.value)


# --------------------------------------------------------------------------------------- eval sets and the audit


def test_eval_set_not_utf8_and_multiline_csv_lines(tmp_path: Path):
    path = tmp_path / "ev.jsonl"
    path.write_bytes(b'{"q": "fine"}\n{"q": "caf\xe9"}\n')
    with pytest.raises(EvalSetError, match=rf"{path.name}: line 2: not valid UTF-8 \(byte 0xe9"):
        load_eval_set(EvalSetSpec(name="ev", path=str(path), text_fields=["q"]))
    gz = tmp_path / "ev.jsonl.gz"
    data = b'{"q": "fine"}\n\n{"q": "\xff"}\n'
    gz.write_bytes(gzip.compress(data))
    offset = data.index(b"\xff")
    with pytest.raises(EvalSetError, match=rf"line 3: not valid UTF-8 \(byte 0xff at offset {offset} of the decompressed"):
        load_eval_set(EvalSetSpec(name="ev", path=str(gz), text_fields=["q"]))
    csv_path = tmp_path / "ev.csv"
    csv_path.write_text('id,q\n1,"a question\nover two lines"\n2,fine\n3,"  "\n')
    with pytest.raises(EvalSetError, match=rf"{csv_path.name}:line 5: fields \['q'\] are all empty"):
        load_eval_set(EvalSetSpec(name="ev", path=str(csv_path), id_field="id", text_fields=["q"]))


def test_non_utf8_audit_dataset_names_line(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    data = b'{"text": "a perfectly fine row"}\n{"text": "also fine"}\n{"text": "caf\xe9"}\n'
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(AuditInputError, match=rf"dataset: {path}: line 3: not valid UTF-8 \(byte 0xe9 at offset {offset},"):
        read_table(path, "dataset")


def test_whitespace_only_audit_text_names_line_and_field(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text('text,intent\n"a row with\ntwo lines",x\n"fine row",y\n" \t ",z\n')
    frame = read_table(path, "dataset")
    with pytest.raises(AuditInputError) as err:
        candidate_rows(frame, ColumnMap(), path, "audit-x")
    assert str(err.value) == f"{path}: line 5: field 'text' is empty or whitespace-only"


def test_cli_audit_non_utf8_dataset_exits_2_without_traceback(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_bytes(b'text\n"fine row"\n"na\xefve"\n')
    done = _cli("audit", str(path), "--out", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{path}: line 3: not valid UTF-8 (byte 0xef" in done.stderr
    assert not (tmp_path / "out").exists()


def test_review_csv_not_utf8_names_line(tmp_path: Path):
    from synqa_dagster.review.csv_io import import_csv
    from synqa_dagster.review.store import ReviewStore

    store = ReviewStore.from_url(f"sqlite:///{tmp_path / 'review.db'}")
    path = tmp_path / "review.csv"
    path.write_bytes(b"\xef\xbb\xbfbatch,row_id,sample_version,verdict,reason_category,reason_text,reviewer_id\n"
                     b'2026-11-20,r1,v1,reject,other,"two\nlines",alice\n2026-11-20,r2,v1,reject,other,caf\xe9,alice\n')
    result = import_csv(store, path, lambda rid: rid)
    assert result.recorded == 0
    assert len(result.errors) == 1 and result.errors[0].startswith(f"{path}, line 4: not valid UTF-8 (byte(s) 0xe9")
