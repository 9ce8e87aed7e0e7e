"""Plain-text FAQs: ``Q:`` / ``A:`` blocks.

How a file is read:

- A line starting with ``Q:`` or ``Question:`` (any case, optionally numbered: ``Q1:``,
  ``Question 2:``) opens a question; the question runs on over the following lines until the
  line starting with ``A:`` or ``Answer:``, whose text and the lines after it, up to the next
  question, are the answer. Blank lines between blocks are optional.
- The answer keeps its lines (Markdown-ish text); the indentation common to its continuation
  lines is removed, and leading and trailing blank lines are dropped.
- Text before the first question (a title, an introduction) is ignored.
- ``source_anchor`` is ``line N`` and ``line`` the 1-based line of the question.
- Errors (``ParseError`` at the line concerned): a question with no answer, an answer with no
  question, an empty question or answer; a file with no blocks at all fails as a whole.
- Encoding: a byte-order mark, else UTF-8, else charset-normalizer's guess.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import decode_text, make_entry, read_bytes

__all__ = ["parse"]

NO_BLOCKS = "no Q:/A: blocks found"

# "[ \t]*(?:\d+[ \t]*)?:" rather than "[ \t]*\d*[ \t]*:": two adjacent space runs would retry a
# long line of spaces in quadratic time.
_MARKER = re.compile(
    r"^[ \t]*(?:(?P<q>q|question)|(?P<a>a|answer))[ \t]*(?:\d+[ \t]*)?:[ \t]?(?P<text>.*)$", re.I
)


@dataclass(slots=True)
class _Block:
    """One question and its answer as read so far."""

    line: int
    question: list[str]
    answer_line: int | None = None
    answer: list[str] = field(default_factory=list)


def parse(path: Path) -> list[Entry]:
    """Read a ``.txt`` file of ``Q:`` / ``A:`` blocks into entries."""
    text = decode_text(read_bytes(path), path)
    blocks = _blocks(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), path)
    if not blocks:
        raise NoEntriesError(path, NO_BLOCKS)
    return [_entry(block, path) for block in blocks]


def _blocks(lines: list[str], path: Path) -> list[_Block]:
    blocks: list[_Block] = []
    for number, line in enumerate(lines, start=1):
        marker = _MARKER.match(line)
        current = blocks[-1] if blocks else None
        if marker and marker.group("q"):
            _check_answered(current, path)
            blocks.append(_Block(number, [marker.group("text")]))
        elif marker and marker.group("a"):
            if current is None or current.answer_line is not None:
                raise ParseError(path, number, _orphan_answer(current))
            current.answer_line = number
            current.answer.append(marker.group("text"))
        elif current is not None and current.answer_line is None:
            current.question.append(line)
        elif current is not None:
            current.answer.append(line)
    _check_answered(blocks[-1] if blocks else None, path)
    return blocks


def _check_answered(block: _Block | None, path: Path) -> None:
    if block is not None and block.answer_line is None:
        raise ParseError(path, block.line, "question without an answer: expected an A: line after it")


def _orphan_answer(previous: _Block | None) -> str:
    if previous is None:
        return "answer without a question: expected a Q: line before it"
    return f"answer without a question: the question on line {previous.line} already has an answer"


def _entry(block: _Block, path: Path) -> Entry:
    question = " ".join(part.strip() for part in block.question)
    if not question.strip():
        raise ParseError(path, block.line, "empty question")
    answer = _answer_text(block.answer)
    if not answer:
        raise ParseError(path, block.answer_line, "empty answer")
    return make_entry(
        question=question,
        answer=answer,
        source_file=path,
        source_anchor=f"line {block.line}",
        line=block.line,
    )


def _answer_text(lines: list[str]) -> str:
    """The first line stripped, the rest dedented, blank edges dropped."""
    first, rest = lines[0].strip(), textwrap.dedent("\n".join(lines[1:]))
    text = f"{first}\n{rest}" if rest.strip() else first
    kept = [line.rstrip() for line in text.split("\n")]
    return "\n".join(kept).strip("\n")
