"""Reading examples over table rows: parsed from real HTML tables, fair, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.prompt import neutralise
from tests.conftest import ROOT
from tuning.augment import parse_turn
from tuning.data import load_examples
from tuning.raft import NO_ANSWER, in_brand_voice
from tuning.raft_tables import (
    Cell,
    Table,
    TableConfig,
    build_examples,
    cells_of,
    load_tables,
    main,
    page_tables,
    render_rows,
)

READER = ROOT / "data" / "reader"
SHIPPED = READER / "reader_tables.jsonl"
TABLES = READER / "tables" / "tables.jsonl"

PAGE = """<div class="body"><p>Levels:</p>
<table class="docutils align-default">
<thead><tr><th class="head"><p>Level</p></th><th class="head"><p>Numeric value</p></th></tr></thead>
<tbody>
<tr><td><p><code>CRITICAL</code></p></td><td><p>50</p></td></tr>
<tr><td><p>ERROR</p></td><td><p>40 (1)</p></td></tr>
<tr><td><p>WARNING</p></td><td><p>30</p></td></tr>
<tr><td><p>SECRET</p></td><td><p>4.5 Nm</p></td></tr>
<tr><td><p>CITED</p></td><td><p>see [2]</p></td></tr>
<tr><td><p>INFO</p></td><td><p>20</p><p>or so</p></td></tr>
</tbody></table>
<table class="docutils"><thead><tr><th>a</th><th>b</th></tr></thead>
<tbody><tr><td colspan="2">spanned</td></tr><tr><td>1</td><td>2</td></tr>
<tr><td>3</td><td>4</td></tr><tr><td>5</td><td>6</td></tr></tbody></table>
<table class="docutils"><thead><tr><th>x</th><th>y</th></tr></thead>
<tbody><tr><td>1</td><td>2</td></tr></tbody></table></div>"""


def lines(path: Path) -> list[dict[str, list[dict[str, str]]]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_tables_are_read_row_by_row_without_notes_banned_facts_or_source_marks() -> None:
    tables = page_tables(PAGE, "logging", banned=["4.5 Nm"])
    # The spanned table and the one-row table are not read; footnote marks are dropped, the
    # paragraphs of a cell joined; a row that states an eval fact or a "[2]" is left out.
    assert tables == [
        Table(
            "logging",
            ("Level", "Numeric value"),
            (("CRITICAL", "50"), ("ERROR", "40"), ("WARNING", "30"), ("INFO", "20 or so")),
        )
    ]
    assert Table.from_json(tables[0].to_json()) == tables[0]


def test_rows_render_as_markdown_or_as_pdf_extraction_prints_them() -> None:
    header, rows = ("Code", "Meaning"), [("E05", "Battery low"), ("E07", "Hall sensor")]
    assert render_rows(header, rows, "markdown") == (
        "| Code | Meaning |\n|---|---|\n| E05 | Battery low |\n| E07 | Hall sensor |"
    )
    assert render_rows(None, rows, "plain") == "E05 Battery low\nE07 Hall sensor"
    assert render_rows(header, [("E09", "")], "plain") == "Code Meaning\nE09"


@pytest.fixture(scope="module")
def shipped() -> list[dict[str, list[dict[str, str]]]]:
    return lines(SHIPPED)


def _fair(example: dict, cell: Cell) -> bool:  # type: ignore[type-arg]
    """Whether `example` is a fair question about `cell`: with the oracle, its row is shown
    and no other shown row has the same value in the asked column; without it, only other
    rows of its table are shown."""
    user, answer = (m["content"] for m in example["messages"])
    turn = parse_turn(user)
    assert turn is not None and list(turn.passages) == [1], user
    shown = turn.passages[1].text.splitlines()
    style = "markdown" if shown[0].startswith("| ") else "plain"
    table = cell.table
    rendered = [render_rows(None, [r], style) for r in table.rows]
    if render_rows(table.header, [], style).split("\n")[0] == shown[0]:
        shown = shown[2:] if style == "markdown" else shown[1:]
    if not set(shown) <= set(rendered):
        return False
    rows = [table.rows[rendered.index(line)] for line in shown]
    asked = table.rows[cell.row]
    if answer.startswith(NO_ANSWER):
        return answer == f"{NO_ANSWER} {cell.what}." and asked not in rows
    same = [r for r in rows if r != asked and r[cell.column] == cell.value]
    return answer == f"{cell.answer} [1]." and asked in rows and not same


@pytest.mark.parametrize("share", [0.0, 0.3], ids=["shipped", "a third left out"])
def test_each_example_asks_a_shown_row_or_one_left_out_and_answers_it_as_written(
    shipped: list[dict],  # type: ignore[type-arg]
    share: float,
) -> None:
    # The shipped set asks only shown rows (a share left out taught the brand adapter to refuse
    # answerable questions); the generator's left-out examples are checked all the same.
    config = TableConfig(no_oracle_share=share)
    tables = load_tables(TABLES)
    examples = shipped if share == TableConfig().no_oracle_share else build_examples(tables, config)
    cells: dict[str, list[Cell]] = {}
    for table in tables:
        for cell in cells_of(table, config):
            cells.setdefault(cell.question, []).append(cell)
    assert len(examples) == config.count
    styles = set()
    for example in examples:
        user = example["messages"][0]["content"]
        turn = parse_turn(user)
        assert turn is not None
        passage = turn.passages[1].text
        assert neutralise(passage) == passage and len(passage) <= config.passage_chars
        assert len([line for line in passage.splitlines() if "---|" not in line]) >= 2
        styles.add("markdown" if passage.startswith("| ") else "plain")
        assert any(_fair(example, c) for c in cells[turn.question]), user
    assert styles == {"markdown", "plain"}
    absent = sum(e["messages"][1]["content"].startswith(NO_ANSWER) for e in examples)
    assert absent == round(share * len(examples))


def test_the_shipped_files_are_what_the_generator_makes(
    shipped: list[dict],  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    assert build_examples(load_tables(TABLES), TableConfig()) == shipped
    assert lines(READER / "reader_tables_brand.jsonl") == [in_brand_voice(e) for e in shipped]
    # The command writes the same files.
    out, brand = tmp_path / "t.jsonl", tmp_path / "b.jsonl"
    main(["--tables", str(TABLES), "--out", str(out), "--brand-out", str(brand)])
    assert out.read_bytes() == SHIPPED.read_bytes()
    assert brand.read_bytes() == (READER / "reader_tables_brand.jsonl").read_bytes()


def test_the_files_load_as_training_data(shipped: list[dict]) -> None:  # type: ignore[type-arg]
    for path in (SHIPPED, READER / "reader_tables_brand.jsonl"):
        data = load_examples(path, max_bad_fraction=0.0)
        assert len(data.examples) == len(shipped) and not data.problems
        assert all(parse_turn(e.messages[-2]["content"]) is not None for e in data.examples)


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match=r"python -m tuning\.raft_tables source"):
        load_tables(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="apt-get install python3-doc"):
        main(["source", "--doc-root", str(tmp_path), "--tables", str(tmp_path / "t.jsonl")])
    with pytest.raises(SystemExit):
        main(["--count", "1", "--tables", str(TABLES)])
    assert "--count must be at least 2 (got 1)" in capsys.readouterr().err
