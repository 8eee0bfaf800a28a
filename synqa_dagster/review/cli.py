"""``synqa review ...``: serve the review app, register reviewers, show progress, move CSV files.

    synqa review serve [--host 127.0.0.1] [--port 8765] [--store URL]
    synqa review add-reviewer NAME [--store URL]       prints the reviewer's sign-in token (shown once)
    synqa review progress [BATCH] [--json] [--min-pair-items N] [--store URL]
                                                       per batch: sampled, decided, awaiting second / third review,
                                                       reviewer agreement (Cohen's kappa, raw, per reviewer pair)
    synqa review export BATCH PATH [--reviewer NAME] [--store URL]
                                                       items still needing a decision to a CSV for offline review
                                                       (--reviewer: leave out the items NAME decided already)
    synqa review import PATH [--store URL]             record the decisions of a filled-in CSV
    synqa review export-decisions BATCH PATH [--store URL]
                                                       every reviewer's decision per sampled row (owner's view:
                                                       shows verdicts, do not hand it to reviewers)

Store URL: ``--store``, else ``$SYNQA_REVIEW_STORE``, else ``sqlite:///<instance>/review/review.db``.
Secrets (created on first use): ``<instance>/keys/reviewer_hmac.key`` (pseudonymises reviewer ids in decisions)
and ``<instance>/keys/review_session.key`` (signs session cookies); ``<instance>`` is
:func:`synqa_dagster.paths.instance_dir`.
"""

from __future__ import annotations

import argparse
import json
import sys

from synqa_dagster.paths import default_review_store_url
from synqa_dagster.review.agreement import DEFAULT_MIN_PAIR_ITEMS, agreement_lines, agreement_report
from synqa_dagster.review.csv_io import export_csv, export_decisions_csv, import_csv
from synqa_dagster.review.identity import reviewer_hasher
from synqa_dagster.review.store import ReviewStore, UnknownBatchError, redact_url

STORE_ENV = "SYNQA_REVIEW_STORE"


def default_store_url() -> str:
    """``$SYNQA_REVIEW_STORE``, else ``sqlite:///<instance>/review/review.db``."""
    return default_review_store_url()


def configure_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``review`` command (with its sub-commands) to ``subparsers``; sets ``func=run``."""
    review = subparsers.add_parser("review", help="human review of sampled rows (web app, reviewers, CSV)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    review.set_defaults(func=run)
    sub = review.add_subparsers(dest="review_command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("--store", help=f"review store URL (default ${STORE_ENV} or the instance's SQLite file)")
        return parser

    p = add("serve", "serve the review web app")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--secure-cookies", action="store_true", help="mark cookies Secure (behind HTTPS)")
    p = add("add-reviewer", "register a reviewer (or re-issue their token) and print the token")
    p.add_argument("name", help="reviewer id used to sign in (stored; decisions only keep its HMAC)")
    p = add("progress", "review progress and reviewer agreement of every batch, or one")
    p.add_argument("batch", nargs="?")
    p.add_argument("--json", action="store_true", help="print the agreement report of each batch as JSON")
    p.add_argument("--min-pair-items", type=int, default=DEFAULT_MIN_PAIR_ITEMS,
                   help=f"reviewer pairs with fewer double-reviewed rows are marked as too few "
                        f"(default {DEFAULT_MIN_PAIR_ITEMS})")
    p = add("export", "write a batch's items that still need a decision to a CSV file")
    p.add_argument("batch")
    p.add_argument("path")
    p.add_argument("--reviewer", help="the reviewer the file is for: leave out the items they decided already")
    p = add("import", "record the decisions of a filled-in CSV file (all or nothing)")
    p.add_argument("path")
    p = add("export-decisions", "write every reviewer's decision per sampled row to a CSV file (owner's view)")
    p.add_argument("batch")
    p.add_argument("path")
    return review


def run(args: argparse.Namespace) -> int:
    """Run the ``review`` sub-command in ``args``; returns the exit status (0 ok, 1 failed, 2 bad input)."""
    url = args.store or default_store_url()
    command = args.review_command
    if command == "serve":
        from synqa_dagster.review.webapp import serve  # here: starlette, jinja2 and uvicorn only for `serve`

        print(f"review app on http://{args.host}:{args.port}/ (store {_redacted(url)})", flush=True)
        serve(url, args.host, args.port, secure_cookies=args.secure_cookies)
        return 0
    try:
        store = ReviewStore.from_url(url)  # a malformed --store URL is bad input too (exit 2, no traceback)
        if command == "add-reviewer":
            token = store.add_reviewer(args.name)
            print(f"reviewer {args.name}: token (shown once, keep it secret):\n{token}")
            return 0
        if command == "progress":
            if args.min_pair_items < 1:
                raise ValueError(f"--min-pair-items must be at least 1; got {args.min_pair_items}")
            return _print_progress(store, args.batch, as_json=args.json, min_pair_items=args.min_pair_items)
        if command == "export":
            reviewer = reviewer_hasher()(args.reviewer) if args.reviewer else None
            count = export_csv(store, args.batch, args.path, reviewer_hmac=reviewer)
            mine = f" not yet decided by {args.reviewer}" if args.reviewer else ""
            print(f"exported {count} items needing a decision{mine} of batch {args.batch} to {args.path}")
            return 0
        if command == "export-decisions":
            count = export_decisions_csv(store, args.batch, args.path)
            print(f"exported the decisions on {count} sampled rows of batch {args.batch} to {args.path} "
                  f"(shows every reviewer's verdict: not for reviewers)")
            return 0
        if command == "import":
            result = import_csv(store, args.path, reviewer_hasher())
            for error in result.errors:
                print(error, file=sys.stderr)
            print(f"recorded {result.recorded}, already decided {result.already_decided}, "
                  f"left blank {result.skipped}, errors {len(result.errors)}")
            return 1 if result.errors else 0
    except UnknownBatchError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    except ValueError as exc:  # InputError included: its message names the file, line and field
        print(str(exc), file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled review command {command!r}")  # argparse restricts the choices


def _print_progress(store, batch: str | None, *, as_json: bool = False,
                    min_pair_items: int = DEFAULT_MIN_PAIR_ITEMS) -> int:
    progress = [store.progress(batch)] if batch else store.all_progress()
    if as_json:
        reports = [agreement_report(store, p.batch, p.sample_version, min_pair_items=min_pair_items)
                   for p in progress]
        print(json.dumps(reports, indent=2, sort_keys=True))
        return 0
    if not progress:
        print("no batch has been sampled for review yet")
    for p in progress:
        state = "complete" if p.complete else "in progress"
        due = f", due {p.deadline:%Y-%m-%d %H:%M} UTC" if p.deadline else ""
        print(f"{p.batch}: {p.decided}/{p.total} decided ({p.accepted} accepted, {p.rejected} rejected), "
              f"{state}, sample {p.sample_version}{due}")
        print(f"  sampled {p.total}, decided {p.decided}, awaiting second review {p.awaiting_second}, "
              f"awaiting third review {p.awaiting_third}, undecided {p.undecided}")
        report = agreement_report(store, p.batch, p.sample_version, min_pair_items=min_pair_items)
        for line in agreement_lines(report):
            print(line)
    return 0


def _redacted(url: str) -> str:
    return redact_url(url)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m synqa_dagster.review.cli review ...``)."""
    parser = argparse.ArgumentParser(prog="synqa")
    configure_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
