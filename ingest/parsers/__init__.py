"""One parser per document format, and the normalisation they all share.

``parse_file(path)`` picks a parser by the file's lower-cased suffix:

    .md .markdown  ->  ingest.parsers.markdown   a question per heading
    .csv .tsv      ->  ingest.parsers.tabular    a question per row
    .jsonl .json   ->  ingest.parsers.jsonl      a question per line / per object in a list
    .html .htm     ->  ingest.parsers.html       headings, <dt>/<dd>, <details>, FAQPage JSON-LD
    .txt           ->  ingest.parsers.plaintext  Q: / A: blocks
    .docx          ->  ingest.parsers.docx       a question per heading, bold or "?" paragraph
    .pdf           ->  ingest.parsers.pdf        a question per bold, larger or "?" line

Every parser returns a list of :class:`~ingest.entry.Entry` in document order, or raises
:class:`~ingest.errors.ParseError` for the whole file (the pipeline makes files transactional).
Every parser builds its entries with :func:`make_entry`, so questions are whitespace-normalised
and alternative questions deduplicated the same way whatever the format.

The parser modules import the helpers below from this package, so this module imports a parser
module only when ``parse_file`` first needs it (which also keeps python-docx, pypdf and
BeautifulSoup out of programs that never read those formats).
"""

from __future__ import annotations

import codecs
import importlib
import inspect
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError, ParseWarning, UnsupportedFormatError

__all__ = ["SUPPORTED_SUFFIXES", "parse_file"]

Parser = Callable[[Path], list[Entry]]

# Suffix -> parser module; a module (and the libraries it needs) is imported on first use.
_PARSER_MODULES: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "tabular",
    ".tsv": "tabular",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".html": "html",
    ".htm": "html",
    ".txt": "plaintext",
    ".docx": "docx",
    ".pdf": "pdf",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_PARSER_MODULES)

_WHITESPACE = re.compile(r"\s+")
_ALTERNATIVE_SEPARATORS = re.compile(r"[|\r\n]+")
_TAG_SEPARATORS = re.compile(r"[,|]")
# UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def parse_file(path: Path, *, warnings: list[ParseWarning] | None = None) -> list[Entry]:
    """Parse one editor's document into entries, choosing the parser by suffix.

    Parsers that skip records on purpose (a question without an answer) note them in ``warnings``.
    """
    parser = _parser_for(path.suffix.lower())
    if parser is None:
        raise UnsupportedFormatError(path)
    if "warnings" in inspect.signature(parser).parameters:
        return parser(path, warnings=warnings)
    return parser(path)


def _parser_for(suffix: str) -> Parser | None:
    """The ``parse`` function of the module for ``suffix``, imported on first use."""
    module = _PARSER_MODULES.get(suffix)
    if module is None:
        return None
    parser: Parser = importlib.import_module(f"{__name__}.{module}").parse
    return parser


# --- helpers shared by the parser modules -------------------------------------------------------


def read_bytes(path: Path) -> bytes:
    """Read a whole document, turning OS errors into a ``ParseError`` for the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ParseError(path, None, f"cannot read file: {exc.strerror or exc}") from exc


def decode_utf8(data: bytes, path: Path) -> str:
    """Decode UTF-8 (with or without BOM); undecodable bytes raise ``ParseError`` at their line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise undecodable(path, data, exc, "UTF-8") from exc


def decode_text(data: bytes, path: Path, *, declared: str | None = None) -> str:
    """Decode a text document whose encoding is not fixed by its format.

    In order: a byte-order mark (UTF-8, UTF-16, UTF-32) wins; then ``declared`` (e.g. an HTML
    page's ``<meta charset>``) when it names a known codec and the bytes decode with it; then
    strict UTF-8; then charset-normalizer's best guess. ``ParseError`` when none fits.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise undecodable(path, data, exc, encoding) from exc
    for encoding in (_known_codec(declared), "utf-8"):
        if encoding is not None:
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                continue
    return _detect(data, path)


def _known_codec(name: str | None) -> str | None:
    """The codec's canonical name, or ``None`` for no name or a name Python does not know."""
    if not name:
        return None
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        return None


