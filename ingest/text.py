"""Decoding of text files and visible-text extraction from HTML, standard library only."""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser

from ingest.errors import IngestError

# Control characters other than tab, newline, carriage return and form feed mark binary data.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BLANKS = re.compile(r"[ \t\r\f\v]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def decode_text(data: bytes, name: str) -> str:
    """Strict UTF-8 (a BOM is dropped); binary data or invalid UTF-8 raise `IngestError`."""
    if b"\x00" in data[:8192]:
        raise IngestError("binary_content", f"{name} contains NUL bytes: binary data, not text")
    # Strip the BOM ourselves: 'utf-8-sig' reports error offsets relative to the text after it.
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = bom + exc.start
        raise IngestError(
            "invalid_utf8", f"{name} is not valid UTF-8 (byte 0x{data[at]:02x} at offset {at})"
        ) from None
    sample = text[:8192]
    if sample and len(_CONTROL.findall(sample)) > 0.1 * len(sample):
        raise IngestError("binary_content", f"{name} is mostly control characters: binary data")
    return normalise_whitespace(text)


def normalise_whitespace(text: str) -> str:
    """Unix newlines, single spaces, at most one blank line in a row, no NUL or lone surrogate."""
    text = _SURROGATES.sub("\ufffd", text.replace("\x00", ""))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_BLANKS.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


# Not "head": its end tag is optional in HTML, and skipping it would hide a whole body after it;
# what it holds that is not shown (script, style, noscript) is skipped on its own.
_SKIP = {"script", "style", "noscript", "template", "svg", "iframe", "object"}
_BLOCK = {
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tr",
    "ul",
}


class _VisibleText(HTMLParser):
    """Collects the text a browser would show; keeps <title>, drops scripts, styles and head."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and not self._skip_depth:  # not an <svg>'s <title>
            self._in_title = True
        elif tag in _SKIP:
            self._skip_depth += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag in {"td", "th"}:
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self._skip_depth:
            self._skip_depth -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip_depth:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, the <title> first, one block per line."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    title = " ".join("".join(parser.title).split())
    body = normalise_whitespace("".join(parser.parts))
    return f"{title}\n\n{body}".strip() if title and not body.startswith(title) else body
