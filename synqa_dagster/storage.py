"""Parquet tables per asset and batch, and handover folders, under one base: a local folder or ``s3://bucket/prefix``.

Layout: ``<base>/<asset>/batch=<partition>/data.parquet`` (``<base>/<asset>/data.parquet`` when unpartitioned),
which loads with pandas/pyarrow and with Hugging Face ``datasets.load_dataset("parquet", data_files=...)``.

Local writes go to a temporary file in the same folder and are renamed into place, so a crash never leaves a
half-written table where a reader would find it. On S3 a single-object PUT is already atomic.

S3 goes through a boto3 S3 client and nothing else: :class:`S3Objects` (one bucket + key prefix) is the small
interface the table store, the handover writer, the roll-up and ``synqa verify`` use. Inside Dagster the client
comes from dagster-aws's ``S3Resource`` (``synqa_dagster.resources.storage``); outside it (the CLI, tests)
:func:`default_s3_client` builds one from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` / profiles). This module is Dagster-free.

Handover folders (:class:`HandoverFolders`): a local base keeps the old behaviour (the folder is built in a
temporary sibling and swapped in with renames). On S3, :meth:`S3Objects.publish_folder` stages every file under
``<base>/.staging/<run id>/<name>/``, then commits: it withdraws the old manifest (from here the folder reads as
absent, never as a mix), server-side copies every other file into ``<base>/<name>/``, deletes the keys of the old
pack that the new one does not have, and PUTs the manifest last — the one write that makes the new pack visible.
A reader treats a folder without its manifest as absent (:meth:`HandoverFolders.complete`). See docs/storage.md.

Run transactions: a :class:`TableStore` or :class:`HandoverFolders` made with a ``run_id`` never touches what is
published. Its writes and withdrawals are staged under ``<base>/.runs/<run id>/`` (a withdrawal is a folder
holding only ``.withdrawn``), and its reads see the run's own staged state over the published one. Nothing is
visible to anyone else until :meth:`TableStore.commit_run` / :meth:`HandoverFolders.commit_run` move the staged
units in (each table folder or handover folder is swapped in whole; the replaced one goes to the run's trash
first, so a crash mid-commit can always be rolled forward); :meth:`TableStore.discard_run` throws a failed run's
staging away. :mod:`synqa_dagster.transaction` orders the two stores' commits behind a commit marker.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PARTITION_PREFIX = "batch="
FILE_NAME = "data.parquet"
STAGING_DIR = ".staging"
RUNS_DIR = ".runs"  # per-run transactions: <base>/.runs/<run id>/...
WITHDRAWN = ".withdrawn"  # a staged unit holding only this file withdraws the published one at commit
TRASH_DIR = ".trash"  # inside a run's staging: the published units it replaced, removed once the commit is done
S3_SCHEME = "s3://"


def is_s3(location: str | os.PathLike[str] | None) -> bool:
    """True for an ``s3://bucket[/prefix]`` location."""
    return isinstance(location, str) and location.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``; raises ValueError without a bucket."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} names no bucket")
    return bucket, prefix.strip("/")


