"""Dagster resources: Parquet storage (IO manager + table store), the embedder and the gates' scorers."""

from synqa_dagster.resources.models import EmbedderResource, ScorerResource
from synqa_dagster.resources.storage import ParquetIOManager, StoreResource

__all__ = ["EmbedderResource", "ParquetIOManager", "ScorerResource", "StoreResource"]
