"""Seed corpus and taxonomy: loading, versioning and validation (Dagster-free)."""