def default_s3_client() -> Any:
    """A boto3 S3 client from the standard AWS environment (``AWS_ENDPOINT_URL`` included, boto3 >= 1.28)."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def safe_relative_name(name: str) -> bool:
    """True for a relative POSIX name that stays inside its folder (no absolute path, ``.``, ``..``, empty parts)."""
    return (bool(name) and "\\" not in name and "\x00" not in name and not PurePosixPath(name).is_absolute()
            and all(part not in ("", ".", "..") for part in name.split("/")))


class S3Objects:
    """The objects under one key prefix of one bucket, through a boto3 S3 client (the only boto3 user).

    Keys are given relative to the prefix (``"accepted_dataset/batch=B/data.parquet"``).
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    @classmethod
    def from_uri(cls, uri: str, client: Any = None) -> "S3Objects":
        bucket, prefix = split_s3(uri)
        return cls(client if client is not None else default_s3_client(), bucket, prefix)

    def child(self, sub: str) -> "S3Objects":
        return S3Objects(self.client, self.bucket, self.key(sub))

    def key(self, rel: str = "") -> str:
        rel = rel.strip("/")
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def uri(self, rel: str = "") -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key(rel)}".rstrip("/")

    # -- objects ------------------------------------------------------------------------------------------------
    def put(self, rel: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data)
        return self.uri(rel)

    def get(self, rel: str) -> bytes:
        """The object's bytes; raises FileNotFoundError naming the URI when it does not exist."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"no object at {self.uri(rel)}") from None

    def etag(self, rel: str) -> str | None:
        """The object's ETag, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(rel))["ETag"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, rel: str) -> bool:
        return self.etag(rel) is not None

    def copy(self, src: str, dst: str) -> None:
        """Server-side copy of ``src`` to ``dst`` (both relative to this prefix)."""
        self.client.copy_object(Bucket=self.bucket, Key=self.key(dst), CopySource={"Bucket": self.bucket, "Key": self.key(src)})

    def list(self, rel: str = "") -> list[str]:
        """Every key under the folder ``rel`` (recursively), relative to ``rel``, sorted."""
        base = self.key(rel)
        prefix = f"{base}/" if base else ""
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out += [obj["Key"][len(prefix):] for obj in page.get("Contents", [])]
        return sorted(out)

    def list_dirs(self, rel: str = "") -> list[str]:
        """Names of the immediate sub-folders of ``rel`` (S3 common prefixes), sorted."""
        base = self.key(rel)
        prefix = f"{base}/" if base else ""
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            out += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(out)

    def delete(self, rels: Sequence[str]) -> None:
        """Delete keys (relative to this prefix), 1000 per request; missing keys are fine."""
        keys = [self.key(r) for r in rels]
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            result = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            if result.get("Errors"):
                first = result["Errors"][0]
                raise OSError(f"could not delete s3://{self.bucket}/{first.get('Key')}: {first.get('Message')}")

    def delete_folder(self, rel: str) -> bool:
        """Delete every key under the folder ``rel``; returns whether there was one."""
        keys = self.list(rel)
        self.delete([f"{rel.strip('/')}/{k}" for k in keys])
        return bool(keys)

    # -- folders ------------------------------------------------------------------------------------------------
    def download_folder(self, rel: str, dest: Path) -> list[str]:
        """Copy every object under ``rel`` into the local folder ``dest``; returns the keys it refused to write
        (names that would leave ``dest`` or clash with a folder), which the caller reports."""
        refused = []
        for name in self.list(rel):
            target = dest / name
            if not safe_relative_name(name) or target.is_dir():
                refused.append(name)
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.get(f"{rel}/{name}"))
            except (NotADirectoryError, FileExistsError, IsADirectoryError):  # "a" and "a/b" both exist as keys
                refused.append(name)
        return refused

    def publish_folder(self, local: Path, name: str, *, commit_last: str, run_id: str | None = None,
                       on_staged: Callable[[str], None] | None = None) -> str:
        """Publish the local folder ``local`` as ``<prefix>/<name>/``, all or nothing for readers that require
        ``commit_last`` (the manifest).

        1. stage: PUT every file under ``<prefix>/.staging/<run id>/<name>/`` (a crash here leaves the published
           folder untouched; ``on_staged(file)`` is called after each PUT, for tests);
        2. commit: delete the old ``commit_last`` (the folder now reads as absent), server-side copy every other
           staged file in, delete keys of the old folder that the new one lacks, then copy ``commit_last`` last;
        3. clean up the staging prefix (and the leftovers of earlier, crashed publishes of ``name``).

        Returns the folder's URI.
        """
        stage = f"{STAGING_DIR}/{run_id or uuid.uuid4().hex}/{name}"
        self.stage_folder(local, stage, commit_last=commit_last, on_staged=on_staged)
        self.commit_staged_folder(stage, name, commit_last=commit_last)
        for leftover in self.list_dirs(STAGING_DIR):
            self._forget(f"{STAGING_DIR}/{leftover}/{name}")
        return self.uri(name)

    def stage_folder(self, local: Path, stage: str, *, commit_last: str,
                     on_staged: Callable[[str], None] | None = None) -> list[str]:
        """PUT every file of the local folder ``local`` under ``stage`` (readers never look there); returns the
        files. A failure removes what was staged and re-raises."""
        local = Path(local)
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file() and not p.is_symlink())
        if commit_last not in files:
            raise FileNotFoundError(f"{commit_last} is not in {local}: nothing to commit")
        self._forget(stage)
        try:
            for rel in files:
                self.put(f"{stage}/{rel}", (local / rel).read_bytes())
                if on_staged is not None:
                    on_staged(rel)
        except BaseException:
            self._forget(stage)
            raise
        return files

    def commit_staged_folder(self, stage: str, name: str, *, commit_last: str) -> None:
        """Make the staged folder ``stage`` the folder ``name``: withdraw the old ``commit_last``, copy every other
        file in, delete the old folder's extra keys, copy ``commit_last`` last, then delete the staging.
        Idempotent: re-running it after a crash finishes the same commit."""
        files = self.list(stage)
        if commit_last not in files:
            if not files:
                return  # already committed (the staging was removed last)
            raise FileNotFoundError(f"{commit_last} is not staged under {self.uri(stage)}: nothing to commit")
        self.delete([f"{name}/{commit_last}"])
        for rel in files:
            if rel != commit_last:
                self.copy(f"{stage}/{rel}", f"{name}/{rel}")
        stale = sorted(set(self.list(name)) - set(files))
        self.delete([f"{name}/{rel}" for rel in stale])
        self.copy(f"{stage}/{commit_last}", f"{name}/{commit_last}")
        self._forget(stage)

    def _forget(self, stage: str) -> None:
        try:
            self.delete_folder(stage)
        except Exception:  # best effort: staged keys are invisible to readers
            pass


