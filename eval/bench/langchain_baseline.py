"""The LangChain way of ingesting a folder, as the baseline `eval.bench.ingest` compares with.

PyPDFLoader for PDFs, TextLoader for text and Markdown, HTML through BSHTMLLoader when bs4 is
installed (else the standard library's HTML parser: a plain read with the tags stripped),
RecursiveCharacterTextSplitter(1000, 150), HuggingFaceEmbeddings on the packaged
all-MiniLM-L6-v2 and FAISS.from_documents, then `save_local` so that both sides persist.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from retrieval.embedder import packaged_model_dir

CHUNK_SIZE = 1000
CHUNK_OVERLAP = 150
SUFFIXES = {".pdf", ".txt", ".md", ".markdown", ".html", ".htm"}


class _TagStripper(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "style"}:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"} and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_loader_name() -> str:
    return "BSHTMLLoader" if importlib.util.find_spec("bs4") else "stdlib HTMLParser (no bs4)"


@dataclass
class LangChainRun:
    seconds: float
    chunks: int
    loaded_chars: int  # characters of the loaded documents' page_content
    pages: int  # LangChain Documents before splitting (one per PDF page)


class LangChainBaseline:
    """Holds the embeddings model (loaded once, like ragtune's embedder) between runs."""

    def __init__(self) -> None:
        from langchain_huggingface import HuggingFaceEmbeddings

        # The typical setup: encode's default batch size (32), normalised vectors.
        self.embeddings: Any = HuggingFaceEmbeddings(
            model_name=str(packaged_model_dir()),
            model_kwargs={"device": "cpu", "local_files_only": True},
            encode_kwargs={"normalize_embeddings": True},
        )

    def warm_up(self, texts: list[str]) -> None:
        self.embeddings.embed_documents(texts)

    def load(self, root: Path) -> list[Any]:
        from langchain_community.document_loaders import PyPDFLoader, TextLoader
        from langchain_core.documents import Document

        bs4 = importlib.util.find_spec("bs4") is not None
        docs: list[Any] = []
        for path in sorted(root.rglob("*")):
            suffix = path.suffix.lower()
            if not path.is_file() or suffix not in SUFFIXES or path.name.startswith("."):
                continue
            if suffix == ".pdf":
                docs.extend(PyPDFLoader(str(path)).load())
            elif suffix in {".html", ".htm"}:
                if bs4:
                    from langchain_community.document_loaders import BSHTMLLoader

                    docs.extend(BSHTMLLoader(str(path), open_encoding="utf-8").load())
                else:
                    parser = _TagStripper()
                    parser.feed(path.read_text(encoding="utf-8"))
                    parser.close()
                    text = "".join(parser.parts)
                    docs.append(Document(page_content=text, metadata={"source": str(path)}))
            else:
                docs.extend(TextLoader(str(path), encoding="utf-8").load())
        return docs

    def run(self, root: Path, save_dir: Path) -> LangChainRun:
        """Load, split, embed, index and save everything under `root`; timed end to end."""
        from langchain_community.vectorstores import FAISS
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        started = time.perf_counter()
        docs = self.load(root)
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP
        )
        chunks = splitter.split_documents(docs)
        store = FAISS.from_documents(chunks, self.embeddings)
        store.save_local(str(save_dir))
        seconds = time.perf_counter() - started
        return LangChainRun(seconds, len(chunks), sum(len(d.page_content) for d in docs), len(docs))


def quiet_langchain() -> None:
    """langchain-community warns on import that it is being sunset: not news in a benchmark."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"langchain.*")
    warnings.filterwarnings("ignore", message=r".*langchain-community.*")
