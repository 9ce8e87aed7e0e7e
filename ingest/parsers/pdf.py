"""PDF FAQs: text extracted with pypdf, questions recognised by typography or a final ``?``.

How a document is read:

- Text is extracted page by page (pypdf), with each line's font size and weight. A line is a
  heading when it is bold (in a document whose body text is not bold) or set at least 15%
  larger than the body text; consecutive heading lines of the same style are one heading; a
  bold line ending in ``:`` is a lead-in, not a heading. A line in body type that ends in
  ``?`` and starts a paragraph (first on its page, after a larger gap, or after a line ending
  a sentence) is a question too.
- Every heading or question followed by text is an entry; the text up to the next heading or
  question is its answer. Headings rank by size (then weight), questions in body type below
  them all; a heading with no text of its own that groups questions is a category (its
  lower-cased text a tag of the entries beneath it), except the document's single largest
  first heading, its title.
- Answers: lines are joined into paragraphs (a larger gap, a page break after a full stop or a
  bullet starts a new one), words hyphenated across a line break are joined, bullet lines
  (``•``, ``-``, ``*`` ...) become ``- `` items.
- Running headers and footers (lines near the top or bottom edge whose text, digits aside,
  repeats on every page of a document of two pages or more) are dropped.
- ``source_anchor`` is ``page N`` of the question; ``line`` is ``None``.
- Errors: an unreadable or encrypted (password-protected) PDF, and a PDF with no text at all
  (``no extractable text (scanned PDF?)``), fail the whole file.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, PyPdfError
from pypdf.errors import DeprecationError as PypdfDeprecationError

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import make_entry, normalize_question, read_bytes

__all__ = ["parse"]

NO_TEXT = "no extractable text (scanned PDF?)"
NO_QUESTIONS = "no questions found: expected bold or larger question lines, or lines ending in '?'"

_BOLD_FONT = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)
_FORCE_BOLD_FLAG = 1 << 18
_HEADING_SCALE = 1.15
_EDGE_BAND = 0.12  # top and bottom share of the page where running headers and footers sit
_PARAGRAPH_GAP = 1.45  # a gap this many typical line spacings or more starts a paragraph
_BULLET = re.compile(r"^[•◦▪▫●○‣⁃∙·*\-–—\uf0b7]\s+")
_SENTENCE_END = re.compile(r"[.!?:;)\"'»”]$")
_HYPHENATED = re.compile(r"[^\W\d_]-$")
_DIGITS = re.compile(r"\d+")
# The errors pypdf raises on damaged files, beyond its own: found by fuzzing (an unknown
# filter or encryption handler is NotImplementedError; a damaged object graph trips its
# internal asserts and attribute accesses; a huge number overflows a conversion).
_READ_ERRORS = (
    PyPdfError,
    PypdfDeprecationError,  # an abbreviated filter name pypdf 7 no longer reads
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    AssertionError,
    NotImplementedError,
    ArithmeticError,
    RecursionError,
    zlib.error,
    struct.error,
)


@dataclass(slots=True)
class _Line:
    """One text line of a page, with its typography."""

    text: str
    page: int
    y: float
    size: float
    bold: bool
    edge: bool = False  # near the top or bottom of the page


@dataclass(slots=True)
class _Section:
    level: int
    title: str
    page: int
    body: list[_Line] = field(default_factory=list)


class _LineBuilder:
    """Collects the text pieces pypdf reports for one page into lines."""

    def __init__(self, page: int) -> None:
        self.page = page
        self.lines: list[_Line] = []
        self._parts: list[tuple[str, float, bool]] = []
        self._y: float | None = None

    def add(self, text: str, y: float, size: float, bold: bool) -> None:
        """A piece of text; a newline in it, or a baseline half a size away, ends the line."""
        for index, part in enumerate(text.split("\n")):
            if index:
                self.end_line()
            if not part:
                continue
            if part.strip() and self._y is not None and abs(y - self._y) > max(size, 1.0) * 0.5:
                self.end_line()
            if part.strip() and self._y is None:
                self._y = y
            self._parts.append((part, size, bold))

    def end_line(self) -> None:
        text = normalize_question("".join(part for part, _, _ in self._parts))
        if text and self._y is not None:
            self.lines.append(_Line(text, self.page, self._y, *_typography(self._parts)))
        self._parts, self._y = [], None


def parse(path: Path) -> list[Entry]:
    """Read a PDF FAQ into entries, one per question line followed by text."""
    reader = _open(path)
    lines = _drop_running_lines(list(_lines(reader, path)))
    if not lines:
        raise ParseError(path, None, NO_TEXT)
    style = _body_style(lines)
    entries = _entries(_sections(lines, style), style, path)
    if not entries:
        raise NoEntriesError(path, NO_QUESTIONS)
    return entries


def _open(path: Path) -> PdfReader:
    data = read_bytes(path)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseError(path, None, "encrypted PDF: it needs a password to be read")
        if len(reader.pages) == 0:  # reads the page tree: a damaged one fails here, not later
            raise ParseError(path, None, "the PDF has no pages")
    except DependencyError as exc:
        raise ParseError(path, None, f"encrypted PDF: cannot decrypt it here ({exc})") from exc
    except _READ_ERRORS as exc:
        raise ParseError(path, None, f"not a readable PDF: {_detail(exc)}") from exc
    return reader


def _detail(exc: BaseException) -> str:
    """pypdf's message; for errors from its internals (an assert, a missing attribute), the type too."""
    message = str(exc).strip()
    if isinstance(exc, PyPdfError | PypdfDeprecationError | ValueError | NotImplementedError) and message:
        return message
    return f"damaged PDF structure ({type(exc).__name__}: {message})" if message else type(exc).__name__


