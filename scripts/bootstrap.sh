#!/usr/bin/env bash
# Create .venv and install synqa with pinned dependencies, once. Re-running is a no-op unless pyproject.toml
# changed (a stamp holds its hash). llama-cpp-python compiles from source the first time (~5 min on 2 cores);
# pip caches the wheel, so later reinstalls take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.synqa-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
# The static embedding model is distilled offline from the wheel's MiniLM once (~30 s), then cached under
# .synqa/cache/models (keyed by the source model files and the gate config's parameters): a cached copy loads in <1 s.
distill() {
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/synqa models distill >/dev/null \
    || { echo "[bootstrap] could not build the static embedding model (synqa models distill)" >&2; exit 1; }
}
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[bootstrap] environment up to date (.venv) — nothing to install"
  distill
  exit 0
fi
start=$(date +%s)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "[bootstrap] installing dependencies into .venv (first time: compiles llama.cpp, several minutes)"
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned, so no dependency can pull a CUDA build; LLAVA off shortens the llama.cpp build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" .venv/bin/python -m pip install --quiet -e ".[dev]"
echo "$want" > "$stamp"
distill
echo "[bootstrap] installed in $(( $(date +%s) - start )) s"
