"""Storage for every asset: one IO manager and one store resource over the same base path, local or S3.

Set ``SYNQA_STORAGE`` (or the resources' ``base_path``) to a local folder or ``s3://bucket/prefix``. On S3 the
Parquet tables *and* the handover folders (``<base>/handover/`` unless ``$SYNQA_HANDOVER`` says otherwise) go
through dagster-aws's :class:`~dagster_aws.s3.S3Resource` (a boto3 client): :func:`s3_resource_from_env` builds it
from ``EnvVar`` s — ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` — for those that are set (the rest is left to boto3's
default chain), and :func:`synqa_dagster.definitions.build_definitions` nests it into both resources when the base
is on S3. The Dagster-free code (tables, handover, verify) only sees the client through
:mod:`synqa_dagster.storage`.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from synqa_dagster.handover.batch import handover_folders
from synqa_dagster.paths import default_handover_location
from synqa_dagster.storage import HandoverFolders, TableStore, is_s3

#: S3Resource field -> the environment variables that may supply it (first one set wins).
S3_ENV = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "region_name": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "profile_name": ("AWS_PROFILE",),
}


def s3_resource_from_env(environ: dict[str, str] | None = None) -> S3Resource:
    """An ``S3Resource`` whose endpoint and credentials are ``EnvVar`` s (read when a run starts, never stored in
    the definitions); only variables set now are wired, so an unset one falls back to boto3's default chain."""
    env = os.environ if environ is None else environ
    fields: dict[str, Any] = {}
    for name, candidates in S3_ENV.items():
        var = next((v for v in candidates if env.get(v)), None)
        if var is not None:
            fields[name] = dg.EnvVar(var)
    return S3Resource(**fields)


def _client(base_path: str, s3: S3Resource | None) -> Any:
    if not is_s3(base_path):
        return None
    return (s3 or S3Resource()).get_client()


def _batch(context: dg.OutputContext | dg.InputContext) -> str | None:
    return context.asset_partition_key if context.has_asset_partitions else None


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame outputs as ``<base_path>/<asset>/batch=<partition>/data.parquet`` (atomic writes).

    Inside a run the IO manager is one of the run's transaction participants (:mod:`synqa_dagster.runs`): its
    writes are staged under ``<base_path>/.runs/<run id>/`` and published when the run ends without a failed step;
    its reads see the run's own staged tables first.

    Attributes:
        base_path: local folder or ``s3://bucket/prefix``.
        s3: the dagster-aws S3 resource used when ``base_path`` is on S3 (None: boto3's default chain).
    """

    base_path: str
    s3: S3Resource | None = None
    _run_id: str | None = PrivateAttr(default=None)

    @property
    def store(self) -> TableStore:
        """The tables as this run sees them (the published ones outside a run)."""
        return TableStore(self.base_path, client=_client(self.base_path, self.s3), run_id=self._run_id)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from synqa_dagster import runs

        if runs.begin(context, TableStore(self.base_path, client=_client(self.base_path, self.s3))) is not None:
            self._run_id = context.run_id

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        from synqa_dagster import runs

        runs.end(context)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: ParquetIOManager stores DataFrames, got {type(obj).__name__}")
        uri = self.store.write(context.asset_key.path[-1], _batch(context), obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(uri)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        return self.store.read(context.asset_key.path[-1], _batch(context))


class StoreResource(dg.ConfigurableResource):
    """Direct access to the same tables, for assets that read other batches (e.g. the dedup index), and to the
    handover folders. Inside a run, both are the run's transaction views (see :class:`ParquetIOManager`).

    Attributes:
        base_path: local folder or ``s3://bucket/prefix`` (the same as the IO manager's).
        s3: the dagster-aws S3 resource for S3 locations (None: boto3's default chain).
        handover_base: the handover base the run's recovery sweeps (``HandoverResource.base_path``; empty: the
            default, see :meth:`handover_location`).
    """

    base_path: str
    s3: S3Resource | None = None
    handover_base: str = ""
    _run_id: str | None = PrivateAttr(default=None)

    @property
    def store(self) -> TableStore:
        """The tables as this run sees them (the published ones outside a run)."""
        return TableStore(self.base_path, client=_client(self.base_path, self.s3), run_id=self._run_id)

    def published_folders(self, handover_base: str = "") -> HandoverFolders:
        """The published handover folders (no run's staging)."""
        location = self.handover_location(handover_base or self.handover_base)
        return handover_folders(location, client=_client(location, self.s3))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from synqa_dagster import runs

        tables = TableStore(self.base_path, client=_client(self.base_path, self.s3))
        if runs.begin(context, tables, self.published_folders()) is not None:
            self._run_id = context.run_id

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        from synqa_dagster import runs

        runs.end(context)

    def handover_location(self, handover_base: str = "") -> str:
        """The handover base: ``handover_base`` if given, else ``$SYNQA_HANDOVER``, else ``<base_path>/handover``
        when the tables are on S3, else ``<instance>/handover``."""
        if handover_base:
            return handover_base
        return default_handover_location(self.base_path)

    def handover_folders(self, handover_base: str = "") -> HandoverFolders:
        """The batch handover folders (local or S3, with this resource's S3 client); pass
        ``HandoverResource.base_path``. Inside a run: the run's view (publishing and ``.delete("batch=<key>")``
        are staged until the run commits)."""
        folders = self.published_folders(handover_base)
        if self._run_id is None:
            return folders
        from synqa_dagster import runs

        txn = runs.active(self._run_id)
        return txn.enlist_folders(folders) if txn is not None else folders.for_run(self._run_id)
