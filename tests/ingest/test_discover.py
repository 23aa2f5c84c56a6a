"""discover: recursion, include/exclude globs, hidden folders, ids, and per-path failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.config import IngestConfig
from ingest.discover import Failure, SourceFile, discover, matches
from tests.conftest import CORPUS


def tree(root: Path, *names: str) -> Path:
    """Create files (with text naming themselves) under `root`; folders as needed."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"this is {name}")
    return root


def ids(found: list[SourceFile]) -> list[str]:
    return [src.doc_id for src in found]


def codes(failures: list[Failure]) -> list[str]:
    return [f.code for f in failures]


def test_folders_recurse_with_relative_posix_ids(tmp_path: Path) -> None:
    root = tree(tmp_path / "corpus", "a.md", "sub/b.txt", "sub/deeper/c.pdf", "sub/deeper/d.html")
    found, failures = discover([root], IngestConfig())
    assert failures == []
    assert sorted(ids(found)) == ["a.md", "sub/b.txt", "sub/deeper/c.pdf", "sub/deeper/d.html"]
    for src in found:
        assert src.root == root.resolve()
        assert src.path == root.resolve() / src.doc_id
        assert src.path.is_absolute() and "\\" not in src.doc_id


def test_order_is_deterministic(tmp_path: Path) -> None:
    root = tree(tmp_path, "z.md", "b/y.md", "a/x.md", "m.md")
    first = ids(discover([root], IngestConfig())[0])
    assert first == ["m.md", "z.md", "a/x.md", "b/y.md"]  # a folder's files, then its folders
    assert first == ids(discover([root], IngestConfig())[0])


def test_default_include_skips_other_types(tmp_path: Path) -> None:
    root = tree(tmp_path, "keep.md", "keep.markdown", "keep.htm", "skip.docx", "skip.py", "noext")
    found, _ = discover([root], IngestConfig())
    assert sorted(ids(found)) == ["keep.htm", "keep.markdown", "keep.md"]


def test_upper_case_suffixes_are_found(tmp_path: Path) -> None:
    """The loader reads 'SCAN.PDF'; discovery must not drop it silently."""
    root = tree(tmp_path, "SCAN.PDF", "Notes.Md", "other.DOCX")
    found, failures = discover([root], IngestConfig())
    assert sorted(ids(found)) == ["Notes.Md", "SCAN.PDF"]
    assert failures == []


def test_hidden_files_and_folders_excluded_by_default(tmp_path: Path) -> None:
    root = tree(tmp_path, "seen.md", ".hidden.md", ".git/HEAD.md", "sub/.cache/x.md", "sub/ok.md")
    found, _ = discover([root], IngestConfig())
    assert sorted(ids(found)) == ["seen.md", "sub/ok.md"]
    found_all, _ = discover([root], IngestConfig(exclude=()))
    assert len(found_all) == 5


def test_hidden_parent_of_the_given_folder_does_not_exclude(tmp_path: Path) -> None:
    """Only the path below the folder given is tested: a corpus inside ~/.local still works."""
    root = tree(tmp_path / ".local" / "corpus", "doc.md")
    assert ids(discover([root], IngestConfig())[0]) == ["doc.md"]


ALL_MD = ["a.md", "ab.md", "drafts/c.md", "x/drafts/e.md", "x/y/d.md"]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (("*.md",), (), ALL_MD),
        (("*.md",), ("drafts",), ["a.md", "ab.md", "x/y/d.md"]),  # a name prunes folders
        (("**/*.md",), (), ALL_MD),
        (("x/**/*.md",), (), ["x/drafts/e.md", "x/y/d.md"]),
        (("x/*/*.md",), (), ["x/drafts/e.md", "x/y/d.md"]),
        (("x/*.md",), (), []),  # '*' stays inside one folder
        (("*.md",), ("x/**",), ["a.md", "ab.md", "drafts/c.md"]),
        (("*.md",), ("**/drafts/*",), ["a.md", "ab.md", "x/y/d.md"]),
        (("*.txt", "?.md"), (), ["a.md", "b.txt", "drafts/c.md", "x/drafts/e.md", "x/y/d.md"]),
        (("*.md",), ("*.md",), []),  # exclude wins
    ],
)
def test_include_exclude_globs(
    tmp_path: Path, include: tuple[str, ...], exclude: tuple[str, ...], expected: list[str]
) -> None:
    root = tree(tmp_path, "a.md", "ab.md", "b.txt", "drafts/c.md", "x/y/d.md", "x/drafts/e.md")
    tree(root, "a.md.bak", "notes.mdx")  # patterns match whole names, not prefixes
    found, failures = discover([root], IngestConfig(include=include, exclude=exclude))
    assert sorted(ids(found)) == expected
    assert codes(failures) == ([] if expected else ["no_files"])


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("a/b/c.md", "*.md", True),
        ("a/b/c.md", "a/*.md", False),
        ("a/b/c.md", "a/**/c.md", True),
        ("a/c.md", "a/**/c.md", True),
        ("a/b/c.md", "**", True),
        ("c.md", "c.m?", True),
        ("c.md", "c.m", False),
        ("a+b(1).md", "a+b(1).md", True),  # regex characters are literal
        ("axb1.md", "a+b(1).md", False),
    ],
)
def test_matches(path: str, pattern: str, expected: bool) -> None:
    assert matches(path, pattern) is expected


