"""Parquet storage: atomic writes, layout, and loading with pandas, pyarrow and Hugging Face datasets."""

import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from synqa_dagster.storage import TableStore


def _frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "text": [f"<script>alert({i})</script>" for i in range(n)]})


def test_write_read_layout_and_listing(tmp_path: Path):
    store = TableStore(str(tmp_path))
    uri = store.write("accepted_dataset", "2026-11-02", _frame())
    assert uri == str(tmp_path / "accepted_dataset" / "batch=2026-11-02" / "data.parquet")
    store.write("accepted_dataset", "2026-11-01", _frame(2))
    assert store.batches("accepted_dataset") == ["2026-11-01", "2026-11-02"]
    pd.testing.assert_frame_equal(store.read("accepted_dataset", "2026-11-02"), _frame())
    assert pq.read_table(uri).num_rows == 5
    with pytest.raises(FileNotFoundError, match="accepted_dataset.*2026-11-03"):
        store.read("accepted_dataset", "2026-11-03")


def test_outputs_load_with_hugging_face_datasets(tmp_path: Path):
    from datasets import load_dataset

    store = TableStore(str(tmp_path))
    uri = store.write("accepted_dataset", "2026-11-02", _frame(7))
    ds = load_dataset("parquet", data_files=uri, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 7 and ds[3]["text"] == "<script>alert(3)</script>"


def test_a_failed_write_leaves_the_previous_table_intact(tmp_path: Path, monkeypatch):
    store = TableStore(str(tmp_path))
    store.write("reject_log", "2026-11-02", _frame(3))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write("reject_log", "2026-11-02", _frame(9))
    monkeypatch.undo()
    assert len(store.read("reject_log", "2026-11-02")) == 3  # the old table is still whole
    leftovers = [p.name for p in (tmp_path / "reject_log" / "batch=2026-11-02").iterdir()]
    assert leftovers == ["data.parquet"]  # and the temporary file was cleaned up


def test_s3_uris_are_a_configuration_change():
    store = TableStore("s3://synqa-bucket/prod")
    assert not store.is_local
    assert store.uri("accepted_dataset", "2026-11-02") == "s3://synqa-bucket/prod/accepted_dataset/batch=2026-11-02/data.parquet"


def test_empty_batches_do_not_break_loading_many_batches(tmp_path: Path):
    from datasets import load_dataset

    store = TableStore(str(tmp_path))
    store.write("accepted_dataset", "2026-11-01", _frame(3))
    store.write("accepted_dataset", "2026-11-02", _frame(0))
    assert store.read("accepted_dataset", "2026-11-02").empty
    ds = load_dataset("parquet", data_files=str(tmp_path / "accepted_dataset" / "batch=*" / "data.parquet"), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 3


def test_delete_removes_a_batch_and_its_side_files(tmp_path: Path):
    store = TableStore(str(tmp_path))
    store.write("contamination_gate", "2026-11-02", _frame(2))
    store.write_bytes("contamination_gate", "2026-11-02", b"\x89PNG", "drift_chars.png")
    assert store.delete("contamination_gate", "2026-11-02") is True
    assert not store.exists("contamination_gate", "2026-11-02") and store.batches("contamination_gate") == []
    assert store.delete("contamination_gate", "2026-11-02") is False
