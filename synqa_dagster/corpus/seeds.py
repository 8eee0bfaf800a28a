"""Load and validate the seed corpus (JSONL, CSV or Parquet) against its taxonomy with great-expectations.

Input columns: ``seed_id``, ``label``, ``text``, ``locale``, optional ``reference_answer`` and
``taxonomy_version`` (defaults to the recipe's). Output: one row per seed with ``intent`` (the label carried to
the recipe's taxonomy version through explicit mappings), ``source_label`` / ``source_taxonomy_version`` (as
written), and ``line`` (where the row is in its file, for error messages and lineage).

Any problem raises :class:`SeedCorpusError` (an :class:`~synqa_dagster.errors.InputError`) naming the file, the
line and the field; nothing is returned from a bad corpus, so nothing downstream runs on it. Files must be UTF-8
(the error names the line and byte offset of the first bad byte); a CSV record's line is the physical line it
starts on (quoted cells may span lines); a text or id that is empty or whitespace-only is invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synqa_dagster.common import file_hash
from synqa_dagster.corpus.taxonomy import Taxonomy, TaxonomyError, label_mapping, load_taxonomy
from synqa_dagster.errors import InputError, csv_records, read_text_strict, split_lines

REQUIRED_COLUMNS = ("seed_id", "label", "text", "locale")
OPTIONAL_COLUMNS = ("reference_answer", "taxonomy_version")
LOCALE_PATTERN = r"^[a-z]{2,3}-[A-Z]{2}$"
MAX_ERRORS_SHOWN = 20


class SeedCorpusError(InputError):
    """The seed corpus is unreadable or fails validation; the message names file, line and field."""


@dataclass(frozen=True)
class SeedCorpus:
    """A validated seed corpus.

    Attributes:
        rows: one row per seed (see module docstring for columns), sorted by ``seed_id``.
        path: the file read.
        content_hash: SHA-256 of the file's bytes (first 16 hex digits).
        taxonomy: the taxonomy version the ``intent`` column is expressed in.
    """

    rows: pd.DataFrame
    path: str
    content_hash: str
    taxonomy: Taxonomy


def read_rows(path: str | Path) -> pd.DataFrame:
    """Read JSONL / CSV / Parquet into a DataFrame with a ``line`` column (1-based line in the file: for CSV the
    physical line a record starts on, for Parquet the 1-based row number). CSV cells are strings, an empty cell is
    missing (NaN), as ``pandas.read_csv(dtype=str, keep_default_na=False, na_values=[""])`` reads them.

    Raises:
        SeedCorpusError: the file is missing, not UTF-8, not valid JSONL / CSV / Parquet, or holds no rows; the
            message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise SeedCorpusError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        records = []
        text = read_text_strict(path, error=SeedCorpusError)
        for lineno, line in enumerate(split_lines(text.removeprefix("\ufeff")), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SeedCorpusError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise SeedCorpusError(f"{path}: line {lineno}: expected a JSON object")
            obj["line"] = lineno
            records.append(obj)
        frame = pd.DataFrame.from_records(records)
    elif suffix == ".csv":
        frame = read_csv_rows(path)
    elif suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise SeedCorpusError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        frame["line"] = range(1, len(frame) + 1)  # for Parquet, "line" is the 1-based row number
    else:
        raise SeedCorpusError(f"{path}: unsupported format {suffix!r} (use .jsonl, .csv or .parquet)")
    if frame.empty:
        raise SeedCorpusError(f"{path}: no rows")
    return frame


def read_csv_rows(path: str | Path, delimiter: str = ",") -> pd.DataFrame:
    """A CSV file (UTF-8, a header row) as string columns plus ``line``: the physical line each record starts on.

    An empty cell is missing (NaN); a record with fewer cells than the header is padded with missing cells; one
    with more raises :class:`SeedCorpusError` naming the line. A header cell without a name becomes ``Unnamed: i``
    (as pandas names it); a repeated column name is an error.
    """
    path = Path(path)
    records = csv_records(read_text_strict(path, error=SeedCorpusError), path, delimiter=delimiter, error=SeedCorpusError)
    if not records:
        raise SeedCorpusError(f"{path}: no rows (the file is empty; expected a header row)")
    _, header = records[0]
    header = [h if h.strip() else f"Unnamed: {i}" for i, h in enumerate(header)]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise SeedCorpusError(f"{path}: line 1: column(s) {repeated} appear more than once in the header")
    columns: list[list[str | None]] = [[] for _ in header]
    lines: list[int] = []
    for line, cells in records[1:]:
        if len(cells) > len(header):
            raise SeedCorpusError(f"{path}: line {line}: {len(cells)} cells, but the header has {len(header)} columns")
        cells = cells + [""] * (len(header) - len(cells))
        for column, cell in zip(columns, cells):
            column.append(cell if cell != "" else None)
        lines.append(line)
    frame = pd.DataFrame({name: pd.Series(values, dtype="str") for name, values in zip(header, columns)})
    frame["line"] = pd.Series(lines, dtype="int64")
    return frame


def blank_problems(frame: pd.DataFrame, path: str | Path, columns: dict[str, str]) -> list[str]:
    """One message per present but whitespace-only value of ``columns`` (frame column -> field name shown), as
    ``"<path>: line <n>: field <f>: is blank (whitespace only)"``. Missing values and empty strings are left to
    the expectation suite (null / length checks)."""
    out = []
    for column, name in columns.items():
        if column not in frame.columns:
            continue
        for value, line in zip(frame[column].tolist(), frame["line"].tolist()):
            if isinstance(value, str) and value and not value.strip():
                out.append(f"{path}: line {line}: field {name}: is blank (whitespace only)")
    return out


def _expectation_suite(taxonomy_labels: list[str], min_chars: int, max_chars: int):
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="seed_corpus")
    for column in REQUIRED_COLUMNS:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column="seed_id"))
    suite.add_expectation(
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=min_chars, max_value=max_chars)
    )
    suite.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=taxonomy_labels))
    suite.add_expectation(gx.expectations.ExpectColumnValuesToMatchRegex(column="locale", regex=LOCALE_PATTERN))
    return suite