def _detect(data: bytes, path: Path) -> str:
    """charset-normalizer's best guess at the encoding, imported only when needed."""
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError(path, None, "cannot tell the text encoding: not UTF-8, and detection failed")
    return str(best)


def undecodable(path: Path, data: bytes, exc: UnicodeDecodeError, encoding: str) -> ParseError:
    """Build the ``ParseError`` for bytes that ``encoding`` cannot decode, at their line."""
    line = data[: exc.start].decode(exc.encoding, errors="replace").count("\n") + 1
    bad = data[exc.start : exc.start + 1].hex()
    return ParseError(path, line, f"not valid {encoding}: byte 0x{bad} cannot be decoded")


def normalize_question(text: str) -> str:
    """Strip a question and collapse every run of whitespace inside it to one space."""
    return _WHITESPACE.sub(" ", text).strip()


# A question mark in the scripts that have their own (full-width, Arabic, Greek), or an opening
# word that makes an English heading a question even without one ("How to move a license").
_QUESTION_MARKS = ("?", "\uff1f", "\u061f", "\u037e")
_QUESTION_OPENINGS = frozenset(
    "how what why when where who whom whose which can could do does did is are was were will "
    "would should shall may might must have has had am isn't aren't don't doesn't can't won't".split()
)
_GREEK = re.compile("[\u0370-\u03ff]")
_QUESTION_TAIL = re.compile(r"[\s*_`)\]\"'\u201d\u2019]+$")


def reads_as_question(text: str) -> bool:
    """Whether a heading reads as a question: it ends with a question mark (trailing markup and
    quotes aside), or starts with an English question word ("How to ...", "Can I ...")."""
    stripped = _QUESTION_TAIL.sub("", text)
    if stripped.endswith(_QUESTION_MARKS):
        return True
    if stripped.endswith(";") and _GREEK.search(stripped):  # Greek writes its "?" as ";"
        return True
    words = text.strip().lstrip("*_`\"'#0-9.) ").split(maxsplit=1)
    return bool(words) and words[0].lower().rstrip(",:") in _QUESTION_OPENINGS


def require_a_question(entries: list[Entry], path: Path, reason: str) -> list[Entry]:
    """A page of headings none of which reads as a question (a README, a manual) is not a FAQ:
    :class:`NoEntriesError` naming the first heading, rather than one entry per section."""
    if entries and not any(reads_as_question(entry.question) for entry in entries):
        first = entries[0].question
        shown = first if len(first) <= 60 else first[:59] + "\u2026"
        raise NoEntriesError(path, f"{reason}; no heading reads as a question (the first: {shown!r})")
    return entries


def split_alternatives(text: str) -> list[str]:
    """Split alternative questions written in one cell, separated by ``|`` or newlines."""
    return [part for part in _ALTERNATIVE_SEPARATORS.split(text) if part.strip()]


def split_tags(text: str) -> list[str]:
    """Split tags written in one cell, separated by ``,`` or ``|``."""
    return [part.strip() for part in _TAG_SEPARATORS.split(text) if part.strip()]


def make_entry(
    *,
    question: str,
    answer: str,
    source_file: Path | str,
    source_anchor: str,
    key: str | None = None,
    alt_questions: Iterable[str] = (),
    lang: str | None = None,
    tags: Iterable[str] = (),
    line: int | None = None,
) -> Entry:
    """Build an ``Entry`` with the normalisation every parser applies.

    The question and each alternative are whitespace-normalised; empty alternatives, exact
    duplicates and alternatives equal to the question are dropped. Tags are stripped and
    deduplicated, keeping their first-seen order. An empty key or language becomes ``None``.
    The answer is stored as given: each parser trims it in the way its format needs.
    """
    normalized = normalize_question(question)
    alternatives = _unique(normalize_question(alt) for alt in alt_questions)
    return Entry(
        question=normalized,
        answer=answer,
        source_file=str(source_file),
        source_anchor=source_anchor,
        key=(key or "").strip() or None,
        alt_questions=tuple(alt for alt in alternatives if alt != normalized),
        lang=(lang or "").strip() or None,
        tags=tuple(_unique(tag.strip() for tag in tags)),
        line=line,
    )


def _unique(items: Iterable[str]) -> list[str]:
    """Non-empty items without repeats, in first-seen order."""
    return [item for item in dict.fromkeys(items) if item]
