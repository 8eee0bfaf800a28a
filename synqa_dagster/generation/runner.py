"""Run one batch's distilabel pipeline in a clean child process.

distilabel starts its steps with ``multiprocessing``; forking that from a process with live threads (Dagster's
executor, log capture, gRPC) can deadlock, so the ``generated_candidates`` asset runs the pipeline here, in a
fresh interpreter: ``python -m synqa_dagster.generation.runner --recipe R --seeds S --batch B --created-at T
--cache C --out O``. Inputs and outputs are Parquet/JSON files; the exit status tells success.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from synqa_dagster.config import Recipe
from synqa_dagster.generation.pipeline import GenerationStats


DEFAULT_TIMEOUT_S = 3600


class GenerationFailed(RuntimeError):
    """The generation child process failed; the message carries the tail of its output."""


def run_in_subprocess(
    recipe: Recipe,
    seeds: pd.DataFrame,
    batch: str,
    created_at: str,
    cache_root: Path,
    log=print,
) -> tuple[pd.DataFrame, GenerationStats]:
    """Generate candidates for ``batch`` in a child interpreter; stream its log lines to ``log``.

    The child gets the exact validated recipe the parent holds (as JSON, with its hash to check), never a
    re-read of the YAML that may have been edited since the definitions were loaded.
    """
    with tempfile.TemporaryDirectory(prefix="synqa-gen-") as tmp:
        seeds_path, out_path, stats_path, recipe_path = (
            Path(tmp) / n for n in ("seeds.parquet", "rows.parquet", "stats.json", "recipe.json")
        )
        seeds.to_parquet(seeds_path)
        recipe_path.write_text(recipe.model_dump_json())
        cmd = [
            sys.executable, "-m", "synqa_dagster.generation.runner",
            "--recipe", str(recipe_path), "--recipe-hash", recipe.content_hash(), "--seeds", str(seeds_path), "--batch", batch, "--created-at", created_at,
            "--cache", str(cache_root), "--out", str(out_path), "--stats", str(stats_path),
        ]
        env = os.environ.copy()
        env.setdefault("PYTHONWARNINGS", "ignore")  # third-party deprecation chatter, not our log
        # Own session: the watchdog kills distilabel's step workers too, not just the child.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        timeout = float(os.environ.get("SYNQA_GENERATION_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        watchdog = threading.Timer(timeout, _kill_group, args=(proc,))  # a stalled pipeline must fail, not hang
        watchdog.daemon = True
        watchdog.start()
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or "Generating train split" in line:
                continue
            tail = (tail + [line])[-40:]
            log(line)
        returncode = proc.wait()
        timed_out = not watchdog.is_alive() and returncode != 0
        watchdog.cancel()
        if returncode != 0:
            why = f"timed out after {timeout:.0f} s (SYNQA_GENERATION_TIMEOUT_S)" if timed_out else f"exit {returncode}"
            raise GenerationFailed(f"generation for batch {batch} failed ({why}):\n" + "\n".join(tail))
        stats = GenerationStats(**json.loads(stats_path.read_text()))
        return pd.read_parquet(out_path), stats


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("recipe", "recipe-hash", "seeds", "batch", "created-at", "cache", "out", "stats"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)

    from synqa_dagster.config import load_recipe
    from synqa_dagster.corpus.taxonomy import load_taxonomy
    from synqa_dagster.generation.pipeline import generate_candidates

    recipe = load_recipe(args.recipe)
    if recipe.content_hash() != args.recipe_hash:
        raise SystemExit(f"recipe hash mismatch: child {recipe.content_hash()} != parent {args.recipe_hash}")
    spec = recipe.seed_corpus
    taxonomy = load_taxonomy(recipe.resolved(spec.taxonomy_dir), spec.taxonomy_version)
    seeds = pd.read_parquet(args.seeds)
    rows, stats = generate_candidates(recipe, seeds, taxonomy, args.batch, args.created_at, Path(args.cache))
    rows.to_parquet(args.out)
    Path(args.stats).write_text(json.dumps(asdict(stats)))
    print(f"generated {len(rows)} rows in {stats.seconds:.1f} s ({stats.completion_tokens} completion tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