_RULES = {
    "expect_column_values_to_not_be_null": "is missing (null)",
    "expect_column_values_to_be_unique": "is not unique",
    "expect_column_value_lengths_to_be_between": "length outside [{min_value}, {max_value}] characters",
    "expect_column_values_to_be_in_set": "is not a label of taxonomy {version}",
    "expect_column_values_to_match_regex": "does not look like a locale (e.g. en-GB)",
}


def validate_with_great_expectations(
    frame: pd.DataFrame, path: str | Path, taxonomy: Taxonomy, min_chars: int, max_chars: int
) -> list[str]:
    """Run the seed expectation suite; return one message per failing (line, field), empty when valid."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("seed_source")
    asset = source.add_dataframe_asset("seed_rows")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = _expectation_suite(sorted(taxonomy.labels), min_chars, max_chars)
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["line"]})
    problems: list[tuple[int, str]] = []
    for res in result.results:
        if res.success:
            continue
        cfg = res.expectation_config
        column = cfg.kwargs.get("column")
        template = _RULES.get(cfg.type, cfg.type)
        what = template.format(version=taxonomy.version, **{k: v for k, v in cfg.kwargs.items() if k != "column"})
        for item in res.result.get("unexpected_index_list") or []:
            line = int(item["line"]) if isinstance(item, dict) else int(frame.iloc[int(item)]["line"])
            value = frame.loc[frame["line"] == line, column].iloc[0] if column in frame else None
            shown = "" if value is None or (isinstance(value, float) and pd.isna(value)) else f" (value {str(value)[:60]!r})"
            problems.append((line, f"{path}: line {line}: field {column}: {what}{shown}"))
    return [msg for _, msg in sorted(problems)]


def validation_report(what: str, problems: list[str]) -> str:
    """One error message listing the first :data:`MAX_ERRORS_SHOWN` problems (each naming file, line, field)."""
    shown = problems[:MAX_ERRORS_SHOWN]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return f"{what} failed validation ({len(problems)} problem(s)):\n  " + "\n  ".join(shown) + more


def load_seed_corpus(
    path: str | Path,
    taxonomy_dir: str | Path,
    taxonomy_version: str,
    min_chars: int = 8,
    max_chars: int = 1000,
) -> SeedCorpus:
    """Read, validate and version the seed corpus; raise :class:`SeedCorpusError` on any problem."""
    path = Path(path)
    frame = read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SeedCorpusError(f"{path}: line 1: missing required field(s) {missing} (columns: {sorted(frame.columns)})")
    extra = sorted(set(frame.columns) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS) - {"line"})
    if extra:
        raise SeedCorpusError(f"{path}: unknown field(s) {extra}; allowed: {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    if "taxonomy_version" not in frame:
        frame["taxonomy_version"] = taxonomy_version
    frame["taxonomy_version"] = frame["taxonomy_version"].fillna(taxonomy_version).astype(str)
    if "reference_answer" not in frame:
        frame["reference_answer"] = None
    for column in ("seed_id", "label", "text", "locale"):
        frame[column] = frame[column].astype("string")

    problems: list[str] = []
    # Ids must be unique across the whole file, not just within one taxonomy version's rows.
    if frame["taxonomy_version"].nunique() > 1:  # (with one version, the suite below sees the whole file)
        dups = frame.loc[frame["seed_id"].notna() & frame["seed_id"].duplicated(keep=False)]
        problems += [f"{path}: line {r.line}: field seed_id: is not unique (value {str(r.seed_id)[:60]!r})" for r in dups.itertuples()]
    try:
        target = load_taxonomy(taxonomy_dir, taxonomy_version)
        rows_out = []
        for source_version, group in frame.groupby("taxonomy_version", sort=True):
            source_taxonomy = load_taxonomy(taxonomy_dir, str(source_version))
            found = validate_with_great_expectations(group.reset_index(drop=True), path, source_taxonomy, min_chars, max_chars)
            found += blank_problems(group, path, {"seed_id": "seed_id", "text": "text"})
            problems += found
            if not problems:
                mapping = label_mapping(taxonomy_dir, str(source_version), taxonomy_version)
                group = group.assign(intent=group["label"].map(mapping))
                rows_out.append(group)
    except TaxonomyError as exc:
        raise SeedCorpusError(f"{path}: {exc}") from None
    if problems:
        problems = sorted(dict.fromkeys(problems), key=lambda m: int(m.split(": line ")[1].split(":")[0]))
        raise SeedCorpusError(validation_report("seed corpus", problems))

    rows = pd.concat(rows_out, ignore_index=True)
    rows = rows.rename(columns={"label": "source_label", "taxonomy_version": "source_taxonomy_version"})
    rows["taxonomy_version"] = taxonomy_version
    rows = rows[
        ["seed_id", "intent", "taxonomy_version", "source_label", "source_taxonomy_version", "locale", "text", "reference_answer", "line"]
    ]
    rows = rows.sort_values("seed_id", kind="stable").reset_index(drop=True)
    return SeedCorpus(rows=rows, path=str(path), content_hash=file_hash(path), taxonomy=target)
