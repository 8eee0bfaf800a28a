"""Toxicity gate: drop candidates a toxicity scorer rates at or above a threshold; report per-slice rates.

Four backends (``ToxicityGateConfig.backend``):

* ``"learned"`` (default): :class:`LearnedToxicityScorer`, a logistic regression over the all-MiniLM-L6-v2
  sentence embedding (the shared ``candidate_embeddings``; the gate embeds the rows itself when none are passed)
  plus hashed character n-grams, shipped as ``.npz`` + ``.json`` under ``synqa_dagster/gates/models/`` (no pickle,
  trained by ``scripts/train_toxicity.py``, threshold calibrated on validation splits, held-out figures from
  ``scripts/measure_toxicity.py`` in its metadata and ``docs/measurements/toxicity-contamination.md``). It reads
  meaning rather than words: on held-out test splits it drops 0.13% of benign rows (BANKING77 0 of 3,080, GSM8K
  0 of 1,319; profanity-check 1.56%), passes "tires", "nuts and balls", "roast a pig", and finds hate speech
  profanity-check misses (HateXplain hate-speech recall 0.97 vs 0.72, TweetEval hate 0.97 vs 0.59); it is weaker
  on profanity-driven offensive tweets (TweetEval offensive F1 0.57 vs 0.64).
* ``"profanity_check"``: the linear SVM shipped inside ``alt-profanity-check`` (~80k rows/s on 2 CPU
  cores, no download). Threshold chosen on the TweetEval *offensive* validation split and measured on its test
  split. Lexical: it drops benign rows that contain words such as "tires", "nuts", "balls", "cash".
* ``"detoxify"``: a Detoxify checkpoint (BERT-class, ~7 rows/s on 2 cores for bert-base), scored on its
  ``toxicity`` head. Offline by default: a local ``checkpoint_path`` is required unless ``allow_download=True``.
* ``"cascade"``: profanity-check screens every row; rows whose profanity score is above ``screen_threshold``
  plus a seeded random ``calibration_fraction`` of the others are re-scored by Detoxify, and the model's score
  decides for every row it scored. The calibration sample measures what the screen misses.

The gate also aggregates drop rates per slice (``slice_columns``, default ``intent`` x ``locale``) against a bar
(``slice_max_rate``) so that a batch-level asset check can escalate (:func:`slice_toxicity_rates`).

Nothing here downloads anything unless ``allow_download=True``: the config refuses a Detoxify backend without a
local checkpoint, and :class:`DetoxifyScorer` checks that every path Detoxify will open is local before it
imports Detoxify/torch. Heavy imports (torch, transformers, detoxify, scikit-learn, sentence-transformers) happen inside the scorers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synqa_dagster.paths import resolve_path
from synqa_dagster.gates.base import ID_COLUMN, TEXT_COLUMN, Gate, GateResult

CATEGORY_TOXIC = "toxic"

#: Default profanity-check threshold. On TweetEval offensive *validation* the F1 optimum is 0.15 (F1 0.642) and
#: 0.30 gives F1 0.604 at precision 0.75; but on benign real support queries (BANKING77, 13k) 0.15 drops 3.3% of
#: rows and 40% of one intent (``pending_cash_withdrawal``: "cash" drives the linear model), while 0.30 drops
#: 0.4% with no intent above 6.1%. Test split at 0.30: precision 0.790, recall 0.533, AUC 0.834.
#: See docs/measurements/toxicity-contamination.md.
DEFAULT_PROFANITY_THRESHOLD = 0.30


#: static_cascade route: half-width of the band around the static head's threshold re-scored by the MiniLM head
#: (chosen on validation splits: docs/measurements/embedding-routes.md).
DEFAULT_STATIC_BAND = 0.25
DEFAULT_STATIC_LEARNED_MODEL = "toxicity-static-char-v1"


class ToxicityConfigError(ValueError):
    """A toxicity backend cannot be set up as configured (e.g. Detoxify without a local checkpoint offline)."""


@runtime_checkable
class ToxicityScorer(Protocol):
    """What every toxicity scorer offers.

    Attributes:
        scorer_id: stable id including backend and model (recorded in metrics and lineage).
        label: short name used in reject reasons (``"profanity-check"``, ``"detoxify original"``).
    """

    scorer_id: str
    label: str

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Return one toxicity score in ``[0, 1]`` per text (float64, input order)."""
        ...


class ProfanityCheckScorer:
    """Scores texts with ``alt-profanity-check``'s bundled linear model (``predict_prob``).

    Inputs: texts (str). Outputs: probability of the offensive class, in ``[0, 1]``.

    Attributes:
        scorer_id: ``"profanity-check:alt-profanity-check==<version>"``.
        label: ``"profanity-check"``.

    References:
        - https://github.com/dimitrismistriotis/alt-profanity-check (trained on labelled tweets/Wikipedia comments).
    """

    label: str = "profanity-check"

    def __init__(self) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from profanity_check import predict_prob  # loads the pickled sklearn model once

        self._predict_prob = predict_prob
        try:
            v = version("alt-profanity-check")
        except PackageNotFoundError:  # pragma: no cover
            v = "unknown"
        self.scorer_id = f"profanity-check:alt-profanity-check=={v}"

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros(0, dtype=float)
        clean = [t if isinstance(t, str) else "" for t in texts]
        return np.clip(np.asarray(self._predict_prob(clean), dtype=float), 0.0, 1.0)


