"""The PDF child process: its timeout and memory limit cut off hostile files, then it recovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.config import IngestConfig
from ingest.errors import IngestError
from ingest.loaders import DocumentLoader
from tests.fixtures import pdfs


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


@pytest.mark.promise(5)
@pytest.mark.slow
def test_slow_pdf_hits_the_timeout_and_the_next_file_parses(tmp_path: Path) -> None:
    slow = write(tmp_path, "slow.pdf", pdfs.many_pages_pdf(1500))  # about 1 s of pypdf work
    fine = write(tmp_path, "fine.pdf", pdfs.make_pdf(["parsed after the restart"]))
    with DocumentLoader(IngestConfig(pdf_timeout_s=0.1)) as timed:
        with pytest.raises(IngestError) as info:
            timed.load(slow, "slow.pdf")
        assert info.value.code == "pdf_timeout"
        assert "0.1 s" in info.value.message
        # The killed child is replaced; its start-up is not charged to the next file.
        assert timed.load(fine, "fine.pdf").text == "parsed after the restart"
        with pytest.raises(IngestError) as again:
            timed.load(slow, "slow.pdf")
        assert again.value.code == "pdf_timeout"
        assert timed.load(fine, "fine.pdf").text == "parsed after the restart"
    # The same file is fine under a generous limit: it was slow, not broken.
    with DocumentLoader(IngestConfig(pdf_timeout_s=60)) as patient:
        assert [s.page for s in patient.load(slow, "slow.pdf").pages][-1] == 1500


@pytest.mark.promise(5)
@pytest.mark.slow
def test_decompression_bomb_hits_the_memory_limit(tmp_path: Path) -> None:
    bomb = write(tmp_path, "bomb.pdf", pdfs.bomb_pdf(200))  # 200 KB inflating to 200 MiB
    assert bomb.stat().st_size < 300 * 1024
    fine = write(tmp_path, "fine.pdf", pdfs.make_pdf(["small and fine"]))
    with DocumentLoader(IngestConfig(pdf_memory_mb=128)) as capped:
        with pytest.raises(IngestError) as info:
            capped.load(bomb, "bomb.pdf")
        assert info.value.code == "pdf_resources"
        assert "limit" in info.value.message
        assert capped.load(fine, "fine.pdf").text == "small and fine"
