"""Shards and the run folder: rows split by position, shard results as Parquet, merged back in row order.

A run folder (a datatrove ``DataFolder``: a local path or any fsspec URL) holds, per run::

    input/00000.parquet (+ .npy: the shard's embeddings)   what each task reads
    results/00000.parquet + 00000.json                      a shard's decisions (keep, category, reason, score) + metrics
    errors/00000.json                                       written by a task that failed (stage, shard, error)
    dedup/...                                               the staged dedup's intermediate files
    logs/, stats/, completions/                             datatrove's own

Every file a task writes is written under a temporary name and renamed, so a result file is whole or absent.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
import pandas as pd

from synqa_dagster.common import jsonable
from synqa_dagster.gates.base import GateResult


def shard_bounds(n: int, tasks: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges of ``tasks`` shards of ``n`` rows, in row order (the first ``n % tasks`` shards
    hold one row more). At most ``n`` shards (at least one)."""
    return chunk_bounds(n, max(1, min(int(tasks), n)) if n else 1)


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Exactly ``parts`` contiguous ``[lo, hi)`` ranges over ``n`` items (some empty when ``n < parts``)."""
    base, extra = divmod(n, parts)
    out, lo = [], 0
    for r in range(parts):
        hi = lo + base + (1 if r < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def folder(path: str) -> Any:
    """The datatrove ``DataFolder`` at ``path`` (created for local paths)."""
    from datatrove.io import get_datafolder

    return get_datafolder(path)


def write_bytes(fs: Any, name: str, data: bytes) -> None:
    """Write ``data`` to ``name`` in ``fs`` atomically (temporary name, then rename)."""
    tmp = f"{name}.tmp-{os.getpid()}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, name)


def read_bytes(fs: Any, name: str) -> bytes:
    with fs.open(name, "rb") as f:
        return f.read()


def write_frame(fs: Any, name: str, frame: pd.DataFrame) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_bytes(fs, name, buf.getvalue())


def read_frame(fs: Any, name: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(read_bytes(fs, name)))


def write_array(fs: Any, name: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    write_bytes(fs, name, buf.getvalue())


def read_array(fs: Any, name: str) -> np.ndarray:
    return np.load(io.BytesIO(read_bytes(fs, name)), allow_pickle=False)


def write_json(fs: Any, name: str, value: Any) -> None:
    write_bytes(fs, name, json.dumps(jsonable(value), sort_keys=True).encode("utf-8"))


def read_json(fs: Any, name: str) -> Any:
    return json.loads(read_bytes(fs, name).decode("utf-8"))


def result_name(rank: int) -> str:
    return f"results/{rank:05d}.parquet"


def write_result(fs: Any, rank: int, result: GateResult) -> None:
    """A shard's decisions as Parquet (``keep``, ``category``, ``reason``, ``score``) and its metrics as JSON; the
    Parquet file is written last, so its presence means the shard is done."""
    write_json(fs, f"results/{rank:05d}.json", {
        "gate": result.gate, "metrics": result.metrics,
        # rewrites (a redacting gate): row index within the shard -> new column values, and what changed
        "rewrites": None if result.rewrites is None else {str(i): v for i, v in result.rewrites.items()},
        "edits": None if result.edits is None else {str(i): v for i, v in result.edits.items()},
    })
    write_frame(fs, result_name(rank), pd.DataFrame({
        "keep": np.asarray(result.keep, dtype=bool),
        "category": pd.array(result.category, dtype="string"),
        "reason": pd.array(result.reason, dtype="string"),
        "score": np.asarray(result.score, dtype=np.float64),
    }))


def read_results(fs: Any, gate: str, tasks: int) -> GateResult:
    """The shards' results concatenated in rank (= row) order; metrics merged (:func:`merge_metrics`)."""
    parts, metrics = [], []
    for rank in range(tasks):
        frame = read_frame(fs, result_name(rank))
        meta = read_json(fs, f"results/{rank:05d}.json")
        metrics.append(meta["metrics"])
        rewrites, edits = meta.get("rewrites"), meta.get("edits")
        parts.append(GateResult(
            gate=gate,
            keep=frame["keep"].to_numpy(dtype=bool),
            category=[None if pd.isna(c) else str(c) for c in frame["category"]],
            reason=[None if pd.isna(r) else str(r) for r in frame["reason"]],
            score=frame["score"].to_numpy(dtype=np.float64),
            rewrites=None if rewrites is None else {int(i): v for i, v in rewrites.items()},
            edits=None if edits is None else {int(i): v for i, v in (edits or {}).items()},
        ))
    return GateResult.concat(gate, parts, metrics=merge_metrics(metrics) if metrics else {})


def merge_metrics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Gate metrics of several shards as one dict: the keys every shard agrees on (configuration, thresholds),
    and ``per_shard``: each shard's other keys (counts, timings, per-slice tables are per shard; the batch's
    counters come from the merged decisions, never from here)."""
    if len(parts) == 1:
        return parts[0]
    keys: list[str] = []
    for m in parts:
        keys += [k for k in m if k not in keys]
    same = [k for k in keys if all(k in m for m in parts) and all(m[k] == parts[0][k] for m in parts)]
    return {**{k: parts[0][k] for k in same},
            "per_shard": [{k: v for k, v in m.items() if k not in same} for m in parts]}