class DetoxifyScorer:
    """Scores texts with a Detoxify model head (default ``toxicity``), loaded once in ``__init__``.

    Offline by design: with ``allow_download=False`` (default) a local ``checkpoint_path`` is required, and the
    folder named by the checkpoint's ``config.arch.args.model_type`` (Detoxify calls
    ``AutoConfig.from_pretrained`` on it unconditionally) and ``huggingface_config_path`` (config + tokenizer files)
    must be local folders. All of this is checked *before* detoxify or torch is imported, so a misconfiguration
    fails fast with :class:`ToxicityConfigError` and never reaches the network. Only with ``allow_download=True``
    and no checkpoint does Detoxify fetch its published checkpoint for ``model_type``.

    Inputs: texts (str). Outputs: sigmoid score of ``head`` in ``[0, 1]``.

    Attributes:
        model_type: label of the model ("original", "unbiased", "multilingual"...), used in reasons and ids.
        checkpoint_path: local Detoxify checkpoint (``{"config": ..., "state_dict": ...}``), or None.
        head: output class scored (``"toxicity"``).
        batch_size: texts per forward pass.
        scorer_id: ``"detoxify:<model_type>:<checkpoint file name>"``.
        label: ``"detoxify <model_type>"``.
        class_names: the checkpoint's output classes.

    References:
        - Hanu & Unitary team, Detoxify (2020), https://github.com/unitaryai/detoxify
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike[str] | None = None,
        huggingface_config_path: str | os.PathLike[str] | None = None,
        model_type: str = "original",
        allow_download: bool = False,
        batch_size: int = 32,
        device: str = "cpu",
        head: str = "toxicity",
    ) -> None:
        self.model_type = model_type
        # Relative paths are relative to the project root, like every other config path.
        self.checkpoint_path = str(resolve_path(checkpoint_path)) if checkpoint_path is not None else None
        if huggingface_config_path is not None:
            huggingface_config_path = str(resolve_path(huggingface_config_path))
        self.huggingface_config_path = str(huggingface_config_path) if huggingface_config_path is not None else None
        self.head = head
        self.batch_size = int(batch_size)
        self.device = device
        if self.checkpoint_path is None and not allow_download:
            raise ToxicityConfigError(
                "Detoxify needs a local checkpoint_path when allow_download=False (the default); refusing to "
                f"download the published {model_type!r} checkpoint. Set checkpoint_path (and "
                "huggingface_config_path) to local files, or allow_download=True to let Detoxify fetch it."
            )
        if self.checkpoint_path is not None and not allow_download:
            self._check_offline(self.checkpoint_path, self.huggingface_config_path)
        if self.checkpoint_path is not None and not Path(self.checkpoint_path).is_file():
            raise ToxicityConfigError(f"Detoxify checkpoint not found: {self.checkpoint_path}")

        from detoxify import Detoxify  # heavy: torch + transformers

        t0 = time.perf_counter()
        self._model = Detoxify(
            model_type=model_type,
            checkpoint=self.checkpoint_path,
            device=device,
            huggingface_config_path=self.huggingface_config_path,
        )
        self.load_seconds = time.perf_counter() - t0
        self.class_names: list[str] = list(self._model.class_names)
        if head not in self.class_names:
            raise ToxicityConfigError(f"Detoxify checkpoint has no {head!r} head; classes: {self.class_names}")
        ckpt = Path(self.checkpoint_path).name if self.checkpoint_path else "published"
        self.scorer_id = f"detoxify:{model_type}:{ckpt}"
        self.label = f"detoxify {model_type}"

    @staticmethod
    def _check_offline(checkpoint_path: str, huggingface_config_path: str | None) -> None:
        """Fail unless every path Detoxify will open for this checkpoint is local."""
        ckpt = Path(checkpoint_path)
        if not ckpt.is_file():
            raise ToxicityConfigError(f"Detoxify checkpoint not found: {ckpt}")
        if huggingface_config_path is not None and not Path(huggingface_config_path).is_dir():
            raise ToxicityConfigError(f"huggingface_config_path is not a local folder: {huggingface_config_path}")
        import torch  # needed to read the checkpoint's config; no network

        try:  # mmap: only the small config is actually read (zip-format checkpoints)
            loaded = torch.load(str(ckpt), map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # noqa: BLE001 - legacy (non-zip) format: read it whole
            try:
                loaded = torch.load(str(ckpt), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001
                raise ToxicityConfigError(f"cannot read Detoxify checkpoint {ckpt}: {exc}") from exc
        try:
            args = loaded["config"]["arch"]["args"]
            model_dir = args["model_type"]
            loaded["config"]["dataset"]["args"]["classes"]
        except (KeyError, TypeError) as exc:
            raise ToxicityConfigError(
                f"{ckpt} is not a Detoxify checkpoint: it needs config.arch.args "
                "{model_type, model_name, tokenizer_name, num_classes} and config.dataset.args.classes"
            ) from exc
        if not (Path(str(model_dir)) / "config.json").is_file():
            raise ToxicityConfigError(
                f"{ckpt}: config.arch.args.model_type={model_dir!r} is not a local model folder with a config.json; "
                "Detoxify would fetch it from the Hugging Face hub. Point it at a local folder (or set "
                "allow_download=True)."
            )
        del loaded

    def score(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(texts), dtype=float)
        clean = [t if isinstance(t, str) else "" for t in texts]
        for s in range(0, len(clean), self.batch_size):
            batch = clean[s : s + self.batch_size]
            pred = self._model.predict(batch)[self.head]
            out[s : s + len(batch)] = np.asarray(pred, dtype=float)
        return np.clip(out, 0.0, 1.0)


#: The shipped learned model: ``synqa_dagster/gates/models/<name>.npz`` + ``<name>.json`` (no pickle).
LEARNED_MODEL_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_LEARNED_MODEL = "toxicity-minilm-char-v1"


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float64)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _hashing_vectorizer(char_spec: dict[str, Any]):
    from sklearn.feature_extraction.text import HashingVectorizer  # stateless: no fitted vocabulary

    return HashingVectorizer(
        analyzer=char_spec["analyzer"],
        ngram_range=tuple(char_spec["ngram_range"]),
        n_features=int(char_spec["n_features"]),
        lowercase=bool(char_spec.get("lowercase", True)),
        alternate_sign=bool(char_spec.get("alternate_sign", False)),
        norm=char_spec.get("norm", "l2"),
        dtype=np.float32,
    )


def learned_features(texts: Sequence[str], embeddings: np.ndarray, spec: dict[str, Any]):
    """The learned scorer's feature matrix: ``[scale * embedding | hashed char n-grams]`` (scipy CSR).

    The one featuriser shared by training (``scripts/train_toxicity.py``) and :class:`LearnedToxicityScorer`'s
    scoring (which computes the same dot product without building the matrix).
    """
    import scipy.sparse as sp

    emb = np.asarray(embeddings, dtype=np.float32) * np.float32(spec["embedding"].get("scale", 1.0))
    blocks = [sp.csr_matrix(emb)]
    if spec.get("char"):
        blocks.append(_hashing_vectorizer(spec["char"]).transform([t if isinstance(t, str) else "" for t in texts]))
    return sp.hstack(blocks, format="csr")


class LearnedToxicityScorer:
    """A logistic regression over the all-MiniLM-L6-v2 sentence embedding (+ hashed character n-grams).

    Trained by ``scripts/train_toxicity.py`` on TweetEval hate/offensive, HateXplain and benign text of synqa's
    domains (BANKING77, GSM8K, SST-2, Self-Instruct seeds); threshold chosen on their validation splits; held-out
    figures in the metadata (:meth:`measured`) and ``docs/measurements/toxicity-contamination.md``.

    Stored without pickle: ``<name>.npz`` (``w_embedding`` (384,), ``w_char`` (n_features,), ``bias``,
    ``threshold``) and ``<name>.json`` (feature spec, threshold, data hashes, versions, metrics, and the npz's
    sha256, checked at load). Loaded once per scorer object; the embedding model only when a batch arrives without
    precomputed embeddings.

    Inputs: texts (str), optionally their precomputed unit-normalised MiniLM vectors (the shared
    ``candidate_embeddings``, aligned with the texts). Outputs: P(toxic) in ``[0, 1]``.

    Attributes:
        model_path: the ``.npz`` file; ``metadata_path`` its JSON.
        metadata: the parsed JSON.
        threshold: the calibrated decision threshold from the metadata.
        feature_spec: embedding + char n-gram spec.
        scorer_id: ``"learned:<name>:<sha256[:12] of npz>"``.
        label: e.g. ``"learned: minilm+char, v1"`` (used in reject reasons).
        needs_embeddings: True: :meth:`score` accepts ``embeddings=``.
    """

    needs_embeddings: bool = True

    def __init__(self, model_path: str | os.PathLike[str] | None = None, embedder: Any = None) -> None:
        npz = Path(resolve_path(model_path)) if model_path is not None else LEARNED_MODEL_DIR / f"{DEFAULT_LEARNED_MODEL}.npz"
        if npz.suffix != ".npz":
            npz = npz.with_suffix(".npz")
        meta_path = npz.with_suffix(".json")
        self.model_path = npz
        self.metadata_path = meta_path
        for p in (npz, meta_path):
            if not p.is_file():
                raise ToxicityConfigError(
                    f"learned toxicity model file not found: {p} (train it with scripts/train_toxicity.py)"
                )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            spec = meta["feature_spec"]
            threshold = float(meta["threshold"])
            dim = int(spec["embedding"]["dim"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ToxicityConfigError(
                f"bad learned toxicity metadata {meta_path}: {exc.__class__.__name__}: {exc} "
                "(needs feature_spec.embedding.dim, threshold, npz_sha256)"
            ) from exc
        raw = npz.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if meta.get("npz_sha256") != digest:
            raise ToxicityConfigError(
                f"learned toxicity model {npz} does not match its metadata {meta_path.name} "
                f"(sha256 {digest[:12]}…, metadata says {str(meta.get('npz_sha256'))[:12]}…)"
            )
        try:
            import io

            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                w_emb = np.asarray(z["w_embedding"], dtype=np.float32)
                w_char = np.asarray(z["w_char"], dtype=np.float32)
                bias = float(np.asarray(z["bias"]).ravel()[0])
                npz_threshold = float(np.asarray(z["threshold"]).ravel()[0])
        except Exception as exc:  # noqa: BLE001 - corrupt archive, missing array, pickled object...
            raise ToxicityConfigError(f"bad learned toxicity model file {npz}: {exc.__class__.__name__}: {exc}") from exc
        char = spec.get("char")
        if w_emb.shape != (dim,) or (char and w_char.shape != (int(char["n_features"]),)):
            raise ToxicityConfigError(
                f"bad learned toxicity model file {npz}: weight shapes {w_emb.shape} / {w_char.shape} do not match "
                f"the feature spec in {meta_path.name}"
            )
        if abs(npz_threshold - threshold) > 1e-9:
            raise ToxicityConfigError(f"{npz}: threshold {npz_threshold} differs from {meta_path.name}'s {threshold}")
        self.metadata: dict[str, Any] = meta
        self.feature_spec: dict[str, Any] = spec
        self.threshold = threshold
        self._w_emb = w_emb
        self._w_char = w_char if char else None
        self._bias = bias
        self._scale = float(spec["embedding"].get("scale", 1.0))
        self._dim = dim
        self._vectorizer = _hashing_vectorizer(char) if char else None
        self._embedder = embedder
        name = meta.get("name", npz.stem)
        self.scorer_id = f"learned:{name}:{digest[:12]}"
        self.label = str(meta.get("label") or f"learned: {name}")

    @property
    def embedder(self) -> Any:
        """The embedder used when no embeddings are passed (a default :class:`Embedder`, created on first use)."""
        if self._embedder is None:
            static = self.feature_spec["embedding"].get("static")
            if static:  # a head on static model2vec vectors: the same distillation (cached, loaded once)
                from synqa_dagster.embedding import StaticEmbedder

                self._embedder = StaticEmbedder(pca_dims=int(static["pca_dims"]), sif_coefficient=static.get("sif_coefficient"),
                                                max_length=static.get("max_length", 512))
            else:
                from synqa_dagster.embedding import Embedder

                self._embedder = Embedder()
        return self._embedder

    def measured(self) -> dict[str, Any]:
        """The held-out figures stored in the metadata: ``{"heldout": [...], "benign_false_drop": [...]}``.

        ``heldout``: per test set ``data, precision, recall, f1, auc, n_pos, n_neg`` at :attr:`threshold`;
        ``benign_false_drop``: per benign test set ``data, rate, worst_slice, worst_rate``. Empty lists if the
        model was never measured (``scripts/measure_toxicity.py`` writes them).
        """
        return {
            "threshold": self.threshold,
            "heldout": list(self.metadata.get("heldout", [])),
            "benign_false_drop": list(self.metadata.get("benign_false_drop", [])),
        }

    def score(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(toxic) per text. ``embeddings``: their unit MiniLM vectors (aligned); embedded here when None."""
        n = len(texts)
        if n == 0:
            return np.zeros(0, dtype=float)
        clean = [t if isinstance(t, str) else "" for t in texts]
        if embeddings is None:
            embeddings = self.embedder.encode(clean)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.shape != (n, self._dim):
            raise ValueError(f"embeddings have shape {emb.shape}; expected ({n}, {self._dim}) aligned with the texts")
        z = (emb @ self._w_emb).astype(np.float64) * self._scale + self._bias
        if self._vectorizer is not None:
            z += np.asarray(self._vectorizer.transform(clean) @ self._w_char, dtype=np.float64).ravel()
        return np.clip(sigmoid(z), 0.0, 1.0)


