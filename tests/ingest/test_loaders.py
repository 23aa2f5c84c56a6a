"""DocumentLoader: every format loads, every bad input gets its stable code and a clear reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.config import IngestConfig
from ingest.discover import discover
from ingest.document import Document, sha256_hex
from ingest.errors import IngestError
from ingest.loaders import DocumentLoader, read_checked
from tests.conftest import CORPUS
from tests.fixtures import pdfs


@pytest.fixture(scope="module")
def loader() -> Iterator[DocumentLoader]:
    """One loader (one PDF child process) for the tests that keep the default limits."""
    with DocumentLoader(IngestConfig()) as shared:
        yield shared


def write(directory: Path, name: str, data: bytes | str) -> Path:
    path = directory / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def load_error(loader: DocumentLoader, path: Path) -> IngestError:
    with pytest.raises(IngestError) as info:
        loader.load(path, path.name)
    return info.value


def assert_spans_cover(doc: Document) -> None:
    """Pages are separated by exactly one blank line and cover the whole text."""
    pieces = [doc.text[span.start : span.end] for span in doc.pages]
    assert "\n\n".join(pieces) == doc.text
    for span in doc.pages:
        assert doc.text[span.start : span.end] == doc.text[span.start : span.end].strip()


# --- formats -------------------------------------------------------------------------------


def test_text_file_loads_normalised(tmp_path: Path, loader: DocumentLoader) -> None:
    raw = "Title line\r\n\r\n\r\n\r\nSecond   paragraph\twith  blanks.\r\nLast line.\n"
    path = write(tmp_path, "notes.txt", raw)
    doc = loader.load(path, "notes.txt")
    assert doc.text == "Title line\n\nSecond paragraph with blanks.\nLast line."
    assert doc.id == "notes.txt"
    assert doc.source == str(path.resolve())
    assert doc.content_hash == sha256_hex(raw.encode())
    assert doc.metadata == {"format": "txt", "bytes": len(raw.encode())}
    assert [(s.page, s.start, s.end) for s in doc.pages] == [(None, 0, len(doc.text))]


def test_markdown_keeps_its_markup(tmp_path: Path, loader: DocumentLoader) -> None:
    path = write(tmp_path, "guide.md", "# Guide\n\nSome *emphasis* and a [link](x.md).\n")
    doc = loader.load(path, "guide.md")
    assert doc.text == "# Guide\n\nSome *emphasis* and a [link](x.md)."
    assert doc.metadata["format"] == "md"


def test_utf8_bom_is_dropped(tmp_path: Path, loader: DocumentLoader) -> None:
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbfcaf\xc3\xa9 au lait")
    assert loader.load(path, "bom.txt").text == "café au lait"


def test_upper_case_suffix_is_recognised(tmp_path: Path, loader: DocumentLoader) -> None:
    path = write(tmp_path, "README.TXT", "shouting suffix")
    assert loader.load(path, "README.TXT").text == "shouting suffix"


HTML = """<!doctype html>
<html><head><title>Shop  Page</title><style>p { color: red }</style>
<script>var hidden = "script text";</script></head>
<body><nav>Home | Shop</nav><noscript>enable scripts</noscript>
<h1>Welcome</h1><p>Bikes &amp; parts, <b>cheap</b>.</p>
<table><tr><td>Aurora</td><td>1999</td></tr></table>
<svg><title>cart icon</title><text>svg text</text></svg>
<template><p>template text</p></template></body></html>"""


def test_html_visible_text_only(tmp_path: Path, loader: DocumentLoader) -> None:
    doc = loader.load(write(tmp_path, "shop.html", HTML), "shop.html")
    lines = doc.text.split("\n")
    assert lines[0] == "Shop Page"  # the title comes first, whitespace collapsed
    assert "Welcome" in lines
    assert "Bikes & parts, cheap." in lines  # entities decoded, inline tags joined
    assert "Home | Shop" in lines  # <nav> is visible text: kept
    assert "| Aurora | 1999" in lines  # table cells on one row
    for hidden in ("script text", "color: red", "enable scripts", "svg text", "template text"):
        assert hidden not in doc.text
    assert "cart icon" not in doc.text  # an <svg>'s <title> is not the page title
    assert "<" not in doc.text
    assert doc.metadata["format"] == "html"


def test_html_without_closing_head_keeps_body(tmp_path: Path, loader: DocumentLoader) -> None:
    """'</head>' and '<body>' are optional in HTML: the body text must not vanish."""
    html = "<html><head><meta charset=utf-8><title>T</title><p>Hello world<p>Again"
    doc = loader.load(write(tmp_path, "short.htm", html), "short.htm")
    assert doc.text == "T\n\nHello world\nAgain"


def test_html_title_not_repeated_when_body_starts_with_it(
    tmp_path: Path, loader: DocumentLoader
) -> None:
    html = "<title>Welcome</title><h1>Welcome</h1><p>text</p>"
    doc = loader.load(write(tmp_path, "w.html", html), "w.html")
    assert doc.text == "Welcome\n\ntext"


def test_pdf_pages_and_spans(tmp_path: Path, loader: DocumentLoader) -> None:
    pages = ["First page says hello.\nA second line.", "", "Third page, (parens) and café."]
    data = pdfs.make_pdf(pages)
    doc = loader.load(write(tmp_path, "three.pdf", data), "three.pdf")
    # The blank page 2 has no span, but page 3 keeps its number.
    assert [span.page for span in doc.pages] == [1, 3]
    assert [doc.text[s.start : s.end] for s in doc.pages] == [pages[0], pages[2]]
    assert_spans_cover(doc)
    assert doc.metadata == {"format": "pdf", "bytes": len(data), "pages": 3}
    assert doc.content_hash == sha256_hex(data)


def test_pdf_compressed_streams(tmp_path: Path, loader: DocumentLoader) -> None:
    data = pdfs.make_pdf(["deflated page one", "deflated page two"], compress=True)
    doc = loader.load(write(tmp_path, "z.pdf", data), "z.pdf")
    assert doc.text == "deflated page one\n\ndeflated page two"


def test_pdf_with_empty_user_password_is_read(tmp_path: Path, loader: DocumentLoader) -> None:
    data = pdfs.encrypted_pdf(["owner-locked but readable", "page two"])
    assert b"/Encrypt" in data
    doc = loader.load(write(tmp_path, "locked.pdf", data), "locked.pdf")
    assert doc.text == "owner-locked but readable\n\npage two"
    assert [s.page for s in doc.pages] == [1, 2]


def test_pdf_with_wrong_declared_length_is_recovered(
    tmp_path: Path, loader: DocumentLoader
) -> None:
    data = pdfs.huge_length_pdf("still here", declared=1_000_000)
    doc = loader.load(write(tmp_path, "len.pdf", data), "len.pdf")
    assert doc.text == "still here"


def test_pdf_with_absurd_declared_length_is_refused(tmp_path: Path, loader: DocumentLoader) -> None:
    data = pdfs.huge_length_pdf("still here", declared=10**12)
    err = load_error(loader, write(tmp_path, "len.pdf", data))
    assert err.code == "pdf_resources"
    assert "1000000000000" in err.message and "limit" in err.message


def test_corpus_loads_every_file(loader: DocumentLoader) -> None:
    files, failures = discover([CORPUS], IngestConfig())
    assert failures == []
    docs = {src.doc_id: loader.load(src.path, src.doc_id) for src in files}
    pdf_docs = [doc for doc in docs.values() if doc.metadata["format"] == "pdf"]
    assert len(pdf_docs) == 3
    for doc in pdf_docs:
        numbers = [span.page for span in doc.pages]
        assert numbers == list(range(1, doc.metadata["pages"] + 1))  # text on every page
        assert len(numbers) > 1
        assert_spans_cover(doc)
    for doc in docs.values():
        assert doc.text.strip() and "\x00" not in doc.text
        if doc.metadata["format"] == "html":
            assert "<" not in doc.text and "dataLayer" not in doc.text  # no markup, no script


# --- bad inputs ----------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path, loader: DocumentLoader) -> None:
    err = load_error(loader, write(tmp_path, "empty.txt", b""))
    assert err.code == "empty_file"
    assert "0 bytes" in err.message


def test_missing_file(tmp_path: Path, loader: DocumentLoader) -> None:
    err = load_error(loader, tmp_path / "gone.md")
    assert err.code == "not_found"
    assert "gone.md" in err.message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" * 20, "NUL bytes"),
        (bytes(range(1, 9)) * 300 + b"a few letters", "control characters"),
    ],
    ids=["nul-bytes", "control-chars"],
)
def test_binary_file_with_txt_suffix(
    tmp_path: Path, loader: DocumentLoader, data: bytes, reason: str
) -> None:
    err = load_error(loader, write(tmp_path, "image.txt", data))
    assert err.code == "binary_content"
    assert "image.txt" in err.message and reason in err.message


@pytest.mark.parametrize(
    ("data", "offset", "byte"),
    [
        (b"valid start, then \xff here", 18, 0xFF),
        ("café ".encode() + b"\xc3(" + b" rest", 6, 0xC3),  # a cut 2-byte sequence
        (b"\xef\xbb\xbfbom first, then \xfe", 3 + 16, 0xFE),  # offsets count the BOM's bytes
        ("caf\xe9".encode("latin-1"), 3, 0xE9),
    ],
    ids=["ff", "cut-sequence", "after-bom", "latin-1"],
)
def test_invalid_utf8_names_the_offset(
    tmp_path: Path, loader: DocumentLoader, data: bytes, offset: int, byte: int
) -> None:
    assert data[offset] == byte  # the case itself is right
    err = load_error(loader, write(tmp_path, "bad.md", data))
    assert err.code == "invalid_utf8"
    assert f"byte 0x{byte:02x} at offset {offset}" in err.message
    assert "bad.md" in err.message


def test_file_over_max_file_bytes(tmp_path: Path) -> None:
    config = IngestConfig(max_file_bytes=100)
    path = write(tmp_path, "big.txt", "x" * 101)
    with DocumentLoader(config) as small, pytest.raises(IngestError) as info:
        small.load(path, "big.txt")
    assert info.value.code == "too_large"
    assert "101 bytes" in info.value.message and "100 bytes" in info.value.message
    # Exactly at the limit is fine, and read_checked refuses before reading.
    assert read_checked(write(tmp_path, "edge.txt", "x" * 100), config) == b"x" * 100


@pytest.mark.parametrize("name", ["report.docx", "archive.tar.gz", "Makefile"])
def test_unsupported_suffix(tmp_path: Path, loader: DocumentLoader, name: str) -> None:
    path = write(tmp_path, name, "plain text, wrong type")
    err = load_error(loader, path)
    assert err.code == "unsupported_type"
    assert (path.suffix or name) in err.message


def test_pdf_without_header(tmp_path: Path, loader: DocumentLoader) -> None:
    err = load_error(loader, write(tmp_path, "noise.pdf", pdfs.garbage_bytes()))
    assert err.code == "pdf_unreadable"
    assert "no PDF header" in err.message


@pytest.mark.parametrize(
    "make",
    [pdfs.truncated_pdf, pdfs.garbage_with_header, pdfs.cyclic_page_tree_pdf],
    ids=["truncated", "garbage-after-header", "cyclic-page-tree"],
)
def test_damaged_pdf(tmp_path: Path, loader: DocumentLoader, make: object) -> None:
    assert callable(make)
    err = load_error(loader, write(tmp_path, "broken.pdf", make()))
    assert err.code == "pdf_unreadable"
    assert "damaged" in err.message or "could not be parsed" in err.message


def test_deep_page_tree_is_refused(tmp_path: Path, loader: DocumentLoader) -> None:
    err = load_error(loader, write(tmp_path, "deep.pdf", pdfs.deep_page_tree_pdf()))
    assert err.code == "pdf_resources"
    assert "limit" in err.message


def test_pdf_with_real_password(tmp_path: Path, loader: DocumentLoader) -> None:
    data = pdfs.encrypted_pdf(["top secret"], user_password="hunter2")
    err = load_error(loader, write(tmp_path, "secret.pdf", data))
    assert err.code == "pdf_encrypted"
    assert "password" in err.message


def test_image_only_pdf(tmp_path: Path, loader: DocumentLoader) -> None:
    err = load_error(loader, write(tmp_path, "scan.pdf", pdfs.blank_pdf(3)))
    assert err.code == "no_text"
    assert "image-only" in err.message


def test_whitespace_only_text(tmp_path: Path, loader: DocumentLoader) -> None:
    err = load_error(loader, write(tmp_path, "blank.txt", " \n\t\r\n  "))
    assert err.code == "no_text"
    assert "PDF" not in err.message  # the scanned-PDF hint is for PDFs only


def test_pdf_page_limit(tmp_path: Path) -> None:
    four = write(tmp_path, "four.pdf", pdfs.many_pages_pdf(4))
    three = write(tmp_path, "three.pdf", pdfs.many_pages_pdf(3))
    with DocumentLoader(IngestConfig(pdf_max_pages=3)) as limited:
        with pytest.raises(IngestError) as info:
            limited.load(four, "four.pdf")
        assert info.value.code == "pdf_too_many_pages"
        assert "4 pages" in info.value.message and "limit of 3" in info.value.message
        assert [s.page for s in limited.load(three, "three.pdf").pages] == [1, 2, 3]


def test_loader_survives_a_run_of_bad_files(tmp_path: Path, loader: DocumentLoader) -> None:
    """Errors are per file: the same child process goes on to read a good PDF."""
    bad = [pdfs.truncated_pdf(), pdfs.garbage_with_header(), pdfs.blank_pdf()]
    for i, data in enumerate(bad):
        with pytest.raises(IngestError):
            loader.load(write(tmp_path, f"bad{i}.pdf", data), f"bad{i}.pdf")
    good = write(tmp_path, "good.pdf", pdfs.make_pdf(["after the storm"]))
    assert loader.load(good, "good.pdf").text == "after the storm"


def test_a_pdf_replaced_while_it_is_read_is_refused(tmp_path: Path) -> None:
    from tests.fixtures.pdfs import make_pdf

    path = tmp_path / "moving.pdf"
    path.write_bytes(make_pdf(["Version one of the page."]))
    hashed = path.read_bytes()
    path.write_bytes(make_pdf(["Version two, written after the bytes were hashed."]))
    with DocumentLoader(IngestConfig()) as loader:
        with pytest.raises(IngestError, match="changed while it was read") as err:
            loader.load(path, "moving.pdf", hashed)
        assert err.value.code == "read_error"
        assert "Version two" in loader.load(path, "moving.pdf").text
