"""Parquet tables per asset and batch under one base path: a local folder or ``s3://bucket/prefix``.

Layout: ``<base>/<asset>/batch=<partition>/data.parquet`` (``<base>/<asset>/data.parquet`` when unpartitioned),
which loads with pandas/pyarrow and with Hugging Face ``datasets.load_dataset("parquet", data_files=...)``.

Local writes go to a temporary file in the same folder and are renamed into place, so a crash never leaves a
half-written table where a reader would find it. On S3 a single-object PUT is already atomic.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PARTITION_PREFIX = "batch="
FILE_NAME = "data.parquet"


@dataclass(frozen=True)
class TableStore:
    """Reads and writes Parquet tables by (asset name, batch).

    Attributes:
        base: local path or ``s3://bucket/prefix`` (S3 credentials come from the usual AWS environment).
    """

    base: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.base or self.base.startswith("file://")

    def _fs_and_root(self) -> tuple[pafs.FileSystem, str]:
        if self.is_local:
            root = self.base[len("file://"):] if self.base.startswith("file://") else self.base
            return pafs.LocalFileSystem(), os.path.abspath(root)
        fs, root = pafs.FileSystem.from_uri(self.base)
        return fs, root.rstrip("/")

    def uri(self, asset: str, batch: str | None = None, name: str = FILE_NAME) -> str:
        """Where the table of ``asset`` for ``batch`` lives (a path for local stores, a URI otherwise)."""
        parts = [asset] + ([f"{PARTITION_PREFIX}{batch}"] if batch is not None else []) + [name]
        if self.is_local:
            return os.path.join(self._fs_and_root()[1], *parts)
        return self.base.rstrip("/") + "/" + "/".join(parts)

    def _path(self, asset: str, batch: str | None, name: str = FILE_NAME) -> str:
        fs, root = self._fs_and_root()
        parts = [asset] + ([f"{PARTITION_PREFIX}{batch}"] if batch is not None else []) + [name]
        return root + "/" + "/".join(parts)

    def write(self, asset: str, batch: str | None, frame: pd.DataFrame) -> str:
        """Write ``frame`` atomically and return its URI."""
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        return self.write_bytes(asset, batch, _parquet_bytes(table), FILE_NAME)

    def write_bytes(self, asset: str, batch: str | None, payload: bytes, name: str) -> str:
        """Write any file (JSON, PNG, markdown...) next to the asset's table, atomically."""
        fs, _ = self._fs_and_root()
        final = self._path(asset, batch, name)
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if self.is_local:
            tmp = f"{final}.tmp-{uuid.uuid4().hex}"
            try:
                with fs.open_output_stream(tmp) as out:
                    out.write(payload)
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            with fs.open_output_stream(final) as out:
                out.write(payload)
        return self.uri(asset, batch, name)

    def delete(self, asset: str, batch: str | None) -> bool:
        """Remove the table of ``asset`` for ``batch`` (and files beside it); returns whether one existed."""
        fs, _ = self._fs_and_root()
        folder = self._path(asset, batch).rsplit("/", 1)[0]
        if fs.get_file_info(folder).type == pafs.FileType.NotFound:
            return False
        fs.delete_dir(folder)
        return True

    def read(self, asset: str, batch: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Read the table of ``asset`` for ``batch``; raises FileNotFoundError naming the URI if absent."""
        fs, _ = self._fs_and_root()
        path = self._path(asset, batch)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no table for asset {asset!r} batch {batch!r} at {self.uri(asset, batch)}")
        return pq.read_table(path, filesystem=fs, columns=columns).to_pandas()

    def read_bytes(self, asset: str, batch: str | None, name: str) -> bytes:
        fs, _ = self._fs_and_root()
        with fs.open_input_stream(self._path(asset, batch, name)) as src:
            return src.read()

    def exists(self, asset: str, batch: str | None = None) -> bool:
        fs, _ = self._fs_and_root()
        return fs.get_file_info(self._path(asset, batch)).type == pafs.FileType.File

    def batches(self, asset: str) -> list[str]:
        """Batches that have a table for ``asset``, sorted."""
        fs, root = self._fs_and_root()
        info = fs.get_file_info(pafs.FileSelector(f"{root}/{asset}", allow_not_found=True))
        keys = [i.base_name[len(PARTITION_PREFIX):] for i in info if i.type == pafs.FileType.Directory and i.base_name.startswith(PARTITION_PREFIX)]
        return sorted(k for k in keys if self.exists(asset, k))


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    if table.num_rows == 0:
        # No row groups at all: a zero-row row group makes readers of many batches at once (HF datasets) fail.
        with pq.ParquetWriter(sink, table.schema, compression="zstd"):
            pass
    else:
        pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