class ToxicityGateConfig(BaseModel):
    """Configuration of :class:`ToxicityGate`.

    Attributes:
        backend: ``"learned"`` (default), ``"profanity_check"``, ``"detoxify"`` or ``"cascade"``
            (profanity-check screen + Detoxify).
        learned_model_path: the learned scorer's ``.npz`` (its ``.json`` metadata next to it); None = the shipped
            model under ``synqa_dagster/gates/models/``.
        learned_threshold: drop at or above this learned score; None = the threshold calibrated in the model's
            metadata.
        learned_static_model_path: on the ``static_cascade`` embedding route (the shared embeddings are static
            model2vec vectors), the learned head trained on static vectors + char n-grams
            (``scripts/train_toxicity.py --embedding static``); None = the shipped one.
        static_band: on that route, rows whose static-head score is within this distance of the static head's
            calibrated threshold are embedded with MiniLM and decided by the MiniLM head (``learned_threshold``);
            the others are decided by the static head. Measured in ``docs/measurements/embedding-routes.md``.
        profanity_threshold: drop at or above this profanity-check probability.
        detoxify_threshold: drop at or above this Detoxify ``detoxify_head`` score.
        detoxify_head: Detoxify output class used.
        checkpoint_path: local Detoxify checkpoint file.
        huggingface_config_path: local folder with the model's HF config and tokenizer files.
        model_type: model label ("original", "unbiased", "multilingual"; the published checkpoint name if
            downloading).
        allow_download: let Detoxify download its checkpoint when no ``checkpoint_path`` is set.
        detoxify_batch_size: texts per Detoxify forward pass.
        device: torch device for Detoxify.
        screen_threshold: cascade: profanity score above which the model re-scores a row.
        calibration_fraction: cascade: fraction of the other rows also re-scored (seeded by row id).
        calibration_seed: seed of the calibration sample.
        slice_columns: columns whose value combinations form the slices of the per-slice table.
        slice_max_rate: drop-rate bar per slice; a slice above it (with at least ``slice_min_rows``) is over bar.
        slice_min_rows: slices smaller than this never count as over bar (too few rows for a rate).
        escalation_severity: severity of the batch-level asset check when a slice is over bar.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["learned", "profanity_check", "detoxify", "cascade"] = Field(
        default="learned",
        description="Scorer: learned (MiniLM embedding + char n-gram logistic regression, shipped), profanity_check, "
        "detoxify, or cascade (profanity-check screen then Detoxify).",
    )
    learned_model_path: str | None = Field(
        default=None, description="Learned scorer .npz (metadata .json beside it); None = the shipped model."
    )
    learned_threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Learned-score threshold; None = the one calibrated in the metadata."
    )
    learned_static_model_path: str | None = Field(
        default=None,
        description="static_cascade route: the head on static vectors (.npz + .json); None = the shipped one.",
    )
    static_band: float = Field(
        default=DEFAULT_STATIC_BAND, ge=0.0, le=1.0,
        description="static_cascade route: static-head scores within this of its threshold are re-scored by the MiniLM head.",
    )
    profanity_threshold: float = Field(
        default=DEFAULT_PROFANITY_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="Drop at or above this alt-profanity-check probability (chosen on TweetEval val + BANKING77).",
    )
    detoxify_threshold: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Drop at or above this Detoxify score on detoxify_head."
    )
    detoxify_head: str = Field(default="toxicity", description="Detoxify output class used for the decision.")
    checkpoint_path: str | None = Field(default=None, description="Local Detoxify checkpoint file (.ckpt).")
    huggingface_config_path: str | None = Field(
        default=None, description="Local folder holding the model's Hugging Face config and tokenizer files."
    )
    model_type: str = Field(default="original", description="Detoxify model label: original, unbiased, multilingual.")
    allow_download: bool = Field(
        default=False, description="Allow Detoxify to download its published checkpoint when checkpoint_path is unset."
    )
    detoxify_batch_size: int = Field(default=32, ge=1, description="Texts per Detoxify forward pass.")
    device: str = Field(default="cpu", description="Torch device for Detoxify.")
    screen_threshold: float = Field(
        default=0.15,
        ge=0.0,
        le=1.0,
        description="Cascade: rows with profanity score above this are re-scored by the model.",
    )
    calibration_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Cascade: fraction of unscreened rows also re-scored (seeded sample)."
    )
    calibration_seed: int = Field(default=0, description="Seed of the cascade calibration sample.")
    slice_columns: list[str] = Field(
        default_factory=lambda: ["intent", "locale"], description="Columns whose value combinations form slices."
    )
    slice_max_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="Toxic drop-rate bar per slice.")
    slice_min_rows: int = Field(default=20, ge=1, description="Slices with fewer rows are never over bar.")
    escalation_severity: Literal["WARN", "ERROR"] = Field(
        default="WARN", description="Severity of the batch-level check when a slice is over its bar."
    )

    @model_validator(mode="after")
    def _offline_by_default(self) -> "ToxicityGateConfig":
        if self.backend in ("detoxify", "cascade") and self.checkpoint_path is None and not self.allow_download:
            raise ValueError(
                f"backend={self.backend!r} needs a local checkpoint_path when allow_download=False (the default): "
                "refusing to let Detoxify download a checkpoint. Set checkpoint_path/huggingface_config_path, "
                "or allow_download=True."
            )
        return self


class ToxicityGate(Gate):
    """Drops rows whose toxicity score reaches the backend's threshold, with the score and scorer in the reason.

    Input columns:
        - ``text`` (str): the candidate's turns joined by newlines.
        - ``row_id`` (str, optional): seeds the cascade's calibration sample (row position otherwise).
        - ``slice_columns`` (optional): per-slice drop rates in ``metrics["slices"]``.

    Output (per row): category ``toxic``, reason ``"toxicity 0.87 ≥ 0.30 (profanity-check)"`` or
    ``"toxicity 0.21 ≥ 0.05 (detoxify original)"``, score = the deciding scorer's score (model score for rows
    the cascade re-scored). Metrics: scorer ids, thresholds, cascade counts, per-slice table.

    Attributes:
        config: the :class:`ToxicityGateConfig`.
        profanity_scorer: the screen / profanity scorer (None for ``backend="detoxify"`` / ``"learned"``).
        model_scorer: the Detoxify scorer for ``detoxify`` / ``cascade``, the :class:`LearnedToxicityScorer` for
            ``learned`` (None for ``profanity_check``).
        threshold: the model threshold in use (learned: the config's ``learned_threshold`` or the metadata's).

    References:
        - Barbieri et al. 2020, TweetEval (offensive = OLID/OffensEval-2019), used to choose the threshold.
    """

    name: ClassVar[str] = "toxicity"

    def __init__(
        self,
        config: ToxicityGateConfig | None = None,
        *,
        profanity_scorer: ToxicityScorer | None = None,
        model_scorer: ToxicityScorer | None = None,
        embedder: Any = None,
    ) -> None:
        """Build (or take prebuilt) scorers once.

        Args:
            config: gate configuration (default: the learned backend with the shipped model).
            profanity_scorer: a prebuilt profanity scorer (e.g. owned by a Dagster resource).
            model_scorer: a prebuilt model scorer (a :class:`DetoxifyScorer`, or for ``learned`` a
                :class:`LearnedToxicityScorer`).
            embedder: for ``learned``: the embedder used when :meth:`evaluate` gets no ``embeddings`` (default: a
                lazily loaded :class:`synqa_dagster.embedding.Embedder`; it loads only when needed).
        """
        self.config = config or ToxicityGateConfig()
        cfg = self.config
        self._embedder = embedder
        self._static_scorer: Any = None
        if cfg.backend == "learned":
            self.profanity_scorer = profanity_scorer
            self.model_scorer = model_scorer or LearnedToxicityScorer(cfg.learned_model_path, embedder=embedder)
            meta_thr = getattr(self.model_scorer, "threshold", None)
            thr = cfg.learned_threshold if cfg.learned_threshold is not None else meta_thr
            if thr is None:
                raise ToxicityConfigError("learned backend: no learned_threshold and the scorer has no threshold")
            self.threshold = float(thr)
            return
        if cfg.backend in ("profanity_check", "cascade"):
            self.profanity_scorer = profanity_scorer or ProfanityCheckScorer()
        else:
            self.profanity_scorer = profanity_scorer
        if cfg.backend in ("detoxify", "cascade"):
            self.model_scorer = model_scorer or DetoxifyScorer(
                checkpoint_path=cfg.checkpoint_path,
                huggingface_config_path=cfg.huggingface_config_path,
                model_type=cfg.model_type,
                allow_download=cfg.allow_download,
                batch_size=cfg.detoxify_batch_size,
                device=cfg.device,
                head=cfg.detoxify_head,
            )
        else:
            self.model_scorer = model_scorer
        self.threshold = cfg.detoxify_threshold if cfg.backend in ("detoxify", "cascade") else cfg.profanity_threshold

    def __repr__(self) -> str:
        ids = [s.scorer_id for s in (self.profanity_scorer, self.model_scorer) if s is not None]
        return f"ToxicityGate(backend={self.config.backend!r}, threshold={self.threshold:.2f}, scorers={ids})"

    def _calibration_mask(self, rows: pd.DataFrame) -> np.ndarray:
        """Seeded sample of rows, stable per row id (independent of batch order and size)."""
        frac = self.config.calibration_fraction
        n = len(rows)
        if frac <= 0 or n == 0:
            return np.zeros(n, dtype=bool)
        keys = rows[ID_COLUMN].astype(str).tolist() if ID_COLUMN in rows.columns else [str(i) for i in range(n)]
        salt = str(self.config.calibration_seed).encode()
        u = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(k.encode("utf-8"), digest_size=8, key=salt[:64]).digest(), "little")
                / 2.0**64
                for k in keys
            ),
            dtype=float,
            count=n,
        )
        return u < frac

    # ---------------------------------------------------------------------------------------- static cascade

    @property
    def static_scorer(self) -> "LearnedToxicityScorer":
        """The learned head on static vectors (``static_cascade`` route), loaded on first use."""
        if self._static_scorer is None:
            path = self.config.learned_static_model_path
            if path is None:
                path = LEARNED_MODEL_DIR / f"{DEFAULT_STATIC_LEARNED_MODEL}.npz"
            self._static_scorer = LearnedToxicityScorer(path, embedder=self._static_embedder())
        return self._static_scorer

    def _static_embedder(self) -> Any:
        if getattr(self._embedder, "route", None) == "static_cascade":
            return self._embedder
        return None

    def _rescorer(self) -> Any:
        rescorer = getattr(self._embedder, "rescorer", None)
        return rescorer if rescorer is not None else self.model_scorer.embedder

    def embedding_route(self, embeddings: np.ndarray | None) -> str:
        """Which head(s) the learned backend runs: ``static_cascade`` when the gate's embedder is that route, or
        (no embedder given) when the shared vectors have the static head's dimension and not the MiniLM head's;
        else ``minilm``."""
        if self.config.backend != "learned":
            return "n/a"
        route = getattr(self._embedder, "route", None)
        if route is not None:
            return "static_cascade" if route == "static_cascade" else "minilm"
        if embeddings is None:
            return "minilm"
        dim = int(np.asarray(embeddings).shape[1])
        mini_dim = getattr(self.model_scorer, "_dim", None)
        if dim == mini_dim:
            return "minilm"
        try:
            static_dim = self.static_scorer._dim
        except ToxicityConfigError:
            return "minilm"
        return "static_cascade" if dim == static_dim else "minilm"

    def _static_cascade(self, texts: list, embeddings: np.ndarray | None):
        """Static head on every row; rows within ``static_band`` of its threshold re-scored by the MiniLM head."""
        cfg = self.config
        n = len(texts)
        st = self.static_scorer
        emb_static = self._static_embedder()
        want = st.feature_spec["embedding"].get("model")
        have = getattr(emb_static, "model_id", None)
        if want and have and want != have:
            raise ToxicityConfigError(
                f"the static toxicity head {st.model_path.name} was trained on {want}, but the embedding route gives "
                f"{have}: retrain it (scripts/train_toxicity.py --embedding static) or use embedding.route: minilm"
            )
        ps = st.score(texts, embeddings=embeddings)
        thr_s = float(st.threshold)
        band = np.abs(ps - thr_s) < cfg.static_band
        idx = np.flatnonzero(band)
        t0 = time.perf_counter()
        score = ps.astype(float).copy()
        if len(idx):
            sub = [texts[i] if isinstance(texts[i], str) else "" for i in idx]
            vec = self._rescorer().encode(sub)
            score[idx] = self.model_scorer.score(sub, embeddings=vec)
        thr = np.where(band, self.threshold, thr_s)
        labels = np.where(
            band, f"{self.model_scorer.label}; route static_cascade: in band, MiniLM head",
            f"{st.label}; route static_cascade: static head",
        ).astype(object)
        metrics = {
            "scorer_ids": [st.scorer_id, self.model_scorer.scorer_id],
            "threshold": self.threshold,
            "static_threshold": thr_s,
            "static_band": cfg.static_band,
            "embeddings": "precomputed" if embeddings is not None else "embedded by the gate",
            "embedding_route": "static_cascade",
            "static_model": want,
            "cascade_minilm_rows": int(len(idx)),
            "cascade_minilm_rate": round(len(idx) / n, 6) if n else 0.0,
            "cascade_minilm_seconds": round(time.perf_counter() - t0, 4),
        }
        return score, thr, labels, metrics

    def evaluate(self, rows: pd.DataFrame, *, embeddings: np.ndarray | None = None) -> GateResult:
        """Score every row with the configured backend and drop rows at or above the threshold.

        Args:
            rows: candidates with a ``text`` column.
            embeddings: the rows' precomputed unit-normalised all-MiniLM-L6-v2 vectors, aligned with ``rows``
                (``(len(rows), 384)``, the shared ``candidate_embeddings``). Used by the ``learned`` backend; when
                None it embeds the rows itself. Ignored by the other backends.
        """
        cfg = self.config
        n = len(rows)
        result = GateResult.all_kept(self.name, n)
        texts = rows[TEXT_COLUMN].tolist() if n else []
        metrics: dict[str, Any] = {"backend": cfg.backend}
        t0 = time.perf_counter()
        if embeddings is not None:
            embeddings = np.asarray(embeddings)
            if embeddings.ndim != 2 or embeddings.shape[0] != n:
                raise ValueError(f"embeddings have shape {embeddings.shape}; expected ({n}, dim) aligned with the rows")
        if cfg.backend == "learned" and self.embedding_route(embeddings) == "static_cascade":
            score, thr, labels, cmetrics = self._static_cascade(texts, embeddings)
            metrics.update(cmetrics)
        elif cfg.backend == "learned":
            assert self.model_scorer is not None
            if getattr(self.model_scorer, "needs_embeddings", False):
                score = self.model_scorer.score(texts, embeddings=embeddings)
            else:
                score = self.model_scorer.score(texts)
            thr = np.full(n, self.threshold)
            labels = np.full(n, self.model_scorer.label, dtype=object)
            metrics.update(
                scorer_ids=[self.model_scorer.scorer_id],
                threshold=self.threshold,
                embeddings="precomputed" if embeddings is not None else "embedded by the gate",
                embedding_route="minilm",
            )
        elif cfg.backend == "profanity_check":
            assert self.profanity_scorer is not None
            score = self.profanity_scorer.score(texts)
            thr = np.full(n, cfg.profanity_threshold)
            labels = np.full(n, self.profanity_scorer.label, dtype=object)
            metrics.update(scorer_ids=[self.profanity_scorer.scorer_id], threshold=cfg.profanity_threshold)
        elif cfg.backend == "detoxify":
            assert self.model_scorer is not None
            score = self.model_scorer.score(texts)
            thr = np.full(n, cfg.detoxify_threshold)
            labels = np.full(n, self.model_scorer.label, dtype=object)
            metrics.update(scorer_ids=[self.model_scorer.scorer_id], threshold=cfg.detoxify_threshold)
        else:
            assert self.profanity_scorer is not None and self.model_scorer is not None
            screen = self.profanity_scorer.score(texts)
            screened = screen > cfg.screen_threshold
            calib = self._calibration_mask(rows) & ~screened
            to_model = screened | calib
            idx = np.flatnonzero(to_model)
            model_scores = self.model_scorer.score([texts[i] for i in idx]) if len(idx) else np.zeros(0)
            score = screen.copy()
            score[idx] = model_scores
            thr = np.where(to_model, cfg.detoxify_threshold, cfg.profanity_threshold)
            labels = np.where(to_model, self.model_scorer.label, self.profanity_scorer.label).astype(object)
            model_flag = np.zeros(n, dtype=bool)
            model_flag[idx] = model_scores >= cfg.detoxify_threshold
            metrics.update(
                scorer_ids=[self.profanity_scorer.scorer_id, self.model_scorer.scorer_id],
                threshold=cfg.detoxify_threshold,
                profanity_threshold=cfg.profanity_threshold,
                screen_threshold=cfg.screen_threshold,
                calibration_fraction=cfg.calibration_fraction,
                cascade_screened=int(screened.sum()),
                cascade_calibration=int(calib.sum()),
                cascade_model_rows=int(len(idx)),
                # share of the calibration sample the model flags = estimated miss rate of the screen
                cascade_calibration_flagged=int(model_flag[calib].sum()),
                cascade_screen_miss_rate_est=(float(model_flag[calib].mean()) if calib.any() else None),
            )
        metrics["score_seconds"] = round(time.perf_counter() - t0, 4)
        score = np.asarray(score, dtype=float)
        mask = score >= thr
        reasons: list[str | None] = [None] * n
        for i in np.flatnonzero(mask):
            reasons[i] = f"toxicity {score[i]:.2f} ≥ {thr[i]:.2f} ({labels[i]})"
        result.drop_where(mask, CATEGORY_TOXIC, reasons, score)
        result.score[:] = score
        metrics["dropped_toxic"] = int(mask.sum())
        table = slice_toxicity_rates(rows, result, cfg)
        metrics["slice_max_rate"] = cfg.slice_max_rate
        metrics["slices"] = table.to_dict(orient="records")
        metrics["slices_over_bar"] = int(table["over_bar"].sum()) if len(table) else 0
        result.metrics = metrics
        return result


def slice_toxicity_rates(rows: pd.DataFrame, result: GateResult, config: ToxicityGateConfig) -> pd.DataFrame:
    """Toxic drop rate per slice, for the batch-level escalation check.

    Slices are the value combinations of ``config.slice_columns`` present in ``rows`` (missing values form their
    own slice, shown as ``"<missing>"``; with none of the columns present there is one slice over all rows).

    Returns:
        DataFrame with the slice columns, then ``n`` (rows), ``dropped`` (rows dropped as ``toxic``), ``rate``,
        ``bar`` (``config.slice_max_rate``) and ``over_bar`` (``rate > bar`` and ``n >= config.slice_min_rows``),
        sorted by rate (highest first) then slice values.
    """
    if len(rows) != len(result):
        raise ValueError(f"result has {len(result)} decisions for {len(rows)} rows")
    cols = [c for c in config.slice_columns if c in rows.columns]
    toxic = np.array([(not k) and c == CATEGORY_TOXIC for k, c in zip(result.keep, result.category)], dtype=bool)
    frame = pd.DataFrame({"_toxic": toxic})
    for c in cols:
        frame[c] = rows[c].astype(object).where(rows[c].notna(), "<missing>").to_numpy()
    if cols:
        g = frame.groupby(cols, sort=True, dropna=False)["_toxic"]
        table = pd.DataFrame({"n": g.size(), "dropped": g.sum()}).reset_index()
    else:
        table = pd.DataFrame({"n": [len(frame)], "dropped": [int(toxic.sum())]})
    table["n"] = table["n"].astype(int)
    table["dropped"] = table["dropped"].astype(int)
    table["rate"] = table["dropped"] / table["n"].where(table["n"] > 0, 1)
    table["bar"] = float(config.slice_max_rate)
    table["over_bar"] = (table["rate"] > table["bar"]) & (table["n"] >= config.slice_min_rows)
    table = table.sort_values(["rate", *cols], ascending=[False, *([True] * len(cols))], kind="mergesort")
    return table.reset_index(drop=True)


__all__ = [
    "CATEGORY_TOXIC",
    "DEFAULT_PROFANITY_THRESHOLD",
    "DEFAULT_LEARNED_MODEL",
    "DetoxifyScorer",
    "LEARNED_MODEL_DIR",
    "LearnedToxicityScorer",
    "ProfanityCheckScorer",
    "ToxicityConfigError",
    "ToxicityGate",
    "ToxicityGateConfig",
    "ToxicityScorer",
    "learned_features",
    "sigmoid",
    "slice_toxicity_rates",
]
