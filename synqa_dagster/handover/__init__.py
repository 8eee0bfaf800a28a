"""The handover pack: what ships with a batch (or an audit) so that someone else can check and reuse it.

* :mod:`~synqa_dagster.handover.card` — :class:`~synqa_dagster.handover.card.CardFacts` (every fact a dataset card
  states, gathered from the batch's tables) and ``render_card`` / ``render_rollup_card``: a Hugging Face
  ``README.md`` (YAML front matter that ``huggingface_hub.DatasetCard`` parses, and a body with composition,
  generators, gates, contamination, drift, human review, limitations, lineage, funnel and file hashes). Every
  string taken from rows or configs is escaped (``md_escape``), so a hostile reason or intent stays text.
* :mod:`~synqa_dagster.handover.funnel_chart` — the funnel as a deterministic PNG and as a markdown report.
* :mod:`~synqa_dagster.handover.batch` — one batch's signed handover folder (data, configs, card, funnel).
* :mod:`~synqa_dagster.handover.records` — per-row lineage records and the data rows of a handover folder.

``synqa audit`` (:mod:`synqa_dagster.audit`) writes the same card and funnel for externally made data.

Everything here is Dagster-free and deterministic: the same facts give byte-identical files.
"""
