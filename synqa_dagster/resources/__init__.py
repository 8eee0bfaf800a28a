"""Dagster resources: Parquet storage (IO manager + table store), the embedder, the gates' scorers, the review store
and the handover signing key."""

from synqa_dagster.resources.models import EmbedderResource, ScorerResource
from synqa_dagster.resources.review import HandoverResource, ReviewStoreResource
from synqa_dagster.resources.storage import ParquetIOManager, StoreResource

__all__ = ["EmbedderResource", "HandoverResource", "ParquetIOManager", "ReviewStoreResource", "ScorerResource", "StoreResource"]
