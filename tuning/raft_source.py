"""Plain text for the reading-skill set: library pages of Debian's python3-doc, trimmed."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ingest.atomic import atomic_write_text
from ingest.text import decode_text, html_to_text

DOC_ROOT = Path("/usr/share/doc/python3.11-doc/html")
# Library pages dense in defaults, versions, limits and return values; small and mid-sized
# ones, so no single module dominates the set.
PAGES = (
    "argparse", "array", "base64", "binascii", "bisect", "bz2", "calendar", "cmd", "configparser",
    "contextvars", "copy", "csv", "difflib", "filecmp", "fileinput", "fnmatch", "fractions",
    "ftplib", "functools", "getpass", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac",
    "http.client", "http.server", "imaplib", "itertools", "json", "linecache", "logging.handlers",
    "lzma", "math", "mmap", "pickle", "platform", "plistlib", "poplib", "pprint", "queue",
    "random", "reprlib", "sched", "secrets", "select", "shlex", "shutil", "signal", "smtplib",
    "socketserver", "sqlite3", "statistics", "string", "struct", "tarfile", "tempfile", "textwrap",
    "threading", "time", "timeit", "tracemalloc", "uuid", "wave", "zipapp", "zipfile", "zlib",
    "zoneinfo",
)  # fmt: skip
_BODY_START = '<div class="body" role="main">'
_BODY_END = '<div class="sphinxsidebar"'
_CODE = re.compile(r"<pre>.*?</pre>", re.S)  # examples and tables of code: no facts to read
_PARAGRAPHS = re.compile(r"\n\s*\n")
# Footnotes ("[1] (1,2)"): their numbers would read as a new source block of the prompt.
_FOOTNOTE = re.compile(r"\AFootnotes\Z|\A\[\d+\]")


def page_text(html: str, name: str) -> str:
    """The main body of one Sphinx page as paragraphs of unwrapped plain text."""
    start, end = html.find(_BODY_START), html.find(_BODY_END)
    if start < 0 or end < start:
        raise ValueError(f"{name}: no Sphinx main body (is it a python3-doc library page?)")
    text = html_to_text(_CODE.sub("", html[start:end])).replace("¶", "")
    paragraphs = (" ".join(p.split()) for p in _PARAGRAPHS.split(text))
    return "\n\n".join(p for p in paragraphs if p and not _FOOTNOTE.match(p))


def banned_facts(cases: Path) -> list[str]:
    """The key facts of the evaluation cases: no training text may state them."""
    facts: set[str] = set()
    for line in cases.read_text("utf-8").splitlines():
        if line.strip():
            facts.update(json.loads(line).get("key_facts", []))
    return sorted(facts)


def mentions(paragraph: str, facts: Iterable[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(f)}(?!\w)", paragraph, re.I) for f in facts)


def decontaminate(text: str, facts: Sequence[str]) -> str:
    """`text` without the paragraphs that mention any of `facts` (whole words, any case)."""
    kept = [p for p in text.split("\n\n") if not mentions(p, facts)]
    return "\n\n".join(kept)


def build_source(doc_root: Path, out_dir: Path, facts: Sequence[str]) -> dict[str, int]:
    """Write `<out_dir>/library/<page>.txt` for every page; returns characters per page."""
    sizes: dict[str, int] = {}
    for name in PAGES:
        path = doc_root / "library" / f"{name}.html"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: apt-get install python3-doc")
        (out_dir / "library").mkdir(parents=True, exist_ok=True)
        text = decontaminate(page_text(decode_text(path.read_bytes(), path.name), name), facts)
        atomic_write_text(out_dir / "library" / f"{name}.txt", text + "\n")
        sizes[name] = len(text)
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--doc-root", type=Path, default=DOC_ROOT)
    parser.add_argument("--out", type=Path, default=Path("data/reader/source"))
    parser.add_argument("--eval-cases", type=Path, default=Path("data/eval/cases.jsonl"))
    args = parser.parse_args(argv)
    sizes = build_source(args.doc_root, args.out, banned_facts(args.eval_cases))
    print(f"{len(sizes)} pages, {sum(sizes.values())} characters -> {args.out}")


if __name__ == "__main__":
    main()
