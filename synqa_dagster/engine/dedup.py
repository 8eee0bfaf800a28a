"""Dedup in datatrove's staged shape, with synqa's own dedup code: the decisions equal ``DedupGate.evaluate``'s.

1. signatures, per shard (:class:`~synqa_dagster.engine.steps.DedupSignatureStep`): normalised text + MinHash;
2. exact duplicates and the LSH items, in the driver (a hash lookup per row: prior rows first, then the batch);
3. buckets, per band (:class:`~synqa_dagster.engine.steps.DedupBucketStep`): each band's candidate pair codes;
4. clusters: the union of the bands' codes, MinHash estimates, the estimate cut and the order (driver), then the
   exact Jaccard of every candidate pair, per chunk of pairs (:class:`~synqa_dagster.engine.steps.DedupVerifyStep`);
5. filter, in the driver: the gate's own greedy pass in row order (``DedupGate._verify`` with the Jaccards given).

Every step calls the functions ``DedupGate.evaluate`` calls, on the same arrays, so a near-duplicate pair that
straddles two shards is found exactly as in process (signatures are per row; buckets and the greedy pass see the
whole batch and the cross-batch index). Unlike datatrove's own MinHash filter, no row is dropped on an estimate.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from synqa_dagster.engine import shards as sh
from synqa_dagster.gates.base import ID_COLUMN, GateResult
from synqa_dagster.gates.dedup import BATCH_COLUMN, DedupGate, _Items


def items_frame(items: _Items, pairs: np.ndarray) -> pd.DataFrame:
    """What the verify tasks need: for every item some pair names, its normalised text (batch rows) or its raw
    text (prior rows, normalised by the task as the gate does)."""
    needed = np.unique(pairs).astype(np.int64)
    return pd.DataFrame({
        "item": needed,
        "normalized": pd.array([items.normalized[i] for i in needed], dtype="string"),
        "prior_text": pd.array([items.prior_text[i] if i < items.n_prior else None for i in needed], dtype="string"),
    })


def items_from_frame(frame: pd.DataFrame) -> _Items:
    """The items of :func:`items_frame`, indexed by item number (what ``DedupGate.pair_jaccards`` reads)."""
    idx = frame["item"].astype("int64").tolist()
    norm = {i: (None if pd.isna(t) else str(t)) for i, t in zip(idx, frame["normalized"])}
    prior = {i: str(t) for i, t in zip(idx, frame["prior_text"]) if not pd.isna(t)}
    return _Items(row_id=[], batch=[], normalized=norm, prior_text=prior,  # type: ignore[arg-type]
                  sig=np.empty((0, 0), dtype=np.uint32), n_prior=len(prior), row_index=np.empty(0, dtype=np.int64))


def run_dedup(ctx: Any, gate: DedupGate, rows: pd.DataFrame, prior: pd.DataFrame | None) -> GateResult:
    """The staged dedup of ``rows`` against ``prior`` (see the module doc); ``ctx`` runs the tasks
    (:class:`synqa_dagster.engine.stage._Run`)."""
    t0 = time.perf_counter()
    n = len(rows)
    fs = ctx.fs
    # 1. signatures per shard
    ctx.write_inputs(rows[["text"]])
    ctx.run("signatures", lambda f, r: f.isfile(f"dedup/sig/{r:05d}.npy"))
    normalized: list[str] = []
    sigs = []
    for r in range(ctx.tasks):
        normalized += [str(t) for t in sh.read_frame(fs, f"dedup/norm/{r:05d}.parquet")["normalized"]]
        sigs.append(sh.read_array(fs, f"dedup/sig/{r:05d}.npy"))
    sig = np.concatenate(sigs) if sigs else np.empty((0, gate.config.num_perm), dtype=np.uint32)
    t_sig = time.perf_counter()

    # 2. exact duplicates and the LSH items (the gate's own steps)
    result = GateResult.all_kept(gate.name, n)
    row_ids = rows[ID_COLUMN].astype(str).tolist()
    batches = rows[BATCH_COLUMN].tolist() if BATCH_COLUMN in rows else [None] * n
    prior_frame = prior if prior is not None and len(prior) else None
    prior_hash = gate._prior_exact_index(prior_frame)
    lsh_rows = gate._drop_exact(result, normalized, row_ids, prior_frame, prior_hash)
    gate._last = (row_ids, normalized, sig)
    items = gate._items(row_ids, batches, normalized, sig, lsh_rows, prior_frame, gate._prior_signatures(prior_frame))
    t_exact = time.perf_counter()

    # 3. buckets per band, 4. candidate pairs and their exact Jaccard per chunk
    n_items = len(items.row_id)
    if n_items - items.n_prior > 0 and n_items >= 2:
        sh.write_array(fs, "dedup/items_sig.npy", items.sig)
        ctx.run("buckets", lambda f, r: all(f.isfile(f"dedup/buckets/{b:03d}.npy") for b in range(r, gate.bands, ctx.tasks)),
                n_prior=items.n_prior)
        codes = np.unique(np.concatenate([sh.read_array(fs, f"dedup/buckets/{b:03d}.npy") for b in range(gate.bands)]))
        pairs, est, n_candidates = gate._rank_candidates(items.sig, codes)
    else:
        pairs, est, n_candidates = np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float32), 0
    t_lsh = time.perf_counter()
    if len(pairs):
        sh.write_array(fs, "dedup/pairs.npy", pairs)
        sh.write_frame(fs, "dedup/items.parquet", items_frame(items, pairs))
        ctx.run("verify", lambda f, r: f.isfile(f"dedup/jaccard/{r:05d}.npy"))
        jac = np.concatenate([sh.read_array(fs, f"dedup/jaccard/{r:05d}.npy") for r in range(ctx.tasks)])
    else:
        jac = np.empty(0, dtype=np.float64)

    # 5. filter: the gate's greedy pass in row order
    verify = gate._verify(result, items, pairs, est, exact=jac)
    t_end = time.perf_counter()
    result.metrics = {
        **gate._summary(result, normalized, prior_frame, n_candidates, len(pairs), verify),
        "timings_s": {
            "signatures": round(t_sig - t0, 4), "exact": round(t_exact - t_sig, 4), "lsh": round(t_lsh - t_exact, 4),
            "verify": round(t_end - t_lsh, 4), "total": round(t_end - t0, 4),
        },
        "rows_per_s": round(n / max(t_end - t0, 1e-9), 1),
    }
    return result
