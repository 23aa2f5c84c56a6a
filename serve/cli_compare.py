"""`ragtune compare`: base / RAG / tuned / RAG+tuned on the same cases, with a report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eval.cases import CaseError
from eval.report import format_summary
from eval.runner import DEFAULT_MAX_TOKENS, check_arms, parse_arms
from eval.session import (
    SHIPPED_CASES,
    SHIPPED_TONE,
    CompareRequest,
    load_cases_strict,
    run_and_write,
    timestamped_dir,
    tone_setup,
)
from eval.tone_baseline import DEFAULT_QUESTIONS
from serve.services import Services
from serve.settings import Settings

STAGES = {"tone": "base answers for the tone classifier", "questions": "questions"}


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A tqdm bar per stage on a terminal; nothing otherwise (the summary follows)."""
    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not enabled:
            return
        from tqdm import tqdm

        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=STAGES.get(stage, stage), leave=False)
        bars[stage].n = done
        bars[stage].refresh()

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


def _bad_cases(exc: CaseError) -> int:
    print(f"ragtune: error: {exc}", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    arms = parse_arms(args.modes or ("base,rag,tuned,rag+tuned" if args.adapter else "base,rag"))
    check_arms(arms, args.adapter)
    try:
        cases = load_cases_strict(Path(args.cases))
    except CaseError as exc:
        return _bad_cases(exc)
    request = CompareRequest(
        cases, arms, args.adapter, args.max_tokens, args.limit, args.top_k, args.seed
    )
    pipeline = Services.build(settings).pipeline()
    tone = tone_setup(
        settings, args.tone_questions, [Path(p) for p in args.tone_data or SHIPPED_TONE]
    )
    out = Path(args.out) if args.out else timestamped_dir(settings)
    with progress_bars(sys.stderr.isatty() and not args.json) as bar:
        report, paths = run_and_write(pipeline, request, tone, out, progress=bar)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(format_summary(report.to_dict()))
        print(f"\nreport: {paths['html']}\n        {paths['json']}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare base, rag, tuned and rag+tuned on eval cases")
    p.add_argument(
        "--cases",
        default=str(SHIPPED_CASES),
        help="JSONL evaluation cases (default: the shipped data/eval/cases.jsonl)",
    )
    p.add_argument("--adapter", metavar="NAME[@VERSION]", help="adapter of the tuned arms")
    p.add_argument(
        "--modes", help="comma-separated arms (default: all four with --adapter, else base,rag)"
    )
    p.add_argument(
        "--out", metavar="DIR", help="report folder (default: <data_dir>/reports/<timestamp>)"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--limit", type=_positive, help="only the first N cases")
    p.add_argument(
        "--max-tokens",
        type=_positive,
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens per answer, the same for every arm (default {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument("--top-k", type=_positive, help="passages retrieved per question")
    p.add_argument("--seed", type=_count, default=0, help="generation and bootstrap seed")
    p.add_argument(
        "--tone-questions",
        type=_count,
        default=DEFAULT_QUESTIONS,
        help="base-model answers the tone classifier learns from (0: no tone score)",
    )
    p.add_argument(
        "--tone-data",
        action="append",
        metavar="FILE",
        help="brand-voice JSONL (repeatable; default: the shipped data/tone files)",
    )
    p.set_defaults(func=cmd_compare, needs_settings=True)
