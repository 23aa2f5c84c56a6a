"""Shared by the comparison tests: cases about the tiny corpus, a small tone file, a fast stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from eval.cases import EvalCase
from eval.tone_baseline import ToneSetup
from serve.services import Services
from tests.serve.conftest import make_settings, publish_adapter, write_corpus

CASES = (
    EvalCase("h1", "When does the Zephyrine harbor festival open?", "On the ninth of June.",
             ("harbor.md",), ("new",), ("ninth of June",)),
    EvalCase("h2", "On which day does the harbor festival in Zephyrine start?",
             "On the ninth of June.", ("harbor.md",), ("new", "paraphrase"), ("ninth of June",),
             paraphrase_of="h1"),
    EvalCase("t1", "Which teas do the Ferncombe tea rooms serve?", "Lapsang souchong and oolong.",
             ("tea.txt",), ("new",), ("oolong",)),
    EvalCase("b1", "How much does a Quillwort bicycle cost per day?", "Twelve euros a day.",
             ("guides/bikes.md",), ("new",), ("12 euros",)),
    EvalCase("k1", "What is the capital of France?", "Paris.", (), ("known",), ("Paris",)),
)  # fmt: skip
BRAND = "Hey there, rider! {}. Keep it simple and you will love it.\nRide bright, the Marlowe & Finch crew"
TOPICS = ["Check your tyres weekly", "Charge the battery after rides", "Lock the frame",
          "Clean the chain often", "Use lights at night", "Brake early in rain",
          "Store it indoors", "Plan a quiet route", "Carry a spare tube", "Wear a helmet"]  # fmt: skip


def write_tone(path: Path) -> Path:
    """A small brand-voice file: ten questions with answers in the voice."""
    rows = [{"messages": [{"role": "user", "content": f"Any tip on this: {t.lower()}?"},
                          {"role": "assistant", "content": BRAND.format(t)}]} for t in TOPICS]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def fast_services(tmp_path: Path) -> Iterator[Services]:
    """Hash embedder, echo generator, the tiny corpus ingested, adapter brand@v1 published."""
    settings = make_settings(tmp_path)
    write_corpus(tmp_path / "corpus")
    built = Services.build(settings)
    built.indexer().ingest([tmp_path / "corpus"], sync=True)
    publish_adapter(built.registry, "brand")
    yield built
    built.index.close()


def small_tone(tmp_path: Path) -> ToneSetup:
    return ToneSetup((write_tone(tmp_path / "tone.jsonl"),), questions=6,
                     cache_dir=tmp_path / "eval_cache")  # fmt: skip
