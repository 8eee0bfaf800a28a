"""The ``synqa`` command: run the demo batch, list and rebuild stale batches.

    synqa demo [--batch KEY]         materialize one batch end to end and print a one-screen summary
    synqa batches                    every batch with the recipe hash it was built with
    synqa stale                      batches built with a recipe other than the current one
    synqa backfill-stale [--dry-run] rebuild those batches (in-process, one run per batch)
    synqa backfill START [END]       materialize a range of batches (in-process)
    synqa apply-review [--batch KEY] finish a batch after human review (human_review + everything downstream)
    synqa verify FOLDER              check a handover folder: signature, Merkle root, every row and file
    synqa audit DATASET --reference REAL --out DIR   run every gate and check on data made elsewhere
    synqa review serve|add-reviewer|progress|export|import   the human review web app and store
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from synqa_dagster.paths import PROJECT_ROOT
from synqa_dagster.stages import STAGES


def _ensure_instance_env() -> None:
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    home = Path(os.environ["DAGSTER_HOME"])
    if not (home / "dagster.yaml").is_file():
        raise SystemExit(f"DAGSTER_HOME={home} has no dagster.yaml")
    if home.resolve() == PROJECT_ROOT.resolve():
        os.chdir(PROJECT_ROOT)  # dagster.yaml paths are relative to the project root


def _context(args: argparse.Namespace):
    import warnings

    import dagster as dg

    # Partitioned asset checks are a Dagster preview feature we rely on deliberately (one check per batch).
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from synqa_dagster.config import load_recipe
    from synqa_dagster.definitions import BATCH_JOB, build_definitions

    _ensure_instance_env()
    defs = build_definitions(args.recipe, args.gates)
    recipe = load_recipe(args.recipe)
    instance = dg.DagsterInstance.get()
    return defs, defs.resolve_job_def(BATCH_JOB), recipe, instance


def run_batch(job, instance, batch: str):
    """Materialize every asset of ``job`` for ``batch`` in this process; returns (result, seconds).

    The run is a transaction (:mod:`synqa_dagster.runs`): it publishes its outputs only if no step failed. One
    run per batch: raises :class:`~synqa_dagster.transaction.BatchBusy` (before anything starts) when another run
    holds the batch; this process holds the batch lock for the whole run.
    """
    from synqa_dagster import runs
    from synqa_dagster.transaction import BatchBusy, BatchLock

    reason = runs.batch_busy_reason(instance, batch)
    if reason is not None:
        raise BatchBusy(f"{reason}; not starting another run. Wait for it to finish, or stop it.")
    started = time.perf_counter()
    run_config = {"loggers": {"console": {"config": {"log_level": os.environ.get("SYNQA_LOG_LEVEL", "INFO")}}}}
    with BatchLock(runs.locks_dir(), batch).held(f"synqa {' '.join(sys.argv[1:3]) or 'run'}"):
        result = job.execute_in_process(partition_key=batch, instance=instance, raise_on_error=False, run_config=run_config)
    return result, time.perf_counter() - started


def _refused(exc: Exception) -> int:
    print(f"synqa: {exc}", file=sys.stderr)
    return 2


def _run_with_summary(defs, job, instance, batch: str):
    """Run ``job`` for ``batch`` and print the one-screen summary (a failed run's says it was rolled back);
    returns the result, or None when another run holds the batch (the refusal is printed)."""
    from synqa_dagster.summary import batch_summary
    from synqa_dagster.transaction import BatchBusy

    try:
        result, seconds = run_batch(job, instance, batch)
    except BatchBusy as exc:
        _refused(exc)
        return None
    print(batch_summary(defs, batch, seconds, result.get_asset_check_evaluations(),
                        failed_run=None if result.success else result.run_id))
    return result


def _batch_range(partitions) -> str:
    keys = partitions.get_partition_keys()
    return f"{keys[0]} .. {keys[-1]}" if keys else "none yet"


def cmd_demo(args: argparse.Namespace) -> int:
    defs, job, recipe, instance = _context(args)
    partitions = job.partitions_def
    batch = args.batch or partitions.get_last_partition_key()
    if batch is None or not partitions.has_partition_key(batch):
        print(f"unknown batch {batch!r}: batches are {_batch_range(partitions)}", file=sys.stderr)
        return 2
    print(f"synqa demo: recipe {recipe.name} v{recipe.version} (hash {recipe.content_hash()}), batch {batch}")
    print(f"            instance {os.environ['DAGSTER_HOME']}; generator {recipe.generator.backend}/{recipe.generator.model}")
    result = _run_with_summary(defs, job, instance, batch)
    if result is None:
        return 2
    if not result.success:
        print("\nthe batch run FAILED and was rolled back; see the log above or the run in the Dagster UI (make ui)",
              file=sys.stderr)
        return 1
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    from synqa_dagster.batches import latest_batch_versions

    _, _, recipe, instance = _context(args)
    current = recipe.content_hash()
    versions = latest_batch_versions(instance)
    if not versions:
        print("no batches materialized yet")
    for v in versions.values():
        flag = "current" if v.recipe_hash == current else "STALE"
        print(f"{v.batch}  recipe {v.recipe_hash}  {flag}  run {v.run_id[:8]}")
    return 0


def cmd_stale(args: argparse.Namespace) -> int:
    from synqa_dagster.batches import stale_batches

    _, _, recipe, instance = _context(args)
    stale = stale_batches(instance, recipe.content_hash())
    print(f"current recipe hash: {recipe.content_hash()}")
    if not stale:
        print("no stale batches")
    for v in stale:
        print(f"{v.batch}  built with recipe {v.recipe_hash}")
    return 0


def cmd_backfill_stale(args: argparse.Namespace) -> int:
    from synqa_dagster.batches import stale_batches
    from synqa_dagster.transaction import BatchBusy

    _, job, recipe, instance = _context(args)
    stale = stale_batches(instance, recipe.content_hash())
    if not stale:
        print(f"no stale batches (recipe {recipe.content_hash()})")
        return 0
    failed = 0
    for v in stale:
        if not job.partitions_def.has_partition_key(v.batch):
            print(f"skipping {v.batch}: not a batch of the current cadence ({_batch_range(job.partitions_def)})")
            continue
        if args.dry_run:
            print(f"would rebuild {v.batch} (recipe {v.recipe_hash} -> {recipe.content_hash()})")
            continue
        try:
            result, seconds = run_batch(job, instance, v.batch)
        except BatchBusy as exc:
            _refused(exc)
            failed += 1
            continue
        print(f"rebuilt {v.batch}: {'ok' if result.success else 'FAILED (rolled back)'} in {seconds:.0f} s")
        failed += not result.success
    return 1 if failed else 0


def cmd_backfill(args: argparse.Namespace) -> int:
    _, job, _, instance = _context(args)
    keys = job.partitions_def.get_partition_keys()
    end = args.end or args.start
    if args.start not in keys or end not in keys:
        print(f"unknown batch; batches are {_batch_range(job.partitions_def)}", file=sys.stderr)
        return 2
    if keys.index(args.start) > keys.index(end):
        print(f"empty range: {args.start} comes after {end}", file=sys.stderr)
        return 2
    selected = keys[keys.index(args.start): keys.index(end) + 1]
    failed = 0
    from synqa_dagster.transaction import BatchBusy

    for batch in selected:  # oldest first: the dedup index of batch k only holds batches before k
        try:
            result, seconds = run_batch(job, instance, batch)
        except BatchBusy as exc:
            _refused(exc)
            failed += 1
            continue
        print(f"{batch}: {'ok' if result.success else 'FAILED (rolled back)'} in {seconds:.0f} s")
        failed += not result.success
    return 1 if failed else 0


def cmd_apply_review(args: argparse.Namespace) -> int:
    import dagster as dg

    from synqa_dagster.definitions import REVIEW_JOB

    defs, job, _, instance = _context(args)
    review_job = defs.resolve_job_def(REVIEW_JOB)
    batch = args.batch or job.partitions_def.get_last_partition_key()
    if batch is None or not job.partitions_def.has_partition_key(batch):
        print(f"unknown batch {batch!r}: batches are {_batch_range(job.partitions_def)}", file=sys.stderr)
        return 2
    result = _run_with_summary(defs, review_job, instance, batch)
    if result is None:
        return 2
    human = [dg.AssetKey(s.asset) for s in STAGES if not s.automatic]
    if result.success and not any(e.asset_key in human for e in result.get_asset_materialization_events()):
        print(f"\nbatch {batch} is HELD: its review sample is not complete and its deadline has not passed "
              "(review.block_until_complete); nothing was shipped", file=sys.stderr)
        return 1
    return 0 if result.success else 1


def cmd_models(args: argparse.Namespace) -> int:
    """`synqa models distill`: distil (or load) the static embedding model the gate config's route uses."""
    import json as _json
    import shutil

    from synqa_dagster import embedding as emb
    from synqa_dagster.config import load_gate_config

    gates = load_gate_config(getattr(args, "gates", None))
    st = gates.embedding.static
    from synqa_dagster.paths import resolve_path

    source = str(resolve_path(gates.embedding_model_path)) if gates.embedding_model_path else None
    model = emb.StaticEmbedder(source_path=source, pca_dims=st.pca_dims, sif_coefficient=st.sif_coefficient,
                               max_length=st.max_length)
    if args.force and model.cache_dir.exists():
        shutil.rmtree(model.cache_dir)
    before = emb.DISTILL_COUNT["n"]
    model.model  # noqa: B018 - distil or load
    man = model.manifest()
    state = "distilled" if emb.DISTILL_COUNT["n"] > before else "cached"
    print(_json.dumps({"model_id": model.model_id, "path": str(model.cache_dir), "state": state, "dim": model.dim,
                       "distill_seconds": man.get("distill_seconds"), "route": gates.embedding.route}))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from synqa_dagster.lineage.verify import HandoverAbsent, batch_of, verify_location

    folder = args.folder if args.folder.startswith("s3://") else Path(args.folder)
    if isinstance(folder, Path) and not folder.is_dir():
        print(f"not a folder: {folder}", file=sys.stderr)
        return 2
    # A batch folder's name says which batch it must hold: a complete pack of another batch copied here fails.
    expected = args.batch or batch_of(folder)
    try:
        report = verify_location(folder, trusted_public_key=Path(args.public_key) if args.public_key else None,
                                 expected_batch=expected)
    except HandoverAbsent as exc:  # on S3: no signed manifest under the prefix
        print(f"not a handover: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synqa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", help="recipe YAML (default recipes/demo.yaml or $SYNQA_RECIPE)")
    parser.add_argument("--gates", help="gate-config YAML (default gates/default.yaml or $SYNQA_GATES)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="materialize one batch end to end and print a summary")
    p.add_argument("--batch", help="batch (partition key); default: the newest complete batch")
    p.set_defaults(func=cmd_demo)
    sub.add_parser("batches", help="list batches and their recipe hashes").set_defaults(func=cmd_batches)
    sub.add_parser("stale", help="list batches built with another recipe").set_defaults(func=cmd_stale)
    p = sub.add_parser("backfill-stale", help="rebuild batches built with another recipe")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_backfill_stale)
    p = sub.add_parser("backfill", help="materialize a range of batches, oldest first")
    p.add_argument("start")
    p.add_argument("end", nargs="?")
    p.set_defaults(func=cmd_backfill)
    p = sub.add_parser("apply-review", help="apply human review decisions to a batch and rebuild what follows")
    p.add_argument("--batch", help="batch (partition key); default: the newest complete batch")
    p.set_defaults(func=cmd_apply_review)
    p = sub.add_parser("models", help="prepare local models: `synqa models distill` builds the static embedding model")
    p.add_argument("action", choices=["distill"], help="distill: the static model2vec model of the configured route")
    p.add_argument("--force", action="store_true", help="distil again even if a valid cached copy exists")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("verify", help="verify a handover folder (signature, Merkle root, rows, files)")
    p.add_argument("folder", help="a handover folder, or s3://bucket/prefix/handover/batch=<key>")
    p.add_argument("--public-key", help="trusted Ed25519 public key (PEM); default: the folder's signing_key.pub")
    p.add_argument("--batch", help="the batch the folder must hold")
    p.set_defaults(func=cmd_verify)
    from synqa_dagster import audit as audit_cli
    from synqa_dagster.review import cli as review_cli

    audit_cli.configure_parser(sub)
    review_cli.configure_parser(sub)
    args = parser.parse_args(argv)
    # Relative config paths mean the user's working directory (the CLI later runs from the project root).
    for attr, env in (("recipe", "SYNQA_RECIPE"), ("gates", "SYNQA_GATES")):
        value = getattr(args, attr) or os.environ.get(env)
        if value:
            setattr(args, attr, str(Path(value).expanduser().resolve()))
            os.environ[env] = getattr(args, attr)
    func = getattr(args, "func", None) or {"audit": audit_cli.run, "review": review_cli.run}[args.command]
    from synqa_dagster.errors import cli_errors  # bad input files: "synqa: error: FILE: line N: ...", exit 2

    return int(cli_errors(func)(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
