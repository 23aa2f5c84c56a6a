"""Reading-skill examples whose fact sits in a table row, as ingest shows a company's tables.

The comparison's wrong answers cluster on tables (a retention schedule, an error-code list, a
leave table): the shown window holds the right row, and the model takes a neighbour row's value.
The prose-only set of `tuning.raft` never shows a table. This module makes that set's table
counterpart from the same permissively licensed source, the Python library reference:

- `python -m tuning.raft_tables source` reads the HTML tables of python3-doc's library pages
  (header row + body rows, one cell each) into `data/reader/tables/tables.jsonl`, leaving out any
  row that mentions a key fact of the evaluation cases.
- `python -m tuning.raft_tables` makes the examples: one passage per turn, as the server shows
  one focused window, holding a few rows around the oracle row, rendered as Markdown (`| a | b |`,
  as the Markdown reader keeps them) or as PDF extraction prints them (cells joined by spaces);
  the question names the row and the column, the answer states the cell as written and cites
  it. `no_oracle_share` of them (none by default) show rows of the same table but not the asked
  one, answered `NO_ANSWER` + what was asked. At 0.15 they taught the brand adapter to refuse
  answerable questions (false abstention 0.02 -> 0.18): the examples name the row as the table
  writes it, so "the row's name is not in the passage" became the cue to refuse, and users rarely
  name a row as the table writes it.

Deterministic per seed; the brand-voice copy uses `tuning.raft.in_brand_voice`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from ingest.atomic import atomic_write_text
from tuning.raft import NO_ANSWER, Passage, render, write_sets
from tuning.raft_source import DOC_ROOT, banned_facts, mentions

Example = dict[str, list[dict[str, str]]]
_NOTE = re.compile(r"\s*\(\d+\)")  # "(1)": a footnote mark of the docs, not part of the value
_ALNUM = re.compile(r"[A-Za-z0-9]")
_BLOCK_LIKE = re.compile(r"\[\d+\]")  # "[1]" in a cell would read as a source number


@dataclass(frozen=True)
class Table:
    page: str  # library page name, e.g. "struct"
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_json(self) -> str:
        record = {"page": self.page, "header": self.header, "rows": self.rows}
        return json.dumps(record, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Table:
        record = json.loads(line)
        return cls(record["page"], tuple(record["header"]), tuple(tuple(r) for r in record["rows"]))


class _TableParser(HTMLParser):
    """The docutils tables of one page: header and body rows, text per cell; a table with
    spanned cells, more or fewer than one header row, or ragged rows is skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[tuple[list[list[str]], list[list[str]]]] = []
        self._depth = 0  # nested tables: only the outermost is read
        self._head: list[list[str]] = []
        self._body: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head = False
        self._spanned = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._depth += 1
            if self._depth == 1:
                self._head, self._body, self._spanned = [], [], False
        elif self._depth != 1:
            return
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
            names = {name for name, _ in attrs}
            self._spanned |= bool(names & {"colspan", "rowspan"})
        elif tag in ("p", "br", "li") and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            if self._depth == 1 and not self._spanned:
                self.tables.append((self._head, self._body))
            self._depth -= 1
        elif self._depth != 1:
            return
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(_NOTE.sub("", " ".join("".join(self._cell).split())).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            (self._head if self._in_head else self._body).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._depth == 1 and self._cell is not None:
            self._cell.append(data.replace("¶", ""))


def page_tables(html: str, page: str, banned: Sequence[str] = ()) -> list[Table]:
    """The well-formed tables of one page (2+ columns, 3+ rows, one header row), without the
    rows that mention any of `banned` (whole words, any case)."""
    parser = _TableParser()
    parser.feed(html)
    out: list[Table] = []
    for head, body in parser.tables:
        if len(head) != 1 or len(head[0]) < 2 or not all(head[0]):
            continue
        width = len(head[0])
        rows = tuple(
            tuple(r)
            for r in body
            if len(r) == width
            and not mentions(" ".join(r), banned)
            and not _BLOCK_LIKE.search(" ".join(r))
        )
        if len(rows) >= 3:
            out.append(Table(page, tuple(head[0]), rows))
    return out


def build_source(doc_root: Path, out: Path, banned: Sequence[str]) -> int:
    """Every library page's tables (pages sorted) as JSON lines in `out`; returns the count."""
    pages = sorted((doc_root / "library").glob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no library pages under {doc_root}: apt-get install python3-doc")
    tables = [t for p in pages for t in page_tables(p.read_text("utf-8"), p.stem, banned)]
    atomic_write_text(out, "".join(t.to_json() + "\n" for t in tables))
    return len(tables)


def load_tables(path: Path) -> list[Table]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: python -m tuning.raft_tables source")
    return [Table.from_json(line) for line in path.read_text("utf-8").splitlines() if line]


@dataclass(frozen=True)
class TableConfig:
    count: int = 120
    no_oracle_share: float = 0.0  # see the module doc: 0.15 taught refusing answerable questions
    seed: int = 29
    passage_chars: int = 300  # the server's focused window (`chat.focus_chars`)
    max_cell_chars: int = 40  # the asked value and the row's name: short, as a fact is
    max_per_table: int = 3  # no table (a 60-row status-code list) dominates the set


@dataclass(frozen=True)
class Cell:
    """One question a table answers: the value in row `row`, column `column`."""

    table: Table
    row: int
    column: int

    @property
    def numeric(self) -> bool:  # the value holds a digit: most facts users ask are numbers
        return any(ch.isdigit() for ch in self.value)

    @property
    def key(self) -> str:
        return self.table.rows[self.row][0]

    @property
    def value(self) -> str:
        return self.table.rows[self.row][self.column]

    def _names(self) -> tuple[str, str]:
        return _lower(self.table.header[self.column]), _lower(self.table.header[0])

    @property
    def question(self) -> str:
        column, first = self._names()
        return f"What is the {column} for {first} {self.key}?"

    @property
    def answer(self) -> str:  # without the citation
        column, first = self._names()
        # A cell that is a sentence ("Open for reading.") ends the answer without its stop.
        return f"The {column} for {first} {self.key} is {self.value.removesuffix('.')}"

    @property
    def what(self) -> str:
        column, first = self._names()
        return f"what the {column} for {first} {self.key} is"


def _lower(header: str) -> str:
    """A column name inside a sentence: capitalised words lowered, acronyms and code kept."""
    return " ".join(w.lower() if w.istitle() and len(w) > 1 else w for w in header.split())


def _short(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and bool(_ALNUM.search(text))


def cells_of(table: Table, config: TableConfig) -> Iterator[Cell]:
    """The cells a question can ask: short values in rows with a short, unique name."""
    keys = [r[0] for r in table.rows]
    headers_ok = all(_short(h, 30) for h in table.header)
    for i, row in enumerate(table.rows):
        if not headers_ok or keys.count(row[0]) > 1 or not _short(row[0], config.max_cell_chars):
            continue
        for c in range(1, len(row)):
            if _short(row[c], config.max_cell_chars) and row[c] != row[0]:
                yield Cell(table, i, c)


def render_rows(header: tuple[str, ...] | None, rows: Sequence[tuple[str, ...]], style: str) -> str:
    """Rows as a reader shows them: 'markdown' (`| a | b |`, a rule under the header) or
    'plain' (cells joined by spaces, one row a line, as PDF extraction prints a table)."""
    if style == "plain":
        lines = [" ".join(c for c in r if c) for r in ([header] if header else []) + list(rows)]
        return "\n".join(lines)
    lines = [f"| {' | '.join(r)} |" for r in rows]
    if header:
        lines[:0] = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    return "\n".join(lines)


def _window(
    cell: Cell, with_oracle: bool, config: TableConfig, rng: random.Random
) -> tuple[list[int], tuple[str, ...] | None, str] | None:
    """Row indices shown (consecutive, holding the oracle row or, without it, its neighbours),
    whether the header is shown, and the style; None when no window fits `passage_chars`."""
    style = rng.choice(("markdown", "plain"))
    header = cell.table.header if rng.random() < 0.6 else None
    n = len(cell.table.rows)
    # Without the oracle: start from the row above the asked one (below it for the first row),
    # which is left out.
    shown = [cell.row] if with_oracle else [cell.row - 1 if cell.row else cell.row + 1]
    if len(render_rows(header, [cell.table.rows[i] for i in shown], style)) > config.passage_chars:
        return None
    wanted = rng.randint(2, 5)
    while len(shown) < wanted:
        before, after = shown[0] - 1, shown[-1] + 1
        options = [i for i in (before, after) if 0 <= i < n and (with_oracle or i != cell.row)]
        if not options:
            break
        grown = sorted([*shown, rng.choice(options)])
        if (
            len(render_rows(header, [cell.table.rows[i] for i in grown], style))
            > config.passage_chars
        ):
            break
        shown = grown
    if len(shown) < 2:  # a neighbour row to tell apart is the point
        return None
    return shown, header, style


def make_example(
    cell: Cell, with_oracle: bool, config: TableConfig, rng: random.Random
) -> Example | None:
    """One chat example over a window of `cell`'s table, or None where it cannot be fair:
    no window fits, or a shown row other than the oracle has the same value in that column."""
    window = _window(cell, with_oracle, config, rng)
    if window is None:
        return None
    shown, header, style = window
    rows = [cell.table.rows[i] for i in shown]
    if with_oracle and any(
        r[cell.column] == cell.value for r, i in zip(rows, shown, strict=True) if i != cell.row
    ):
        return None
    passage = Passage(f"library/{cell.table.page}.txt", render_rows(header, rows, style))
    turn = render(cell.question, [passage])
    answer = f"{cell.answer} [1]." if with_oracle else f"{NO_ANSWER} {cell.what}."
    return {
        "messages": [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
    }


def build_examples(tables: Sequence[Table], config: TableConfig) -> list[Example]:
    """Up to `config.count` examples, at most `max_per_table` from one table, a
    `no_oracle_share` of them without the asked row."""
    rng = random.Random(config.seed)
    cells = [c for t in tables for c in cells_of(t, config)]
    rng.shuffle(cells)
    # Numbers first (a retention period, a torque, a code), words after: the stable sort keeps
    # the shuffle within each group.
    cells.sort(key=lambda c: not c.numeric)
    per_table: dict[Table, int] = {}
    seen: set[str] = set()
    examples: list[Example] = []
    absent = 0
    for cell in cells:
        if len(examples) == config.count:
            break
        table = cell.table
        if per_table.get(table, 0) >= config.max_per_table or cell.question in seen:
            continue
        without = absent < round(config.no_oracle_share * (len(examples) + 1))
        example = make_example(cell, not without, config, rng)
        if example is None:
            continue
        seen.add(cell.question)
        per_table[table] = per_table.get(table, 0) + 1
        examples.append(example)
        absent += without
    return examples


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Reading-skill examples over table rows.")
    parser.add_argument(
        "action", nargs="?", choices=("examples", "source"), default="examples",
        help="'source': read python3-doc's tables into --tables; 'examples' (default): write "
        "the examples from --tables",
    )  # fmt: skip
    parser.add_argument("--doc-root", type=Path, default=DOC_ROOT)
    parser.add_argument("--tables", type=Path, default=Path("data/reader/tables/tables.jsonl"))
    parser.add_argument("--eval-cases", type=Path, default=Path("data/eval/cases.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("data/reader/reader_tables.jsonl"))
    parser.add_argument(
        "--brand-out", type=Path, default=Path("data/reader/reader_tables_brand.jsonl")
    )
    parser.add_argument("--count", type=int, default=TableConfig.count)
    parser.add_argument("--seed", type=int, default=TableConfig.seed)
    args = parser.parse_args(argv)
    if args.action == "source":
        args.tables.parent.mkdir(parents=True, exist_ok=True)
        count = build_source(args.doc_root, args.tables, banned_facts(args.eval_cases))
        print(f"{count} tables -> {args.tables}")
        return
    if args.count < 2:
        parser.error(f"--count must be at least 2 (got {args.count})")
    examples = build_examples(
        load_tables(args.tables), TableConfig(count=args.count, seed=args.seed)
    )
    absent = write_sets(examples, args.out, args.brand_out)
    print(
        f"{len(examples)} examples ({absent} without the asked row) -> {args.out}, {args.brand_out}"
    )


if __name__ == "__main__":
    main()
