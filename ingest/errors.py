"""Errors raised while reading editors' documents.

    IngestError                 the root
    ├── ParseError              a document (or one record in it) does not parse: path, line, reason
    │   └── NoEntriesError      it parses, but holds no question with an answer
    └── UnsupportedFormatError  no parser for the file's type

A reason is one line of at most ``MAX_REASON`` characters: whatever a parser or a library put
in it (a damaged file's bytes, a header row of a megabyte), the report line ``file:line: reason``
stays readable, in a terminal and in a Telegram message alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_REASON = 300


class IngestError(Exception):
    """Root of the ingest package's errors."""


class ParseError(IngestError):
    """A document (or one record in it) does not parse.

    ``line`` is 1-based and ``None`` when the problem concerns the whole file.
    """

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = clear_reason(reason)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {self.reason}")


def clear_reason(reason: str) -> str:
    """The reason on one line (runs of whitespace, line breaks included, become one space),
    cut to ``MAX_REASON`` characters."""
    text = " ".join(reason.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class ParseWarning:
    """Something skipped on purpose while parsing (the file still ingests)."""

    path: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {clear_reason(self.reason)}"


class NoEntriesError(ParseError):
    """The document parsed, but holds nothing that looks like a question and its answer."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(path, None, reason)


class UnsupportedFormatError(IngestError):
    """No parser handles this file type."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: unsupported file type {self.path.suffix or '(none)'!r}")