# --- text and typography ------------------------------------------------------------------------


def _lines(reader: PdfReader, path: Path) -> Iterator[_Line]:
    for number, page in enumerate(reader.pages, start=1):
        try:
            yield from _page_lines(page, number)
        except _READ_ERRORS as exc:
            raise ParseError(path, None, f"page {number}: cannot extract text: {_detail(exc)}") from exc


def _page_lines(page: PageObject, number: int) -> list[_Line]:
    builder = _LineBuilder(number)

    def visit(text: str, cm: list[float], tm: list[float], font: Any, font_size: float) -> None:
        if text:
            y, scale = _position(cm, tm)
            builder.add(text, y, round(font_size * scale, 1), _is_bold(font))

    page.extract_text(visitor_text=visit)
    builder.end_line()
    bottom, height = float(page.mediabox.bottom), float(page.mediabox.height)
    for line in builder.lines:
        share = (line.y - bottom) / height if height else 0.5
        line.edge = share < _EDGE_BAND or share > 1 - _EDGE_BAND
    return builder.lines


def _position(cm: list[float], tm: list[float]) -> tuple[float, float]:
    """The baseline's y on the page and the vertical scale of text space (Tm x CTM)."""
    c = tm[2] * cm[0] + tm[3] * cm[2]
    d = tm[2] * cm[1] + tm[3] * cm[3]
    y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
    return y, math.hypot(c, d) or 1.0


def _is_bold(font: Any) -> bool:
    """Bold by the font's name, its descriptor's weight or its ForceBold flag."""
    if not font:
        return False
    if _BOLD_FONT.search(str(font.get("/BaseFont", ""))):
        return True
    descriptor = font.get("/FontDescriptor")
    descriptor = descriptor.get_object() if descriptor is not None else None
    if not descriptor:
        return False
    weight = descriptor.get("/FontWeight")
    flags = descriptor.get("/Flags")
    return (isinstance(weight, int | float) and weight >= 600) or (
        isinstance(flags, int) and bool(flags & _FORCE_BOLD_FLAG)
    )


def _typography(parts: list[tuple[str, float, bool]]) -> tuple[float, bool]:
    """A line's size (the one most of its characters have) and weight (bold if nearly all is)."""
    sizes: Counter[float] = Counter()
    bold = total = 0
    for text, size, is_bold in parts:
        count = len(text.strip())
        sizes[size] += count
        total += count
        bold += count if is_bold else 0
    size = sizes.most_common(1)[0][0] if sizes else 0.0
    return size, total > 0 and bold >= 0.9 * total


# --- running headers and footers ----------------------------------------------------------------


def _drop_running_lines(lines: list[_Line]) -> list[_Line]:
    """Without lines near a page edge whose text (digits aside) recurs on every page."""
    pages = {line.page for line in lines}
    if len(pages) < 2:
        return lines
    seen: dict[str, set[int]] = {}
    for line in lines:
        if line.edge:
            seen.setdefault(_running_key(line.text), set()).add(line.page)
    running = {key for key, on_pages in seen.items() if on_pages == pages}
    return [line for line in lines if not (line.edge and _running_key(line.text) in running)]


def _running_key(text: str) -> str:
    return _DIGITS.sub("#", text.lower())


# --- questions and sections ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Style:
    """The document's body type and its typical line spacing."""

    size: float
    bold: bool
    spacing: float

    def is_heading(self, line: _Line) -> bool:
        """Larger than body text, or bold in a body that is not (a bold lead-in ending in ':' aside)."""
        if line.size >= self.size * _HEADING_SCALE:
            return True
        return line.bold and not self.bold and not line.text.endswith(":")


def _body_style(lines: list[_Line]) -> _Style:
    sizes: Counter[float] = Counter()
    bold_chars = 0
    for line in lines:
        sizes[line.size] += len(line.text)
        bold_chars += len(line.text) if line.bold else 0
    size = sizes.most_common(1)[0][0]
    gaps: Counter[float] = Counter(
        round(previous.y - line.y, 1)
        for previous, line in itertools.pairwise(lines)
        if previous.page == line.page and previous.size == line.size == size and previous.y > line.y
    )
    # The most frequent gap between body lines (the smaller on a tie) is the line spacing.
    spacing = min(gaps, key=lambda gap: (-gaps[gap], gap)) if gaps else size * 1.2
    return _Style(size, bold_chars * 2 > sum(sizes.values()), spacing)