def test_empty_folder_is_a_failure(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    found, failures = discover([empty], IngestConfig())
    assert found == []
    assert failures == [Failure(str(empty), "no_files", failures[0].reason)]
    assert "include" in failures[0].reason


def test_folder_of_only_unwanted_files_is_a_failure(tmp_path: Path) -> None:
    root = tree(tmp_path / "r", "a.docx", ".hidden.md")
    _, failures = discover([root], IngestConfig())
    assert codes(failures) == ["no_files"]


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    good = tree(tmp_path / "good", "a.md")
    found, failures = discover([missing, good], IngestConfig())
    assert ids(found) == ["a.md"]  # one bad path does not stop the others
    assert [(f.path, f.code) for f in failures] == [(str(missing), "not_found")]
    assert failures[0].to_dict() == {
        "path": str(missing),
        "code": "not_found",
        "reason": failures[0].reason,
    }


def test_a_file_given_directly_is_named_by_its_name(tmp_path: Path) -> None:
    path = tree(tmp_path, "deep/folder/single.md") / "deep" / "folder" / "single.md"
    found, failures = discover([path], IngestConfig())
    assert failures == []
    assert found == [SourceFile(path.resolve(), "single.md", path.parent.resolve())]


@pytest.mark.promise(8)
def test_symlink_outside_the_root_is_refused(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", "secret.md") / "secret.md"
    root = tree(tmp_path / "root", "inside.md")
    (root / "leak.md").symlink_to(outside)
    (root / "alias.md").symlink_to(root / "inside.md")  # inside the root: fine
    found, failures = discover([root], IngestConfig())
    assert sorted(ids(found)) == ["alias.md", "inside.md"]
    assert [(f.path, f.code) for f in failures] == [
        (str(root.resolve() / "leak.md"), "symlink_outside_root")
    ]


@pytest.mark.promise(8)
def test_symlinked_folder_is_not_followed(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", "x.md")
    root = tree(tmp_path / "root", "inside.md")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    found, failures = discover([root], IngestConfig())
    assert ids(found) == ["inside.md"]
    assert [(f.path, f.code) for f in failures] == [
        (str(root.resolve() / "linked"), "symlink_outside_root")
    ]


def test_duplicate_ids_are_failures(tmp_path: Path) -> None:
    first = tree(tmp_path / "one", "same.md", "sub/x.md")
    second = tree(tmp_path / "two", "same.md", "sub/x.md", "unique.md")
    found, failures = discover([first, second], IngestConfig())
    assert sorted(ids(found)) == ["same.md", "sub/x.md", "unique.md"]
    assert {src.doc_id: src.root for src in found}["same.md"] == first.resolve()
    assert codes(failures) == ["duplicate_id", "duplicate_id"]
    assert {f.path for f in failures} == {
        str(second.resolve() / "same.md"),
        str(second.resolve() / "sub" / "x.md"),
    }
    assert str(first.resolve() / "same.md") in " ".join(f.reason for f in failures)


def test_same_file_twice_is_not_a_duplicate(tmp_path: Path) -> None:
    root = tree(tmp_path / "r", "a.md")
    found, failures = discover([root, root / "a.md", root], IngestConfig())
    assert ids(found) == ["a.md"]
    assert failures == []


def test_relative_paths_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path / "rel", "a.md")
    monkeypatch.chdir(tmp_path)
    found, _ = discover([Path("rel")], IngestConfig())
    assert found[0].path == (tmp_path / "rel" / "a.md").resolve()
    assert os.path.isabs(found[0].path)


def test_sample_corpus() -> None:
    found, failures = discover([CORPUS], IngestConfig())
    assert failures == []
    assert len(found) == 15
    assert sum(src.doc_id.endswith(".pdf") for src in found) == 3
    assert "manuals/aurora-e3-owners-manual.pdf" in ids(found)
