"""Human review of sampled synthetic rows.

A batch's stratified sample (one sample per slice, see :mod:`synqa_dagster.review.sampling`) is pushed to a
review store (:mod:`synqa_dagster.review.store`, SQLite or PostgreSQL); reviewers accept or reject each sampled row
in a small web app (:mod:`synqa_dagster.review.webapp`) or offline through CSV files
(:mod:`synqa_dagster.review.csv_io`); ``synqa review ...`` (:mod:`synqa_dagster.review.cli`) serves the app,
registers reviewers, prints progress and moves CSV files; :mod:`synqa_dagster.review.identity` holds the
reviewer-id HMAC secret and session key paths they share. Nothing in this package imports Dagster: the sensor and
the ``human_review`` asset read the store through :class:`~synqa_dagster.review.store.ReviewStore`.
"""
