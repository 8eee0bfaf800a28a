"""Imported once by the forkserver that ``LocalPipelineExecutor``'s workers fork from (see
:func:`synqa_dagster.engine.executors._set_preload`): the process-wide tables every gate builds on first use (the
code-point classes of the text normaliser, ~2-3 s; the language identifier of the quality gate, ~1-2 s) are built
there once and inherited by every worker, instead of once per worker process."""

from synqa_dagster.gates import quality, text

text._codepoint_classes()
quality._batch_identifier()