@dataclass(frozen=True)
class TableStore:
    """Reads and writes Parquet tables by (asset name, batch).

    Attributes:
        base: local path or ``s3://bucket/prefix``.
        client: the boto3 S3 client for an ``s3://`` base (dagster-aws's ``S3Resource.get_client()``); None means
            :func:`default_s3_client` (the standard AWS environment).
        run_id: when set, the store is a run's transaction view: writes and deletes are staged under
            ``<base>/.runs/<run_id>/`` and reads see them over the published tables (see the module docstring).
    """

    base: str
    client: Any = field(default=None, compare=False, repr=False)
    run_id: str | None = None

    @property
    def is_local(self) -> bool:
        return "://" not in self.base or self.base.startswith("file://")

    def _root(self) -> str:
        root = self.base[len("file://"):] if self.base.startswith("file://") else self.base
        return os.path.abspath(root)

    def _fs_and_root(self) -> tuple[pafs.FileSystem, str]:
        if not self.is_local:
            raise ValueError(f"{self.base} is not a local store")
        return pafs.LocalFileSystem(), self._root()

    def objects(self) -> S3Objects:
        """The S3 objects of this store (``s3://`` bases only)."""
        if not is_s3(self.base):
            raise ValueError(f"unsupported storage base {self.base!r}: use a local folder or s3://bucket/prefix")
        return S3Objects.from_uri(self.base, self.client)

    # -- run transactions -----------------------------------------------------------------------------------------
    def for_run(self, run_id: str | None) -> "TableStore":
        """This store as run ``run_id`` sees it (None: the published tables only)."""
        return TableStore(self.base, client=self.client, run_id=run_id)

    def published(self) -> "TableStore":
        """The published tables (no run's staging)."""
        return self.for_run(None) if self.run_id is not None else self

    def _staging_base(self, run_id: str) -> str:
        if self.is_local:
            return os.path.join(self._root(), RUNS_DIR, run_id)
        return f"{self.base.rstrip('/')}/{RUNS_DIR}/{run_id}"

    def _staging(self) -> "TableStore":
        assert self.run_id is not None
        return TableStore(self._staging_base(self.run_id), client=self.client)

    def _withdrawn(self, asset: str, batch: str | None) -> bool:
        return self.run_id is not None and self._staging()._file_exists(asset, batch, WITHDRAWN)

    def _file_exists(self, asset: str, batch: str | None, name: str) -> bool:
        if not self.is_local:
            return self.objects().exists(self._rel(asset, batch, name))
        return os.path.isfile(self._path(asset, batch, name))

    # -- tables -------------------------------------------------------------------------------------------------
    @staticmethod
    def _rel(asset: str, batch: str | None, name: str = FILE_NAME) -> str:
        return "/".join([asset] + ([f"{PARTITION_PREFIX}{batch}"] if batch is not None else []) + [name])

    def uri(self, asset: str, batch: str | None = None, name: str = FILE_NAME) -> str:
        """Where the table of ``asset`` for ``batch`` lives once published (a path for local stores, a URI
        otherwise): a run's staged table is published there when the run commits."""
        rel = self._rel(asset, batch, name)
        if self.is_local:
            return os.path.join(self._root(), *rel.split("/"))
        return self.base.rstrip("/") + "/" + rel

    def _path(self, asset: str, batch: str | None, name: str = FILE_NAME) -> str:
        return self._root() + "/" + self._rel(asset, batch, name)

    def write(self, asset: str, batch: str | None, frame: pd.DataFrame) -> str:
        """Write ``frame`` atomically (staged, for a run) and return its published URI."""
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        return self.write_bytes(asset, batch, _parquet_bytes(table), FILE_NAME)

    def write_bytes(self, asset: str, batch: str | None, payload: bytes, name: str) -> str:
        """Write any file (JSON, PNG, markdown...) next to the asset's table, atomically (staged, for a run)."""
        if self.run_id is not None:
            staging = self._staging()
            staging._remove_file(asset, batch, WITHDRAWN)
            staging.write_bytes(asset, batch, payload, name)
            return self.uri(asset, batch, name)
        if not self.is_local:
            self.objects().put(self._rel(asset, batch, name), payload)
            return self.uri(asset, batch, name)
        fs, _ = self._fs_and_root()
        final = self._path(asset, batch, name)
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open_output_stream(tmp) as out:
                out.write(payload)
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return self.uri(asset, batch, name)

    def _remove_file(self, asset: str, batch: str | None, name: str) -> None:
        if not self.is_local:
            self.objects().delete([self._rel(asset, batch, name)])
        else:
            Path(self._path(asset, batch, name)).unlink(missing_ok=True)

    def delete(self, asset: str, batch: str | None) -> bool:
        """Remove the table of ``asset`` for ``batch`` (and files beside it); returns whether one existed.
        For a run the removal is staged (a withdrawal applied at commit); the published table stays until then."""
        if self.run_id is not None:
            existed = self.exists(asset, batch)
            staging = self._staging()
            staging.delete(asset, batch)
            staging.write_bytes(asset, batch, b"", WITHDRAWN)
            return existed
        if not self.is_local:
            return self.objects().delete_folder(self._rel(asset, batch).rsplit("/", 1)[0])
        fs, _ = self._fs_and_root()
        folder = self._path(asset, batch).rsplit("/", 1)[0]
        if fs.get_file_info(folder).type == pafs.FileType.NotFound:
            return False
        fs.delete_dir(folder)
        return True

    def read(self, asset: str, batch: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Read the table of ``asset`` for ``batch``; raises FileNotFoundError naming the URI if absent."""
        missing = FileNotFoundError(f"no table for asset {asset!r} batch {batch!r} at {self.uri(asset, batch)}")
        if self.run_id is not None:
            if self._withdrawn(asset, batch):
                raise missing
            staging = self._staging()
            if staging.exists(asset, batch):
                return staging.read(asset, batch, columns)
            try:
                return self.published().read(asset, batch, columns)
            except FileNotFoundError:
                raise missing from None
        if not self.is_local:
            try:
                payload = self.objects().get(self._rel(asset, batch))
            except FileNotFoundError:
                raise missing from None
            return pq.read_table(io.BytesIO(payload), columns=columns).to_pandas()
        fs, _ = self._fs_and_root()
        path = self._path(asset, batch)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise missing
        return pq.read_table(path, filesystem=fs, columns=columns).to_pandas()

    def read_bytes(self, asset: str, batch: str | None, name: str) -> bytes:
        """A file beside the asset's table (the run's staged copy first, for a run)."""
        if self.run_id is not None:
            if self._withdrawn(asset, batch):
                raise FileNotFoundError(f"{self.uri(asset, batch, name)} was withdrawn by run {self.run_id}")
            staging = self._staging()
            if staging._file_exists(asset, batch, name):
                return staging.read_bytes(asset, batch, name)
            return self.published().read_bytes(asset, batch, name)
        if not self.is_local:
            return self.objects().get(self._rel(asset, batch, name))
        fs, _ = self._fs_and_root()
        with fs.open_input_stream(self._path(asset, batch, name)) as src:
            return src.read()

    def exists(self, asset: str, batch: str | None = None) -> bool:
        """Whether the table of ``asset`` for ``batch`` exists (as this run sees it, for a run)."""
        if self.run_id is not None:
            if self._withdrawn(asset, batch):
                return False
            return self._staging().exists(asset, batch) or self.published().exists(asset, batch)
        return self._file_exists(asset, batch, FILE_NAME)

    def batches(self, asset: str) -> list[str]:
        """Batches that have a table for ``asset``, sorted (as this run sees them, for a run)."""
        if self.run_id is not None:
            staging = self._staging()
            keys = set(self.published().batches(asset)) | set(staging.batches(asset))
            return sorted(k for k in keys if not self._withdrawn(asset, k))
        if not self.is_local:
            keys = self.objects().list(asset)
            return sorted(k.split("/", 1)[0][len(PARTITION_PREFIX):] for k in keys
                          if k.startswith(PARTITION_PREFIX) and k.count("/") == 1 and k.endswith(f"/{FILE_NAME}"))
        fs, root = self._fs_and_root()
        info = fs.get_file_info(pafs.FileSelector(f"{root}/{asset}", allow_not_found=True))
        keys = [i.base_name[len(PARTITION_PREFIX):] for i in info if i.type == pafs.FileType.Directory and i.base_name.startswith(PARTITION_PREFIX)]
        return sorted(k for k in keys if self.exists(asset, k))

    # -- commit / discard ---------------------------------------------------------------------------------------
    def staged_runs(self) -> list[str]:
        """Run ids with staged (uncommitted, or half-committed) work under this base."""
        if not self.is_local:
            return self.objects().list_dirs(RUNS_DIR)
        root = Path(self._root()) / RUNS_DIR
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def staged_units(self, run_id: str) -> list[tuple[str, str | None]]:
        """The (asset, batch) units run ``run_id`` staged (batch None for an unpartitioned asset)."""
        units: set[tuple[str, str | None]] = set()
        if not self.is_local:
            for key in self.objects().list(f"{RUNS_DIR}/{run_id}"):
                parts = key.split("/")
                if parts[0].startswith("."):
                    continue
                if len(parts) >= 3 and parts[1].startswith(PARTITION_PREFIX):
                    units.add((parts[0], parts[1][len(PARTITION_PREFIX):]))
                elif len(parts) == 2:
                    units.add((parts[0], None))
            return sorted(units, key=lambda u: (u[0], u[1] or ""))
        root = Path(self._staging_base(run_id))
        if not root.is_dir():
            return []
        for asset_dir in sorted(root.iterdir()):
            if not asset_dir.is_dir() or asset_dir.name.startswith("."):
                continue
            if any(p.is_file() for p in asset_dir.iterdir()):
                units.add((asset_dir.name, None))
            for sub in asset_dir.iterdir():
                if sub.is_dir() and sub.name.startswith(PARTITION_PREFIX):
                    units.add((asset_dir.name, sub.name[len(PARTITION_PREFIX):]))
        return sorted(units, key=lambda u: (u[0], u[1] or ""))

    def commit_run(self, run_id: str, *, cleanup: bool = True) -> list[tuple[str, str | None, str]]:
        """Publish everything run ``run_id`` staged: each staged table folder replaces the published one whole
        (extra files included), a withdrawal removes it, a staged side file alone is copied in. Idempotent: after
        a crash, calling it again finishes the same commit. Returns ``(asset, batch, "replaced"|"withdrawn"|
        "files")`` per unit."""
        done = []
        staging = TableStore(self._staging_base(run_id), client=self.client)
        for asset, batch in self.staged_units(run_id):
            done.append((asset, batch, self._commit_unit(staging, run_id, asset, batch)))
        if cleanup:
            self.discard_run(run_id)
        return done

    def _unit_rel(self, asset: str, batch: str | None) -> str:
        return self._rel(asset, batch).rsplit("/", 1)[0]

    def _commit_unit(self, staging: "TableStore", run_id: str, asset: str, batch: str | None) -> str:
        unit = self._unit_rel(asset, batch)
        if not self.is_local:
            objects, prefix = self.objects(), f"{RUNS_DIR}/{run_id}/{unit}"
            files = [f for f in objects.list(prefix) if batch is not None or "/" not in f]
            if WITHDRAWN in files:
                objects.delete_folder(unit) if batch is not None else objects.delete([f"{unit}/{f}" for f in objects.list(unit) if "/" not in f])
                objects.delete([f"{prefix}/{WITHDRAWN}"])
                return "withdrawn"
            for f in files:
                objects.copy(f"{prefix}/{f}", f"{unit}/{f}")
            if FILE_NAME in files:  # a whole table folder: drop the old one's files the new one lacks
                old = [f for f in objects.list(unit) if (batch is not None or "/" not in f) and f not in files]
                objects.delete([f"{unit}/{f}" for f in old])
            objects.delete([f"{prefix}/{f}" for f in files])
            return "replaced" if FILE_NAME in files else "files"
        staged = Path(staging._root()) / unit
        final = Path(self._root()) / unit
        trash = Path(staging._root()) / TRASH_DIR / unit
        files = sorted(p for p in staged.iterdir() if p.is_file()) if staged.is_dir() else []
        names = {p.name for p in files}
        if WITHDRAWN in names:
            _remove_unit(final, trash, partitioned=batch is not None)
            return "withdrawn"
        if FILE_NAME in names and batch is not None:
            trash.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(trash, ignore_errors=True)
                os.replace(final, trash)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
            return "replaced"
        final.mkdir(parents=True, exist_ok=True)
        if FILE_NAME in names:  # unpartitioned: the folder also holds batch=... folders of nothing; swap files
            for old in final.iterdir():
                if old.is_file() and old.name not in names:
                    old.unlink()
        for p in files:
            os.replace(p, final / p.name)
        return "replaced" if FILE_NAME in names else "files"

    def discard_run(self, run_id: str) -> bool:
        """Throw away run ``run_id``'s staging (its trash included); returns whether there was any."""
        if not self.is_local:
            return self.objects().delete_folder(f"{RUNS_DIR}/{run_id}")
        root = Path(self._staging_base(run_id))
        if not root.exists():
            return False
        shutil.rmtree(root, ignore_errors=True)
        return True


