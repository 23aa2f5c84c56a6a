"""Child process that parses PDFs with pypdf under resource limits; one JSON request per line.

Run as `python -m ingest.pdf_worker MEMORY_MB`. Request: {"path": str, "max_pages": int}.
Reply: {"ok": true, "pages": [str, ...]} or {"ok": false, "code": str, "message": str}.
Before the first request it writes {"ready": true}, once pypdf is imported.
A crafted PDF may spin or eat memory: the parent kills this process on a wall-clock timeout,
and the address-space limit turns runaway allocation into a MemoryError here.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from typing import Any


def _parse(path: str, max_pages: int) -> dict[str, Any]:
    from pypdf import PdfReader
    from pypdf.errors import (
        DependencyError,
        FileNotDecryptedError,
        LimitReachedError,
        PdfReadError,
    )

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return _fail("pdf_encrypted", "the PDF is encrypted and needs a password")
        count = len(reader.pages)
        if count > max_pages:
            return _fail("pdf_too_many_pages", f"{count} pages is over the limit of {max_pages}")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (FileNotDecryptedError, DependencyError) as exc:
        return _fail("pdf_encrypted", f"the PDF is encrypted and cannot be read: {exc}")
    except MemoryError:
        return _fail("pdf_resources", "parsing the PDF exceeded the memory limit")
    except LimitReachedError as exc:
        # pypdf's own caps (decompression bombs, absurd page-tree depth): a resource refusal,
        # which the address-space limit would report the same way had it tripped first.
        return _fail("pdf_resources", f"the PDF exceeds a parser safety limit: {exc}")
    except RecursionError:
        return _fail("pdf_unreadable", "the PDF's object structure nests too deeply")
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        return _fail("pdf_unreadable", f"the PDF is damaged or not a PDF: {exc}")
    except Exception as exc:
        return _fail("pdf_unreadable", f"the PDF could not be parsed ({type(exc).__name__}: {exc})")
    return {"ok": True, "pages": pages}


def _fail(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "message": message[:500]}


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.WARNING)  # pypdf logs every oddity of a damaged file
    sys.setrecursionlimit(5000)
    import pypdf  # noqa: F401  # imported before the ready line: start-up is not parse time

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        reply = _parse(request["path"], int(request["max_pages"]))
        sys.stdout.write(json.dumps(reply, ensure_ascii=True) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
