"""CSV and TSV FAQs: a header row, then a question per row.

Columns are found by header name, case-insensitively and whitespace-trimmed (``Alt Questions``
and ``alt-questions`` also name ``alt_questions``); other columns are ignored:

    question       required
    answer         required
    alt_questions  alternative questions separated by ``|`` or newlines
    key            the entry's key
    lang           the entry's language
    tags           separated by ``,`` or ``|``

``.tsv`` is tab-delimited; for ``.csv`` the delimiter (``,``, ``;`` or tab) is the one the
header line uses most. Text is UTF-8 (a BOM is allowed), UTF-16 with a BOM, or else cp1252.
Quoted fields may span lines; a record's line is the physical line it starts on, and
``source_anchor`` is ``line N``. Rows whose cells are all blank are skipped; any other bad row
fails the whole file with a ``ParseError`` at that row's line.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import make_entry, read_bytes, split_alternatives, split_tags, undecodable

__all__ = ["parse"]

NO_QUESTIONS = "no questions found: expected a row per question after the header"
EMPTY_FILE = "empty file: expected a header row naming 'question' and 'answer' columns"

_COLUMNS = ("question", "answer", "alt_questions", "key", "lang", "tags")
_REQUIRED = ("question", "answer")
_CSV_DELIMITERS = (",", ";", "\t")
_HEADER_SEPARATORS = re.compile(r"[\s-]+")
_QUOTED = re.compile(r'"[^"]*"')
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

Row = list[str]


def parse(path: Path) -> list[Entry]:
    """Read a ``.csv`` or ``.tsv`` file into entries, one per non-blank row."""
    text = _decode(read_bytes(path), path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else _sniff_delimiter(text)
    records = (
        (line, row) for line, row in _records(text, delimiter, path) if any(cell.strip() for cell in row)
    )
    header_line, header = next(records, (None, None))
    if header_line is None or header is None:
        raise ParseError(path, None, EMPTY_FILE)
    columns = _columns(header, path, header_line)
    entries = [_entry(row, columns, path, line) for line, row in records]
    if not entries:
        raise NoEntriesError(path, NO_QUESTIONS)
    return entries


def _decode(data: bytes, path: Path) -> str:
    """UTF-16 when a UTF-16 BOM says so, else UTF-8 (BOM or not), else cp1252."""
    if data.startswith(_UTF16_BOMS):
        return _decode_as(data, "utf-16", path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _decode_as(data, "cp1252", path)


def _decode_as(data: bytes, encoding: str, path: Path) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise undecodable(path, data, exc, encoding) from exc


def _sniff_delimiter(text: str) -> str:
    """The delimiter the header line (its first non-blank line) uses most; ``,`` on a tie."""
    header = next((line for line in text.split("\n") if line.strip()), "")
    unquoted = _QUOTED.sub("", header)
    return max(_CSV_DELIMITERS, key=unquoted.count)


def _records(text: str, delimiter: str, path: Path) -> Iterator[tuple[int, Row]]:
    """Yield ``(line the record starts on, cells)`` for every record, blank ones included."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ParseError(path, start, f"malformed record: {exc}") from exc


def _columns(header: Row, path: Path, line: int) -> dict[str, int]:
    """Map our column names to their positions in the header."""
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = _HEADER_SEPARATORS.sub("_", cell.strip().lower())
        if name not in _COLUMNS:
            continue
        if name in columns:
            raise ParseError(path, line, f"duplicate column {name!r}")
        columns[name] = index
    for name in _REQUIRED:
        if name not in columns:
            found = ", ".join(cell.strip() for cell in header if cell.strip())
            raise ParseError(path, line, f"missing column {name!r} (found: {found})")
    return columns


def _entry(row: Row, columns: dict[str, int], path: Path, line: int) -> Entry:
    def cell(name: str) -> str:
        index = columns.get(name)
        return row[index] if index is not None and index < len(row) else ""

    question, answer = cell("question"), cell("answer")
    for name, value in (("question", question), ("answer", answer)):
        if not value.strip():
            raise ParseError(path, line, f"empty {name}")
    return make_entry(
        question=question,
        answer=answer.replace("\r\n", "\n").replace("\r", "\n").strip(),
        source_file=path,
        source_anchor=f"line {line}",
        key=cell("key"),
        alt_questions=split_alternatives(cell("alt_questions")),
        lang=cell("lang"),
        tags=split_tags(cell("tags")),
        line=line,
    )
