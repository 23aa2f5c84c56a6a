"""The documentation stays true: configuration page against `Settings`, README links, docstrings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from serve import config_doc
from serve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
PACKAGES = ("ingest", "retrieval", "tuning", "serve", "eval")
# Read by the crash tests only (tests/reliability), not settings of the application.
TEST_ONLY = {"RAGTUNE_CRASHER_SEED", "RAGTUNE_CRASHER_ITERATIONS"}
NAME = re.compile(r"RAGTUNE_[A-Z0-9_]*[A-Z0-9](?:__)?")
ROW = re.compile(r"^\| `(RAGTUNE_[A-Z0-9_]+)` \|", re.MULTILINE)
DOC_LINK = re.compile(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)")


def settings_names() -> set[str]:
    return {v.name for v in config_doc.variables()}


def documented_names() -> set[str]:
    return set(ROW.findall(CONFIG_PAGE.read_text(encoding="utf-8")))


def test_every_documented_variable_exists_in_settings() -> None:
    unknown = documented_names() - settings_names()
    assert not unknown, f"docs/configuration.md names variables Settings lacks: {sorted(unknown)}"


def test_every_setting_is_documented() -> None:
    missing = settings_names() - documented_names()
    assert not missing, (
        f"docs/configuration.md lacks {sorted(missing)}: run python -m serve.config_doc"
    )


def test_configuration_page_is_the_generated_one() -> None:
    # Defaults and descriptions too, not only the names.
    assert CONFIG_PAGE.read_text(encoding="utf-8") == config_doc.render(), (
        "docs/configuration.md is out of date: run python -m serve.config_doc"
    )


def test_generated_names_are_what_pydantic_settings_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # One variable per kind of nesting: top level, section, section inside a section.
    monkeypatch.setenv("RAGTUNE_CORPUS_DIR", "/srv/corpus")
    monkeypatch.setenv("RAGTUNE_RETRIEVAL__TOP_K", "7")
    monkeypatch.setenv("RAGTUNE_INGEST__CHUNKING__CHUNK_TOKENS", "100")
    settings = Settings()
    assert settings.corpus_dir == Path("/srv/corpus")
    assert settings.retrieval.top_k == 7
    assert settings.ingest.chunking.chunk_tokens == 100
    names = settings_names()
    for name in ("RAGTUNE_CORPUS_DIR", "RAGTUNE_RETRIEVAL__TOP_K"):
        assert name in names
    assert "RAGTUNE_INGEST__CHUNKING__CHUNK_TOKENS" in names
    assert "RAGTUNE_INGEST__CHUNKING" not in names  # a section is walked, not listed


def test_rows_render_defaults_and_escape_cells() -> None:
    class Inner(BaseModel):
        globs: tuple[str, ...] = Field(("*.md",), description="a | b <c>")
        off: bool = Field(False, description="")

    class Outer(BaseModel):
        inner: Inner = Field(default_factory=Inner)
        limit: int | None = Field(None, description="none")

    rows = [v.row() for v in config_doc.variables(Outer)]
    assert rows == [
        '| `RAGTUNE_INNER__GLOBS` | `["*.md"]` | a \\| b &lt;c&gt; |',
        "| `RAGTUNE_INNER__OFF` | `false` |  |",
        "| `RAGTUNE_LIMIT` | unset | none |",
    ]


def test_every_variable_named_in_the_docs_exists() -> None:
    names = settings_names()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    unknown: list[str] = []
    for page in pages:
        for name in set(NAME.findall(page.read_text(encoding="utf-8"))):
            if name.endswith("__"):  # a section, as in `RAGTUNE_TRAINING__*`
                ok = any(n.startswith(name) for n in names)
            else:
                ok = name in names or name in TEST_ONLY
            if not ok:
                unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert not unknown, unknown


def test_readme_links_every_docs_page_and_every_link_resolves() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = set(DOC_LINK.findall(readme))
    broken = sorted(link for link in linked if not (ROOT / link).is_file())
    assert not broken, f"README.md links to missing pages: {broken}"
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set(), f"docs pages the README does not link: {pages - linked}"
    assert len(readme.splitlines()) <= 120, "the README is the first screen: move detail to docs/"


def test_links_between_docs_pages_resolve() -> None:
    broken = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#\s:]+\.md)(?:#[^)]*)?\)", page.read_text("utf-8")):
            if not (page.parent / target).resolve().is_file():
                broken.append(f"{page.name} -> {target}")
    assert not broken, broken


def python_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", python_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_opens_with_a_one_line_docstring(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{path.relative_to(ROOT)} has no module docstring"
    lines = docstring.splitlines()
    assert len(lines) == 1 or not lines[1].strip(), "the summary is one line, then a blank line"


@pytest.mark.parametrize("package", sorted({p.parent for p in python_modules()}))
def test_package_docstring_says_what_it_holds_and_may_import(package: Path) -> None:
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text("utf-8")))
    assert docstring
    assert "import" in docstring.lower(), f"{package.name}/__init__.py: say what it may import"
