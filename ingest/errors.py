"""Errors raised while reading editors' documents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class IngestError(Exception):
    """Root of the ingest package's errors."""


class ParseError(IngestError):
    """A document (or one record in it) does not parse.

    ``line`` is 1-based and ``None`` when the problem concerns the whole file.
    """

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class ParseWarning:
    """Something skipped on purpose while parsing (the file still ingests)."""

    path: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"


class NoEntriesError(ParseError):
    """The document parsed, but holds nothing that looks like a question and its answer."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(path, None, reason)


class UnsupportedFormatError(IngestError):
    """No parser handles this file type."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: unsupported file type {self.path.suffix or '(none)'!r}")
