"""Parquet storage for every asset: one IO manager and one store resource over the same base path.

Set ``SYNQA_STORAGE`` (or the resources' ``base_path``) to a local folder or ``s3://bucket/prefix``; nothing
else changes (S3 goes through pyarrow's S3 filesystem with the standard AWS credential chain; dagster-aws
resources can supply the environment).
"""

from __future__ import annotations

import dagster as dg
import pandas as pd

from synqa_dagster.storage import TableStore


def _batch(context: dg.OutputContext | dg.InputContext) -> str | None:
    return context.asset_partition_key if context.has_asset_partitions else None


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame outputs as ``<base_path>/<asset>/batch=<partition>/data.parquet`` (atomic writes).

    Attributes:
        base_path: local folder or ``s3://bucket/prefix``.
    """

    base_path: str

    @property
    def store(self) -> TableStore:
        return TableStore(self.base_path)

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
    """Direct access to the same tables, for assets that read other batches (e.g. the dedup index).

    Attributes:
        base_path: local folder or ``s3://bucket/prefix`` (the same as the IO manager's).
    """

    base_path: str

    @property
    def store(self) -> TableStore:
        return TableStore(self.base_path)
