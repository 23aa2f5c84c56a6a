"""The tone score's training: brand answers against the base model's own answers (cached)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.atomic import atomic_write_text
from serve.pipeline import Mode, Pipeline, Route
from tuning.data import load_examples
from tuning.generator import GenerationParams, Message

if TYPE_CHECKING:
    from eval.tone import HeldoutReport, ToneClassifier

log = logging.getLogger(__name__)
DEFAULT_QUESTIONS = 40
CACHE_FORMAT = 1  # bump when the cached file's meaning changes
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class ToneSetup:
    """Where the brand answers come from, how many base answers to ask for, and the cache."""

    data_paths: tuple[Path, ...]  # tone JSONL files: their assistant answers are the positives
    questions: int = DEFAULT_QUESTIONS  # base-model answers generated as negatives
    cache_dir: Path | None = None  # None: always generate
    seed: int = 0  # which questions are sampled; the classifier's split
    base_weights: str | None = None  # sha256 of the base weights, when known (cache key)


@dataclass(frozen=True)
class ToneModel:
    classifier: ToneClassifier
    heldout: HeldoutReport
    info: dict[str, Any]  # for the report's settings: data hashes, counts, cache


class Stopped(Exception):  # noqa: N818 (a signal, not an error)
    """should_stop() said yes between two generations."""


def _prompts(examples: Sequence[Sequence[dict[str, str]]]) -> list[list[Message]]:
    """Each example's turns before its last answer, system messages dropped: the pipeline adds
    its own system prompt, exactly as for the base arm."""
    prompts = []
    for messages in examples:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append([dict(m) for m in messages[:last] if m["role"] != "system"])
    return prompts


def cache_key(
    pipeline: Pipeline,
    setup: ToneSetup,
    prompts: Sequence[Sequence[Message]],
    params: GenerationParams,
) -> str:
    """What the base answers depend on: the generator, its weights, the prompts and decoding."""
    generator = pipeline.generator
    blob = {
        "format": CACHE_FORMAT,
        "generator": [type(generator).__name__, generator.model_id, setup.base_weights],
        "system": pipeline.system_prompt(Route(Mode.BASE), None, ""),
        "prompts": prompts,
        "params": [params.max_new_tokens, params.temperature, params.top_p, params.seed],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()


def base_answers(
    pipeline: Pipeline,
    prompts: Sequence[Sequence[Message]],
    params: GenerationParams,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> list[str]:
    answers = []
    for done, messages in enumerate(prompts):
        if should_stop is not None and should_stop():
            raise Stopped
        answers.append(pipeline.answer(messages, Route(Mode.BASE), params).text)
        if progress is not None:
            progress("tone", done + 1, len(prompts))
    return answers


def _cached(path: Path | None, key: str) -> list[str] | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        log.warning("ignoring unreadable tone cache %s", path)
        return None
    answers = data.get("answers") if isinstance(data, dict) and data.get("key") == key else None
    return [str(a) for a in answers] if isinstance(answers, list) else None


def _save(
    path: Path, key: str, model_id: str, prompts: Sequence[Sequence[Message]], answers: list[str]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"key": key, "model_id": model_id, "prompts": prompts, "answers": answers}
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False))


def train_tone(
    pipeline: Pipeline,
    setup: ToneSetup,
    params: GenerationParams,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ToneModel:
    """Positives: every assistant answer of the tone data. Negatives: the base arm's answers
    (same pipeline, same decoding) to a seeded sample of the tone data's questions, read from
    the cache when the generator, its weights, the questions and the decoding are unchanged."""
    from eval.tone import ToneClassifier  # scikit-learn: loaded only when a run needs it

    datasets = [load_examples(path) for path in setup.data_paths]
    examples = [[dict(m) for m in e.messages] for d in datasets for e in d.examples]
    positives = [m["content"] for e in examples for m in e if m["role"] == "assistant"]
    chosen = random.Random(setup.seed).sample(examples, min(setup.questions, len(examples)))
    prompts = _prompts(chosen)
    key = cache_key(pipeline, setup, prompts, params)
    path = setup.cache_dir / f"tone-negatives-{key[:24]}.json" if setup.cache_dir else None
    negatives = _cached(path, key)
    hit = negatives is not None
    if negatives is None:
        negatives = base_answers(pipeline, prompts, params, progress, should_stop)
        if path is not None:
            _save(path, key, pipeline.generator.model_id, prompts, negatives)
    classifier, heldout = ToneClassifier.train(positives, negatives, seed=setup.seed)
    info = {
        "data": [{"file": d.path.name, "sha256": d.sha256} for d in datasets],
        "positives": len(positives),
        "negatives": len(negatives),
        "questions_seed": setup.seed,
        "cache": {"key": key, "file": path.name if path else None, "hit": hit},
    }
    return ToneModel(classifier, heldout, info)
