"""`retrieval.bert`: which models it takes on (the rest go to sentence-transformers), and (slow)
that it gives sentence-transformers' vectors on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.bert import plain_layout
from retrieval.config import EmbedderConfig
from retrieval.embedder import SentenceTransformerEmbedder, packaged_model_dir


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """The packaged model's small files, and an empty stand-in for its weights."""
    source, copy = packaged_model_dir(), tmp_path / "model"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    (copy / "model.safetensors").write_bytes(b"")
    return copy


def edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_the_packaged_model_is_of_the_plain_layout(model_copy: Path) -> None:
    assert plain_layout(packaged_model_dir()) == ("mean", 256)
    edit(model_copy / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False,
         pooling_mode_cls_token=True)  # fmt: skip
    assert plain_layout(model_copy) == ("cls", 256)


@pytest.mark.parametrize(
    "change",
    [
        "dense layer",
        "max pooling",
        "two pooling modes",
        "another architecture",
        "another activation",
        "relative positions",
        "lower-cased by sentence-transformers",
        "no safetensors",
        "no modules.json",
        "broken modules.json",
    ],
)
def test_anything_else_is_left_to_sentence_transformers(model_copy: Path, change: str) -> None:
    pooling, config = model_copy / "1_Pooling" / "config.json", model_copy / "config.json"
    if change == "dense layer":
        modules = json.loads((model_copy / "modules.json").read_text())
        modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                           "type": "sentence_transformers.models.Dense"})  # fmt: skip
        (model_copy / "modules.json").write_text(json.dumps(modules))
    elif change == "max pooling":
        edit(pooling, pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    elif change == "two pooling modes":
        edit(pooling, pooling_mode_cls_token=True)
    elif change == "another architecture":
        edit(config, model_type="xlm-roberta")
    elif change == "another activation":
        edit(config, hidden_act="gelu_new")
    elif change == "relative positions":
        edit(config, position_embedding_type="relative_key")
    elif change == "lower-cased by sentence-transformers":
        edit(model_copy / "sentence_bert_config.json", do_lower_case=True)
    elif change == "no safetensors":
        (model_copy / "model.safetensors").unlink()
    elif change == "no modules.json":
        (model_copy / "modules.json").unlink()
    else:
        (model_copy / "modules.json").write_text("[{")
    assert plain_layout(model_copy) is None


TEXTS = [
    "How long is the battery warranty?",
    "   leading and trailing spaces   ",
    "x",
    "Ünïcödé, 日本語 and emoji 🚲 in one line.",
    "Torque the stem bolts to 4.5 Nm; the seat post clamp to 6 Nm. " * 40,  # over 256 tokens
    *(f"Passage {i}: the battery lasts {i * 100} cycles. " * (i % 7 + 1) for i in range(40)),
]


@pytest.mark.slow
def test_same_vectors_tokens_and_limits_as_sentence_transformers() -> None:
    ours = SentenceTransformerEmbedder(EmbedderConfig(batch_size=8))
    theirs = SentenceTransformerEmbedder(EmbedderConfig(batch_size=8, fast_load=False))
    assert (ours.loader, theirs.loader) == ("torch", "sentence-transformers")
    assert (ours.model_id, ours.dim, ours.max_tokens) == (
        theirs.model_id,
        theirs.dim,
        theirs.max_tokens,
    )
    a, b = ours.embed(TEXTS), theirs.embed(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert np.abs(a - b).max() < 1e-5
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # One text alone gets the same vector as inside a batch (padding is masked out).
    assert np.abs(ours.embed([TEXTS[0]])[0] - a[0]).max() < 1e-5
    for text in TEXTS[:5]:
        assert ours.token_starts(text) == theirs.token_starts(text)


@pytest.mark.slow
def test_ranking_vectors_are_the_stored_ones_within_bfloat16_rounding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retrieval import embedder as module

    fast = SentenceTransformerEmbedder(EmbedderConfig(batch_size=8))
    stored = fast.embed(TEXTS)
    ranking = fast.embed_for_ranking(TEXTS)
    assert ranking.dtype == np.float32 and ranking.shape == stored.shape
    assert np.allclose(np.linalg.norm(ranking, axis=1), 1.0, atol=1e-5)
    cosines = (ranking * stored).sum(axis=1)
    assert cosines.min() > 0.995  # rounding, not another model
    if module.multiplies_bfloat16():
        assert np.abs(ranking - stored).max() > 1e-6  # the bfloat16 pass really ran
    # Switched off, or on a CPU without bfloat16 products: the stored vectors themselves.
    off = SentenceTransformerEmbedder(EmbedderConfig(batch_size=8, ranking_bfloat16=False))
    assert np.array_equal(off.embed_for_ranking(TEXTS), stored)
    monkeypatch.setattr(module, "multiplies_bfloat16", lambda: False)
    plain_cpu = SentenceTransformerEmbedder(EmbedderConfig(batch_size=8))
    assert np.array_equal(plain_cpu.embed_for_ranking(TEXTS), stored)
