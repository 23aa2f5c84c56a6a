"""The `ragtune` command line: ingest, search, info, serve, adapters (and tune)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest.errors import IngestError
from retrieval.embedder import EmbedderError
from retrieval.index import Index, IndexStoreError
from retrieval.indexer import IngestReport, Progress
from retrieval.read import Filters
from retrieval.retriever import QueryError
from serve.services import Services
from serve.settings import Settings

log = logging.getLogger("ragtune")
USER_ERRORS = (IndexStoreError, EmbedderError, QueryError, IngestError, ValueError, OSError)


def _quiet_libraries() -> None:
    """No hub access, no library progress bars: we draw our own."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # OpenMP threads that spin while idle made generation 4-6x slower whenever another thread
    # or process wanted the 2 cores (measured by eval.bench.serve); must precede importing torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "include", None) or getattr(args, "exclude", None):
        ingest = settings.ingest.model_copy(
            update={k: tuple(v) for k in ("include", "exclude") if (v := getattr(args, k))}
        )
        settings = settings.model_copy(update={"ingest": ingest})
    return settings


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    """tqdm bars on a terminal; otherwise a log line every 10% of the files."""
    bars: dict[str, Any] = {}
    state = {"done": 0, "total": 0}

    def update(stage: str, advance: int, total: int | None) -> None:
        if enabled:
            from tqdm import tqdm

            if stage not in bars:
                bars[stage] = tqdm(total=total, desc=stage, unit=stage[:-1], leave=False)
            bars[stage].update(advance)
        elif stage == "files":
            state["total"] = total if total is not None else state["total"]
            before, state["done"] = state["done"], state["done"] + advance
            step = max(1, -(-state["total"] // 10))  # about ten lines per ingest
            if advance and before // step != state["done"] // step:
                log.info("ingest: %d/%d files read", state["done"], state["total"])

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


def _print_report(report: IngestReport) -> None:
    data = report.to_dict()
    for kind in ("documents", "chunks"):
        counts = ", ".join(f"{v} {k}" for k, v in data[kind].items())
        print(f"{kind:<10} {counts}")
    for failure in report.failures:
        print(f"failed     {failure.path} ({failure.code}): {failure.reason}")
    print(
        f"index version {report.index_version}; {report.embedded} chunks embedded "
        f"in {report.seconds:.1f} s"
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = _settings(args)
    services = Services.build(settings, allow_embedder_change=args.reembed)
    show_bars = sys.stderr.isatty() and not args.json
    with _progress(show_bars) as progress:
        report = services.indexer(progress).ingest(
            [Path(p) for p in args.paths], sync=args.sync, reembed=args.reembed
        )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    return 1 if report.failures else 0


def cmd_search(args: argparse.Namespace) -> int:
    services = Services.build(_settings(args))
    filters = Filters(tuple(args.document_id or ()), args.source)
    hits = services.retriever().retrieve(args.query, args.k, filters, args.mode)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits]))
        return 0
    if not hits:
        print("no results")
    for hit in hits:
        where = hit.document_id + (f" p.{hit.page}" if hit.page else "")
        text = " ".join(hit.text.split())
        print(f"{hit.rank}. [{where}] score {hit.score:.4f}\n   {text[:300]}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    settings = _settings(args)
    info = Index.open_existing(settings.index_dir, settings.index).info()  # no embedder to load
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:<18} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune", description="Answer from your documents, in your voice."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add, update (and with --sync remove) documents")
    p.add_argument("paths", nargs="+", help="files or folders (folders recurse)")
    p.add_argument("--sync", action="store_true", help="remove documents whose files are gone")
    p.add_argument("--reembed", action="store_true", help="re-embed all (embedder changed)")
    p.add_argument("--include", action="append", help="glob of files to read (repeatable)")
    p.add_argument("--exclude", action="append", help="glob of files to skip (repeatable)")
    p.add_argument("--json", action="store_true", help="print the diff as one JSON object")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="retrieve the chunks that best match a question")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=None, help="number of hits")
    p.add_argument("--mode", choices=["dense", "keyword", "hybrid"], default=None)
    p.add_argument("--document-id", action="append", help="only this document (repeatable)")
    p.add_argument("--source", help="only sources matching this glob, e.g. '*/manuals/*'")
    p.add_argument("--json", action="store_true", help="print hits as a JSON list")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("info", help="show the index manifest and size")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    from serve import cli_adapters, cli_compare, cli_server, cli_tuning

    cli_server.add_parser(sub)
    cli_tuning.add_parser(sub)
    cli_adapters.add_parser(sub)
    cli_compare.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    _quiet_libraries()
    try:
        if getattr(args, "needs_settings", False):
            return int(args.func(args, _settings(args)))
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except USER_ERRORS as exc:
        log.debug("details", exc_info=True)
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
