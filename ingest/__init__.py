"""Editors' documents -> KB entries: one parser per format, one pipeline. No aiogram here.

Errors (all carry context as attributes):

    IngestError                 root of this package
    ├── ParseError              a document does not parse (path, line, reason)
    │   └── NoEntriesError      it parses, but holds no question/answer pairs
    └── UnsupportedFormatError  no parser for this file type (path)
"""

from ingest.entry import Entry
from ingest.errors import IngestError, NoEntriesError, ParseError, UnsupportedFormatError

__all__ = ["Entry", "IngestError", "NoEntriesError", "ParseError", "UnsupportedFormatError"]
