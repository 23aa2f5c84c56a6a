"""`ragtune compare`: report files, the summary, --json, exit codes; and once on the real model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from serve.cli import main
from serve.services import Services
from serve.settings import Settings
from tests.conftest import CORPUS, EVAL_CASES, ROOT
from tests.eval.compare_fixtures import CASES, write_tone
from tests.serve.conftest import publish_adapter, write_corpus

ENV = {"RAGTUNE_EMBEDDER__BACKEND": "hash", "RAGTUNE_EMBEDDER__DIM": "64",
       "RAGTUNE_GENERATOR__BACKEND": "echo"}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A data dir (env) with the tiny corpus ingested, adapter brand@v1, cases and tone files."""
    monkeypatch.setenv("RAGTUNE_DATA_DIR", str(tmp_path / "data"))
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    services = Services.build(Settings())
    services.indexer().ingest([write_corpus(tmp_path / "corpus")], sync=True)
    publish_adapter(services.registry, "brand")
    services.index.close()
    rows = [{k: v for k, v in asdict(c).items() if v is not None} for c in CASES]
    (tmp_path / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_tone(tmp_path / "tone.jsonl")
    yield tmp_path


def compare(home: Path, *args: str) -> int:
    cases = ["--cases", str(home / "cases.jsonl"), "--tone-data", str(home / "tone.jsonl")]
    return main(["compare", *cases, "--tone-questions", "6", "--max-tokens", "32", *args])


def test_compare_writes_the_report_and_prints_a_summary(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare(home, "--adapter", "brand", "--out", str(home / "out")) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(CASES)} questions")
    for arm in ("base", "rag", "tuned", "rag+tuned"):
        assert f"\n{arm} " in out
    assert "differences (a - b, paired)" in out and "tone classifier" in out
    assert str(home / "out" / "report.html") in out
    data = json.loads((home / "out" / "report.json").read_text())
    assert data["settings"]["adapter"]["ref"] == "brand@v1"
    assert data["settings"]["decoding"]["max_new_tokens"] == 32
    assert "<svg" in (home / "out" / "report.html").read_text()


def test_json_limit_modes_and_the_default_folder(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare(home, "--json", "--limit", "2", "--modes", "rag,base") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["arms"] == ["base", "rag"] and len(data["questions"]) == 2
    assert data["settings"]["cases"]["limit"] == 2
    (folder,) = (home / "data" / "reports").iterdir()  # <data_dir>/reports/<timestamp>
    assert folder.name[:8].isdigit() and (folder / "report.html").is_file()


def test_tuned_arms_need_an_adapter(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare(home, "--modes", "base,tuned") == 2
    err = capsys.readouterr().err
    assert "tuned need an adapter" in err and "only base and rag" in err
    assert compare(home, "--modes", "base,sideways") == 2
    assert "unknown arm(s) sideways" in capsys.readouterr().err
    assert compare(home, "--adapter", "ghost") == 2
    assert "ghost" in capsys.readouterr().err


def test_bad_cases_name_their_lines(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = (home / "cases.jsonl").read_text().splitlines()
    lines[1] = '{"id": "broken", "question": "Why?"}'
    lines.append("not json")
    (home / "cases.jsonl").write_text("\n".join(lines) + "\n")
    assert compare(home, "--out", str(home / "out")) == 2
    err = capsys.readouterr().err
    assert "2 bad line(s)" in err and "line 2: 'reference' is missing" in err
    assert "line 6: bad JSON" in err and not (home / "out").exists()
    assert main(["compare", "--cases", str(home / "missing.jsonl")]) == 2
    assert "no such evaluation file" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_on_the_real_model(tmp_path: Path, model_cache_dir: Path) -> None:
    """The packaged SmolLM2 and embedder, the sample corpus: base vs rag on three cases."""
    env = {**os.environ, "RAGTUNE_DATA_DIR": str(tmp_path / "data"),
           "RAGTUNE_MODEL_CACHE_DIR": str(model_cache_dir)}  # fmt: skip

    def ragtune(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "serve.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip

    shutil.copytree(CORPUS, tmp_path / "corpus")
    assert ragtune("ingest", str(tmp_path / "corpus")).returncode == 0
    proc = ragtune("compare", "--cases", str(EVAL_CASES), "--limit", "3", "--modes", "base,rag",
                   "--max-tokens", "12", "--tone-questions", "5", "--json",
                   "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["settings"]["generator"]["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert len(data["settings"]["generator"]["base_weights_sha256"]) == 64
    assert data["tone"]["negatives"] == 5 and data["tone"]["heldout"]["accuracy"] is not None
    for q in data["questions"]:
        assert q["answers"]["base"]["text"] and q["answers"]["rag"]["text"]
        assert 0 < q["answers"]["rag"]["completion_tokens"] <= 12
    assert data["summary"]["rag"]["recall@k"]["mean"] > 0.5  # the real embedder finds them
    assert (tmp_path / "data" / "eval_cache").is_dir()
    again = ragtune("compare", "--cases", str(EVAL_CASES), "--limit", "3", "--modes",
                    "base,rag", "--max-tokens", "12", "--tone-questions", "5", "--json")  # fmt: skip
    second = json.loads(again.stdout)
    assert second["tone"]["cache"]["hit"] is True
    for a, b in zip(data["questions"], second["questions"], strict=True):
        assert [x["text"] for x in a["answers"].values()] == [
            x["text"] for x in b["answers"].values()
        ]  # greedy: the same answers


def test_missing_tone_data_is_a_clear_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "compare",
        "--cases",
        str(home / "cases.jsonl"),
        "--tone-data",
        str(home / "nope.jsonl"),
    ]
    assert main(args) == 2
    assert "tone data not found: nope.jsonl" in capsys.readouterr().err
    assert main([*args, "--tone-questions", "0", "--out", str(home / "out")]) == 0
    assert json.loads((home / "out" / "report.json").read_text())["tone"] is None
