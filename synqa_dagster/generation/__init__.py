"""Candidate generation with distilabel (Dagster-free): seed selection, LLM backends, the pipeline, row ids."""
