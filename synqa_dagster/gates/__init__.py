"""Pure, Dagster-free quality gates: each decides keep, or drop with a reason and a score, per row."""
