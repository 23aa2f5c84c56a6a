"""The `ragtune` command as a user runs it: real processes, the real embedder, the sample corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS, ROOT

pytestmark = pytest.mark.slow


def ragtune(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "RAGTUNE_DATA_DIR": str(data_dir), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A copy of the sample corpus ingested once into a fresh data dir."""
    base = tmp_path_factory.mktemp("cli")
    corpus = base / "corpus"
    shutil.copytree(CORPUS, corpus)
    proc = ragtune(base / "data", "ingest", str(corpus), "--json")
    assert proc.returncode == 0, proc.stderr
    return base / "data", corpus, last_json(proc)


def test_ingest_json_diff_of_the_sample_corpus(ingested: tuple[Path, Path, dict]) -> None:
    _, corpus, diff = ingested
    n_files = len([p for p in corpus.rglob("*") if p.is_file()])
    assert diff["documents"] == {
        "added": n_files,
        "changed": 0,
        "removed": 0,
        "unchanged": 0,
        "failed": 0,
    }
    assert diff["chunks"]["added"] == diff["embedded"] > 100
    assert diff["failures"] == [] and diff["index_version"] == 1


def test_reingest_edit_and_sync(ingested: tuple[Path, Path, dict]) -> None:
    data, corpus, first = ingested
    faq = corpus / "support" / "faq.txt"
    faq.write_text(
        faq.read_text()
        + "\nQ: Do you sell unicycles?\nA: No, only the Zephyr unicycle prototype.\n"
    )
    (corpus / "company" / "dealer-network.html").unlink()
    diff = last_json(ragtune(data, "ingest", str(corpus), "--sync", "--json"))
    assert diff["documents"]["changed"] == 1 and diff["documents"]["removed"] == 1
    assert diff["documents"]["unchanged"] == first["documents"]["added"] - 2
    assert 1 <= diff["embedded"] <= 3  # only the FAQ's last chunk(s) are new
    hits = json.loads(
        ragtune(data, "search", "Zephyr unicycle prototype", "--json", "-k", "2").stdout
    )
    assert hits[0]["document_id"] == "support/faq.txt" and "Zephyr" in hits[0]["text"]
    assert hits[0]["index_version"] == diff["index_version"] == 2


def test_search_prints_ranked_hits_with_pages(ingested: tuple[Path, Path, dict]) -> None:
    data, _, _ = ingested
    proc = ragtune(data, "search", "Aurora E3 brake lever clamp torque", "-k", "3")
    assert proc.returncode == 0
    assert proc.stdout.startswith("1. [manuals/") and " p." in proc.stdout
    hits = json.loads(
        ragtune(data, "search", "warranty", "--json", "--source", "*/policies/*").stdout
    )
    assert hits and all("/policies/" in h["source"] for h in hits)


def test_bad_files_are_reported_and_the_rest_committed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe kettle descaler code is KD-4411.\n")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "latin1.txt").write_bytes(b"caf\xe9")
    (docs / "fake.pdf").write_bytes(b"this is not a pdf at all")
    (tmp_path / "nothing").mkdir()
    proc = ragtune(tmp_path / "data", "ingest", str(docs), str(tmp_path / "nothing"), "--json")
    assert proc.returncode == 1
    diff = last_json(proc)
    codes = {Path(f["path"]).name: f["code"] for f in diff["failures"]}
    assert codes == {
        "empty.txt": "empty_file",
        "latin1.txt": "invalid_utf8",
        "fake.pdf": "pdf_unreadable",
        "nothing": "no_files",
    }
    assert diff["documents"]["added"] == 1 and diff["documents"]["failed"] == 4
    human = ragtune(tmp_path / "data", "ingest", str(docs))
    assert "failed     " in human.stdout and "empty_file" in human.stdout


def test_other_embedder_fails_with_a_clear_message(ingested: tuple[Path, Path, dict]) -> None:
    data, _, _ = ingested
    proc = ragtune(data, "search", "warranty", env={"RAGTUNE_EMBEDDER__BACKEND": "hash"})
    assert proc.returncode == 2
    assert "built with embedder 'sentence-transformers/all-MiniLM-L6-v2'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_reports_the_manifest(ingested: tuple[Path, Path, dict]) -> None:
    data, _, _ = ingested
    info = json.loads(ragtune(data, "info", "--json").stdout)
    assert info["embedder_dim"] == 384 and info["chunks"] == info["vectors_count"] > 100
