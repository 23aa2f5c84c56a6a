"""What `ragtune compare` and `POST /v1/compare` share: data paths, cases, run and write."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.cases import CaseError, CaseSet, load_cases
from eval.html import write_report
from eval.report import Report
from eval.runner import ComparisonError, greedy_params, run_comparison
from eval.tone_baseline import Progress, ToneSetup
from serve.pipeline import Mode, Pipeline
from serve.settings import CHECKOUT, Settings

SHIPPED_CASES = CHECKOUT / "data" / "eval" / "cases.jsonl"
SHIPPED_TONE = (
    CHECKOUT / "data" / "tone" / "brand_voice.jsonl",
    CHECKOUT / "data" / "tone" / "brand_voice_with_context.jsonl",
)


def reports_dir(settings: Settings) -> Path:
    return settings.data_dir / "reports"


def timestamped_dir(settings: Settings) -> Path:
    """<data_dir>/reports/<UTC timestamp>, with a suffix if that second is taken."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder, n = reports_dir(settings) / stamp, 1
    while folder.exists():
        n += 1
        folder = reports_dir(settings) / f"{stamp}-{n}"
    return folder


def load_cases_strict(path: Path) -> CaseSet:
    """A case file with no bad line at all: a comparison on a silently smaller set would mislead.
    Raises CaseError whose `problems` name every bad line."""
    try:
        return load_cases(path, max_bad_fraction=0.0)
    except CaseError as exc:
        if not exc.problems:  # missing, empty: the message says it
            raise
        raise CaseError(f"{path}: {len(exc.problems)} bad line(s)", exc.problems) from None


def cases_from_objects(objects: Sequence[Any]) -> CaseSet:
    """Inline cases (an API body) through the same validation as a file; line n is case n-1."""
    lines = [json.dumps(obj, ensure_ascii=False) for obj in objects]
    with tempfile.TemporaryDirectory(prefix="ragtune-cases-") as folder:
        path = Path(folder) / "cases.jsonl"
        path.write_text("\n".join(lines) + "\n", "utf-8")
        return load_cases_strict(path)


def base_weights_sha256(settings: Settings) -> str | None:
    """The local generator's weights hash (a key of the tone cache); None for other backends."""
    local = settings.generator.backend in ("hf", "auto", "llamacpp")
    if not local or settings.generator.model.lower().endswith(".gguf"):  # no converted folder
        return None
    from tuning.models import resolve_model_dir, weights_sha256

    return weights_sha256(resolve_model_dir(settings.generator.model, settings.models_dir)[0])


def tone_setup(
    settings: Settings, questions: int, data_paths: Sequence[Path] = SHIPPED_TONE
) -> ToneSetup | None:
    """None when `questions` is 0: the run then has no tone score."""
    from eval.tone import MIN_PER_CLASS  # scikit-learn: only when a run is asked for

    if questions <= 0:
        return None
    if questions < MIN_PER_CLASS:
        raise ComparisonError(
            f"{questions} tone question(s) cannot train the tone classifier: ask for at least "
            f"{MIN_PER_CLASS}, or 0 for no tone score"
        )
    missing = [Path(p).name for p in data_paths if not Path(p).is_file()]
    if missing:
        raise ComparisonError(
            f"tone data not found: {', '.join(missing)} (ask for 0 tone questions to run "
            "without a tone score)"
        )
    return ToneSetup(
        tuple(data_paths),
        questions,
        settings.data_dir / "eval_cache",
        base_weights=base_weights_sha256(settings),
    )


@dataclass(frozen=True)
class CompareRequest:
    """One comparison as the CLI or the API asked for it."""

    cases: CaseSet
    arms: tuple[Mode, ...]
    adapter: str | None
    max_tokens: int
    limit: int | None = None
    top_k: int | None = None
    seed: int = 0
    source: str = "file"  # "file", "shipped" or "inline"


def run_and_write(
    pipeline: Pipeline,
    request: CompareRequest,
    tone: ToneSetup | None,
    out_dir: Path,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Report, dict[str, Path]]:
    cases = request.cases.cases[: request.limit] if request.limit else request.cases.cases
    meta: Mapping[str, Any] = {
        "source": request.source,
        "file": request.cases.path.name,
        "file_sha256": request.cases.sha256,
        "limit": request.limit,
    }
    if request.source == "inline":
        meta = {"source": "inline", "limit": request.limit}
    report = run_comparison(
        pipeline,
        cases,
        request.arms,
        request.adapter,
        greedy_params(request.max_tokens, request.seed),
        top_k=request.top_k,
        tone=tone,
        progress=progress,
        should_stop=should_stop,
        cases_meta=meta,
    )
    return report, write_report(report, out_dir)