def _remove_unit(final: Path, trash: Path, *, partitioned: bool) -> None:
    """Withdraw a published table unit: a partition folder moves to the trash; an unpartitioned one loses its files."""
    if not final.exists():
        return
    if partitioned:
        trash.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
    else:
        for old in final.iterdir():
            if old.is_file():
                old.unlink()


class HandoverFolders:
    """The per-batch handover folders (``batch=<key>/``) and the roll-up files under one base, local or S3.

    A folder counts only once its ``commit_file`` (the signed manifest) is in: :meth:`complete` and
    :meth:`names` ignore a folder without it.

    Attributes:
        location: a local folder path or ``s3://bucket/prefix``.
        commit_file: the file written last, whose presence makes a folder visible (``manifest.dsse.json``).
        run_id: when set, a run's transaction view: :meth:`publish`, :meth:`delete` and the roll-up writes are
            staged under ``<base>/.runs/<run_id>/`` and reads see them first; :meth:`commit_run` publishes them.
    """

    ROOT_FILES = "_root"  # a run's staged roll-up files (README.md, batches.json, rollup.json)

    def __init__(self, location: str | os.PathLike[str], commit_file: str, client: Any = None,
                 run_id: str | None = None) -> None:
        self.commit_file = commit_file
        self.run_id = run_id
        self._client = client
        if is_s3(location):
            self.objects: S3Objects | None = S3Objects.from_uri(str(location), client)
            self.location = self.objects.uri()
            self.path: Path | None = None
        else:
            self.objects = None
            self.path = Path(location).resolve()
            self.location = str(self.path)

    @property
    def is_local(self) -> bool:
        return self.objects is None

    def for_run(self, run_id: str | None) -> "HandoverFolders":
        """These folders as run ``run_id`` sees them (None: the published folders only)."""
        clone = HandoverFolders.__new__(HandoverFolders)
        clone.__dict__.update(self.__dict__)
        clone.run_id = run_id
        return clone

    def published(self) -> "HandoverFolders":
        return self.for_run(None) if self.run_id is not None else self

    def uri(self, name: str = "") -> str:
        """Where folder ``name`` (or, empty, the base) lives once published: a local path or an ``s3://`` URI."""
        if self.objects is not None:
            return self.objects.uri(name)
        return str(self.path / name) if name else str(self.path)

    # -- staging of a run -----------------------------------------------------------------------------------------
    def _stage_rel(self, run_id: str, name: str = "") -> str:
        return f"{RUNS_DIR}/{run_id}/{name}".rstrip("/")

    def _staged_state(self, name: str) -> str | None:
        """For a run: "withdrawn", "complete" (a staged folder with its commit file) or None (nothing staged)."""
        if self.run_id is None:
            return None
        rel = self._stage_rel(self.run_id, name)
        if self.path is not None:
            folder = self.path / rel
            if (folder / WITHDRAWN).is_file():
                return "withdrawn"
            return "complete" if (folder / self.commit_file).is_file() else None
        if self.objects.exists(f"{rel}/{WITHDRAWN}"):
            return "withdrawn"
        return "complete" if self.objects.exists(f"{rel}/{self.commit_file}") else None

    def staged_runs(self) -> list[str]:
        """Run ids with staged handover work under this base."""
        if self.path is not None:
            root = self.path / RUNS_DIR
            return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return self.objects.list_dirs(RUNS_DIR)

    def work_dir(self, name: str) -> Path:
        """A fresh local folder to build ``name`` in (a sibling of the final folder when local)."""
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=self.path))
        return Path(tempfile.mkdtemp(prefix=f"synqa-{name}.", suffix=".tmp"))

    def publish(self, work: Path, name: str, on_staged: Callable[[str], None] | None = None) -> str:
        """Make the built folder ``work`` the folder ``name`` (local: two renames; S3: stage, then commit with
        the manifest last); for a run, stage it for the run's commit instead. ``work`` is consumed. Returns the
        folder's (published) location."""
        if self.run_id is not None:
            rel = self._stage_rel(self.run_id, name)
            if self.path is not None:
                staged = self.path / rel
                staged.parent.mkdir(parents=True, exist_ok=True)
                if staged.exists():
                    shutil.rmtree(staged)
                os.replace(work, staged)
                return str(self.path / name)
            try:
                self.objects.stage_folder(work, rel, commit_last=self.commit_file, on_staged=on_staged)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return self.objects.uri(name)
        if self.path is not None:
            _swap_in(work, self.path / name)
            return str(self.path / name)
        try:
            return self.objects.publish_folder(work, name, commit_last=self.commit_file, on_staged=on_staged)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def complete(self, name: str) -> bool:
        """True when folder ``name`` exists with its commit file (a folder without it is treated as absent)."""
        state = self._staged_state(name)
        if state is not None:
            return state == "complete"
        if self.path is not None:
            return (self.path / name / self.commit_file).is_file()
        return self.objects.exists(f"{name}/{self.commit_file}")

    def names(self, prefix: str = PARTITION_PREFIX) -> list[str]:
        """The complete folders whose name starts with ``prefix``, sorted (as this run sees them, for a run)."""
        if self.path is not None:
            found = {p.name for p in self.path.glob(f"{prefix}*") if p.is_dir()} if self.path.is_dir() else set()
            if self.run_id is not None:
                staged = self.path / self._stage_rel(self.run_id)
                found |= {p.name for p in staged.glob(f"{prefix}*") if p.is_dir()} if staged.is_dir() else set()
        else:
            found = {d for d in self.objects.list_dirs() if d.startswith(prefix)}
            if self.run_id is not None:
                found |= {d for d in self.objects.list_dirs(self._stage_rel(self.run_id)) if d.startswith(prefix)}
        return sorted(n for n in found if self.complete(n))

    def read_bytes(self, name: str, file: str) -> bytes:
        """A file of folder ``name`` (the run's staged folder first, for a run)."""
        state = self._staged_state(name)
        if state == "withdrawn":
            raise FileNotFoundError(f"{self.uri(name)} was withdrawn by run {self.run_id}")
        if state == "complete":
            name = self._stage_rel(self.run_id, name)
        if self.path is not None:
            return (self.path / name / file).read_bytes()
        return self.objects.get(f"{name}/{file}")

    def write_file(self, file: str, data: bytes) -> str:
        """Write a file at the base (the roll-up README.md, batches.json): atomic on either side. For a run it is
        staged; the commit rebuilds the roll-up from the published folders."""
        rel = file if self.run_id is None else f"{self._stage_rel(self.run_id, self.ROOT_FILES)}/{file}"
        if self.path is not None:
            from synqa_dagster.common import atomic_write_bytes

            atomic_write_bytes(self.path / rel, data)
            return str(self.path / file)
        self.objects.put(rel, data)
        return self.objects.uri(file)

    def read_file(self, file: str) -> bytes | None:
        """A file at the base (the run's staged copy first, for a run), or None when absent."""
        rels = ([f"{self._stage_rel(self.run_id, self.ROOT_FILES)}/{file}"] if self.run_id is not None else []) + [file]
        for rel in rels:
            if self.path is not None:
                if (self.path / rel).is_file():
                    return (self.path / rel).read_bytes()
            elif self.objects.exists(rel):
                return self.objects.get(rel)
        return None

    def remove_file(self, file: str) -> None:
        if self.run_id is not None:
            self.write_file(f"{file}{WITHDRAWN}", b"")
            return
        if self.path is not None:
            (self.path / file).unlink(missing_ok=True)
        else:
            self.objects.delete([file])

    def delete(self, name: str) -> bool:
        """Remove folder ``name`` (its manifest first, so it never reads as a broken pack); returns whether it
        existed. For a run the removal is staged and applied at commit."""
        if self.run_id is not None:
            existed = self.complete(name)
            rel = self._stage_rel(self.run_id, name)
            if self.path is not None:
                shutil.rmtree(self.path / rel, ignore_errors=True)
                (self.path / rel).mkdir(parents=True, exist_ok=True)
                (self.path / rel / WITHDRAWN).write_bytes(b"")
            else:
                self.objects.delete_folder(rel)
                self.objects.put(f"{rel}/{WITHDRAWN}", b"")
            return existed
        if self.path is not None:
            folder = self.path / name
            if not folder.is_dir():
                return False
            shutil.rmtree(folder)
            return True
        self.objects.delete([f"{name}/{self.commit_file}"])
        return self.objects.delete_folder(name)

    # -- commit / discard ---------------------------------------------------------------------------------------
    def staged_folders(self, run_id: str) -> list[str]:
        """The folder names run ``run_id`` staged or withdrew (not the roll-up files)."""
        rel = self._stage_rel(run_id)
        if self.path is not None:
            root = self.path / rel
            names = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        else:
            names = self.objects.list_dirs(rel)
        return sorted(n for n in names if not n.startswith((".", "_")))

    def touched_rollup(self, run_id: str) -> bool:
        """Whether run ``run_id`` wrote or removed roll-up files."""
        rel = self._stage_rel(run_id, self.ROOT_FILES)
        if self.path is not None:
            return (self.path / rel).is_dir()
        return bool(self.objects.list(rel))

    def commit_run(self, run_id: str, *, cleanup: bool = True) -> list[tuple[str, str]]:
        """Publish run ``run_id``'s staged folders (each swapped in whole; on S3 with the manifest last) and
        withdrawals. Idempotent after a crash. Returns ``(name, "replaced"|"withdrawn")`` per folder."""
        done = []
        for name in self.staged_folders(run_id):
            rel = self._stage_rel(run_id, name)
            if self.path is not None:
                staged, final = self.path / rel, self.path / name
                trash = self.path / self._stage_rel(run_id, f"{TRASH_DIR}/{name}")
                if (staged / WITHDRAWN).is_file():
                    if final.exists():
                        trash.parent.mkdir(parents=True, exist_ok=True)
                        shutil.rmtree(trash, ignore_errors=True)
                        os.replace(final, trash)
                    shutil.rmtree(staged)
                    done.append((name, "withdrawn"))
                    continue
                if final.exists():
                    trash.parent.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(trash, ignore_errors=True)
                    os.replace(final, trash)
                os.replace(staged, final)
                done.append((name, "replaced"))
            else:
                if self.objects.exists(f"{rel}/{WITHDRAWN}"):
                    self.objects.delete([f"{name}/{self.commit_file}"])
                    self.objects.delete_folder(name)
                    self.objects.delete([f"{rel}/{WITHDRAWN}"])
                    done.append((name, "withdrawn"))
                    continue
                self.objects.commit_staged_folder(rel, name, commit_last=self.commit_file)
                done.append((name, "replaced"))
        if cleanup:
            self.discard_run(run_id)
        return done

    def discard_run(self, run_id: str) -> bool:
        """Throw away run ``run_id``'s staged folders and roll-up files; returns whether there were any."""
        rel = self._stage_rel(run_id)
        if self.path is not None:
            if not (self.path / rel).exists():
                return False
            shutil.rmtree(self.path / rel, ignore_errors=True)
            return True
        return self.objects.delete_folder(rel)


def _swap_in(work: Path, final: Path) -> None:
    """Replace ``final`` by ``work`` with two renames (the old folder is removed only after the new one is in)."""
    old = None
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    if table.num_rows == 0:
        # No row groups at all: a zero-row row group makes readers of many batches at once (HF datasets) fail.
        with pq.ParquetWriter(sink, table.schema, compression="zstd"):
            pass
    else:
        pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