def _sections(lines: list[_Line], style: _Style) -> list[_Section]:
    """Split the lines at headings and questions; text before the first one is dropped."""
    ranks = _heading_ranks(lines, style)
    sections: list[_Section] = []
    previous: _Line | None = None
    for line in lines:
        level = _level(line, previous, style, ranks)
        if level is not None and _continues_heading(sections, line, previous, style, level):
            sections[-1].title += " " + line.text
        elif level is not None:
            sections.append(_Section(level, line.text, line.page))
        elif sections:
            sections[-1].body.append(line)
        previous = line
    return sections


def _heading_ranks(lines: list[_Line], style: _Style) -> dict[tuple[float, bool], int]:
    """Heading styles ranked 1, 2, ... from the largest (bold before regular at one size)."""
    styles = {(line.size, line.bold) for line in lines if style.is_heading(line)}
    ordered = sorted(styles, key=lambda key: (-key[0], not key[1]))
    return {key: rank for rank, key in enumerate(ordered, start=1)}


def _level(
    line: _Line, previous: _Line | None, style: _Style, ranks: dict[tuple[float, bool], int]
) -> int | None:
    if style.is_heading(line):
        return ranks[(line.size, line.bold)]
    if line.text.endswith("?") and _starts_paragraph(line, previous, style):
        return len(ranks) + 1
    return None


def _starts_paragraph(line: _Line, previous: _Line | None, style: _Style) -> bool:
    if previous is None or previous.page != line.page:
        return True
    if previous.y - line.y > style.spacing * _PARAGRAPH_GAP or style.is_heading(previous):
        return True
    return bool(_SENTENCE_END.search(previous.text))


def _continues_heading(
    sections: list[_Section], line: _Line, previous: _Line | None, style: _Style, level: int
) -> bool:
    """A heading's second line: same style, right below, after a line not ending in ``?``."""
    if not sections or previous is None or sections[-1].body or sections[-1].level != level:
        return False
    if not style.is_heading(line) or previous.page != line.page or previous.text.endswith("?"):
        return False
    return (previous.size, previous.bold) == (line.size, line.bold) and previous.y - line.y < line.size * 1.5


def _entries(sections: list[_Section], style: _Style, path: Path) -> list[Entry]:
    title = _title_index(sections)
    entries: list[Entry] = []
    enclosing: list[int] = []
    for index, section in enumerate(sections):
        while enclosing and sections[enclosing[-1]].level >= section.level:
            enclosing.pop()
        categories = [sections[i].title for i in enclosing if not sections[i].body and i != title]
        enclosing.append(index)
        answer = _answer(section.body, style)
        if not answer:
            continue
        entries.append(
            make_entry(
                question=section.title,
                answer=answer,
                source_file=path,
                source_anchor=f"page {section.page}",
                tags=[category.lower() for category in categories[-1:]],
            )
        )
    return entries


def _title_index(sections: list[_Section]) -> int | None:
    """The document's title: the first heading, when no other heading ranks as high."""
    if sections and sum(s.level <= sections[0].level for s in sections) == 1:
        return 0
    return None


# --- answers ------------------------------------------------------------------------------------


def _answer(body: list[_Line], style: _Style) -> str:
    """Lines joined into paragraphs and ``- `` items; consecutive items form one list."""
    blocks: list[tuple[str, str]] = []  # ("p" | "li", text)
    previous: _Line | None = None
    for line in body:
        bullet = _BULLET.match(line.text)
        if bullet:
            blocks.append(("li", line.text[bullet.end() :]))
        elif previous is None or _breaks_paragraph(previous, line, style):
            blocks.append(("p", line.text))
        else:
            kind, text = blocks[-1]
            blocks[-1] = (kind, _join(text, line.text))
        previous = line
    parts: list[str] = []
    for index, (kind, text) in enumerate(blocks):
        if kind == "li" and index and blocks[index - 1][0] == "li":
            parts[-1] += f"\n- {text}"
        else:
            parts.append(f"- {text}" if kind == "li" else text)
    return "\n\n".join(parts)


def _breaks_paragraph(previous: _Line, line: _Line, style: _Style) -> bool:
    if previous.page != line.page:
        return bool(_SENTENCE_END.search(previous.text))
    return previous.y - line.y > style.spacing * _PARAGRAPH_GAP


def _join(text: str, continuation: str) -> str:
    """Join a wrapped line; ``docu-`` + ``mentation`` gives ``documentation``."""
    if _HYPHENATED.search(text) and continuation[:1].islower():
        return text[:-1] + continuation
    return f"{text} {continuation}"
