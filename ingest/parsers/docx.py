"""Word (.docx) FAQs: a question per heading, bold paragraph or "?" paragraph.

How a document is read (its body only: no headers, footers, comments or text boxes):

- A question is a paragraph styled ``Heading 1`` .. ``Heading 6`` (also through a style based
  on one), a paragraph whose text is entirely bold (unless it ends in ``:``, a lead-in), or a
  paragraph ending in ``?`` whose next non-empty block is not itself a question. ``Title`` is
  the document's title: never a question, never a category, and what follows it up to the
  first question is an introduction, dropped.
- The answer is everything after the question up to the next question: paragraphs (separated
  by blank lines, with ``**bold**``, ``*italic*``, `` `code` `` for monospace runs and
  ``[text](url)`` for web links), list paragraphs as ``- `` items (indented by level) and tables
  as Markdown pipe tables (the first row is the header).
- A heading with no answer of its own that groups questions is a category: its lower-cased
  text becomes a tag of the entries beneath it (the nearest one only). Bold and "?" questions
  rank below every heading level.
- ``source_anchor`` is ``paragraph N``, N counting the body's paragraphs from 1 (tables are
  not paragraphs; empty paragraphs count); ``line`` is ``None``.
- A file that is not a ZIP package, lacks ``word/document.xml``, or is damaged in any way
  python-docx trips over (broken XML, a corrupt ZIP member, an element missing what the schema
  requires), fails with ``not a valid .docx file: ...``; so does a package that would unpack
  to more than ``MAX_UNPACKED_MB`` (a ZIP bomb).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docx
from docx.document import Document as DocxDocument
from docx.exceptions import PythonDocxError
from docx.opc.exceptions import OpcError, PackageNotFoundError
from docx.table import Table
from docx.text.hyperlink import Hyperlink
from docx.text.paragraph import Paragraph
from docx.text.run import Run
from lxml import etree

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import make_entry, normalize_question, read_bytes

__all__ = ["parse"]

NO_QUESTIONS = "no questions found: expected headings, bold paragraphs or paragraphs ending in '?'"

_HEADING_STYLE = re.compile(r"^heading\s*([1-6])$", re.IGNORECASE)
_LIST_STYLE = re.compile(r"^list\b(?! continue).*?(\d)?$", re.IGNORECASE)
_WEB_LINK = re.compile(r"^(?:https?://|mailto:)\S+$", re.IGNORECASE)
_MONOSPACE = re.compile(r"courier|consolas|mono|menlo|lucida console|source code", re.IGNORECASE)
_QUESTION_LEVEL = 7  # below Heading 6
MAX_UNPACKED_MB = 256
# What python-docx, zipfile and lxml raise on a damaged package: ZIP members that do not
# decompress or are encrypted (RuntimeError) or use an unknown method (NotImplementedError),
# broken XML, and XML that parses but lacks what python-docx's element classes expect
# (AttributeError, TypeError on a missing attribute, ValueError on a bad value).
_DAMAGED = (
    PythonDocxError,
    OpcError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    RuntimeError,
    NotImplementedError,
    etree.LxmlError,
    KeyError,
    ValueError,
    IndexError,
    AttributeError,
    TypeError,
)
_TITLE_LEVEL = 0


@dataclass(slots=True)
class _Block:
    """One body block: a paragraph (question candidate or answer text), list item or table."""

    markdown: str
    text: str = ""
    number: int | None = None  # paragraph number, for paragraphs
    heading: int | None = None  # 0 for Title, 1..6 for headings
    bold: bool = False
    list_level: int | None = None

    @property
    def is_question_candidate(self) -> bool:
        """A heading, an entirely bold paragraph, or a paragraph (not a list item) ending in ``?``."""
        return self.heading is not None or self.bold or (self.list_level is None and self.text.endswith("?"))


@dataclass(slots=True)
class _Section:
    level: int
    title: str
    number: int
    body: list[_Block] = field(default_factory=list)


def parse(path: Path) -> list[Entry]:
    """Read a ``.docx`` FAQ into entries, one per question that has an answer."""
    document = _open(path)
    try:
        blocks = list(_blocks(document))
    except RecursionError as exc:
        raise _invalid(path, "elements nested too deeply to read") from exc
    except _DAMAGED as exc:  # a part read lazily (styles, numbering) is damaged
        raise _invalid(path, _detail(exc)) from exc
    sections = _sections(blocks)
    entries = _entries(sections, path)
    if not entries:
        raise NoEntriesError(path, NO_QUESTIONS)
    return entries


def _open(path: Path) -> DocxDocument:
    data = read_bytes(path)
    try:
        _check_unpacked_size(data, path)
        return docx.Document(io.BytesIO(data))
    except PackageNotFoundError as exc:
        raise _invalid(path, "not a ZIP package") from exc
    except KeyError as exc:
        raise _invalid(path, f"missing part: {exc.args[0] if exc.args else exc}") from exc
    except RecursionError as exc:
        raise _invalid(path, "elements nested too deeply to read") from exc
    except _DAMAGED as exc:
        raise _invalid(path, _detail(exc)) from exc


def _check_unpacked_size(data: bytes, path: Path) -> None:
    """Refuse a package whose members would unpack to more than ``MAX_UNPACKED_MB``.

    zipfile stops reading a member at its declared size, so the declared sizes bound memory.
    Bytes that are not a ZIP at all are left for python-docx to report.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            unpacked = sum(info.file_size for info in package.infolist())
    except zipfile.BadZipFile:
        return
    if unpacked > MAX_UNPACKED_MB * 1024 * 1024:
        size = f"{unpacked / 2**20:.0f} MB"
        raise _invalid(path, f"it would unpack to {size}; the limit is {MAX_UNPACKED_MB} MB")


def _invalid(path: Path, detail: str) -> ParseError:
    return ParseError(path, None, f"not a valid .docx file: {detail}")


def _detail(exc: BaseException) -> str:
    """A damaged package's reason: the library's message, with its type when that says little."""
    message = str(exc).strip()
    if isinstance(exc, AttributeError | TypeError | KeyError | IndexError | zlib.error | EOFError):
        return f"damaged document ({type(exc).__name__}: {message})" if message else "damaged document"
    return message or type(exc).__name__


# --- blocks -------------------------------------------------------------------------------------


def _blocks(document: DocxDocument) -> Iterator[_Block]:
    number = 0
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            number += 1
            block = _paragraph_block(item, number)
            if block.text:
                yield block
        elif isinstance(item, Table):
            table = _table(item)
            if table:
                yield _Block(markdown=table)


def _paragraph_block(paragraph: Paragraph, number: int) -> _Block:
    text = normalize_question(paragraph.text)
    heading = _heading_level(paragraph)
    list_level = _list_level(paragraph) if heading is None else None
    bold = (
        heading is None
        and list_level is None
        and bool(text)
        and not text.endswith(":")  # a bold lead-in ("Example:") introduces answer text
        and _entirely_bold(paragraph)
    )
    return _Block(
        markdown=_inline(paragraph),
        text=text,
        number=number,
        heading=heading,
        bold=bold,
        list_level=list_level,
    )


def _style_chain(style: Any) -> Iterator[Any]:
    """The style and the styles it is based on, nearest first."""
    seen = 0
    while style is not None and seen < 20:
        yield style
        style = getattr(style, "base_style", None)
        seen += 1


def _heading_level(paragraph: Paragraph) -> int | None:
    """1..6 for ``Heading N`` (or a style based on one), 0 for ``Title``, else ``None``."""
    for style in _style_chain(paragraph.style):
        name = (getattr(style, "name", None) or "").strip()
        if name.lower() == "title":
            return _TITLE_LEVEL
        match = _HEADING_STYLE.match(name)
        if match:
            return int(match.group(1))
    return None


def _list_level(paragraph: Paragraph) -> int | None:
    """The nesting level (0 first) of a list paragraph, else ``None``."""
    properties = paragraph._p.pPr  # python-docx has no public API for numbering
    numbering = properties.numPr if properties is not None else None
    if numbering is not None:
        level = numbering.ilvl.val if numbering.ilvl is not None else 0
        return int(level or 0)
    for style in _style_chain(paragraph.style):
        match = _LIST_STYLE.match((getattr(style, "name", None) or "").strip())
        if match:
            return int(match.group(1)) - 1 if match.group(1) else 0
    return None


def _runs(paragraph: Paragraph) -> Iterator[tuple[Run, str | None]]:
    """Every run in order, with the web address of the hyperlink it belongs to, if any."""
    for item in paragraph.iter_inner_content():
        if isinstance(item, Hyperlink):
            url = item.url if _WEB_LINK.match(item.url or "") else None
            yield from ((run, url) for run in item.runs)
        else:
            yield item, None


def _flag(run: Run, paragraph: Paragraph, name: str) -> bool:
    """A run's effective bold/italic: direct formatting, then its style, then the paragraph's."""
    direct = getattr(run.font, name)
    if direct is not None:
        return bool(direct)
    for style in (*_style_chain(run.style), *_style_chain(paragraph.style)):
        value = getattr(getattr(style, "font", None), name, None)
        if value is not None:
            return bool(value)
    return False


def _entirely_bold(paragraph: Paragraph) -> bool:
    runs = [run for run, _ in _runs(paragraph) if run.text.strip()]
    return bool(runs) and all(_flag(run, paragraph, "bold") for run in runs)


def _inline(paragraph: Paragraph) -> str:
    """The paragraph as inline Markdown: runs of the same formatting grouped."""
    pieces: list[str] = []
    group: list[str] = []
    style: tuple[bool, bool, bool, str | None] | None = None
    for run, url in _runs(paragraph):
        key = (
            _flag(run, paragraph, "bold"),
            _flag(run, paragraph, "italic"),
            bool(_MONOSPACE.search(run.font.name or "")),
            url,
        )
        if key != style and group:
            pieces.append(_format("".join(group), style))
            group = []
        style = key
        group.append(run.text)
    if group:
        pieces.append(_format("".join(group), style))
    lines = (" ".join(line.split()) for line in "".join(pieces).split("\n"))
    return "\n".join(line for line in lines if line)


def _format(text: str, style: tuple[bool, bool, bool, str | None] | None) -> str:
    """Wrap a run of text in the Markdown its formatting calls for (one line, spaces outside)."""
    if not text.strip() or style is None or not any(style):
        return text
    bold, italic, code, url = style
    lead = " " if text[:1].isspace() else ""
    trail = " " if text[-1:].isspace() else ""
    body = " ".join(text.split())
    if code:
        body = f"`{body}`"
    else:
        body = f"*{body}*" if italic else body
        body = f"**{body}**" if bold else body
    if url:
        body = f"[{body}]({url})"
    return f"{lead}{body}{trail}"


def _table(table: Table) -> str:
    """A pipe table; merged cells are repeated only once per row."""
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        skip = 0
        for cell in row.cells:
            if skip:
                skip -= 1
                continue
            skip = max(cell.grid_span - 1, 0)
            text = " ".join(_inline(p) for p in cell.paragraphs if p.text.strip())
            cells.append(text.replace("\n", " ").replace("|", "\\|"))
        if any(cells):
            rows.append(cells)
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    padded = [row + [""] * (width - len(row)) for row in rows]
    lines = [padded[0], ["---"] * width, *padded[1:]]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


# --- sections and entries -----------------------------------------------------------------------


def _sections(blocks: list[_Block]) -> list[_Section]:
    """Split blocks at questions; blocks before the first question are dropped."""
    sections: list[_Section] = []
    for index, block in enumerate(blocks):
        level = _question_level(blocks, index)
        if level is not None and block.number is not None:
            sections.append(_Section(level, block.text, block.number))
        elif sections:
            sections[-1].body.append(block)
    return sections


def _question_level(blocks: list[_Block], index: int) -> int | None:
    """The rank of the block as a question (heading level, or below), else ``None``."""
    block = blocks[index]
    if block.heading is not None:
        return block.heading
    if block.bold:
        return _QUESTION_LEVEL
    if block.is_question_candidate:  # a paragraph ending in "?"
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if following is not None and not following.is_question_candidate:
            return _QUESTION_LEVEL
    return None


def _entries(sections: list[_Section], path: Path) -> list[Entry]:
    entries: list[Entry] = []
    enclosing: list[_Section] = []
    for section in sections:
        while enclosing and enclosing[-1].level >= section.level:
            enclosing.pop()
        categories = [
            s.title for s in enclosing if not s.body and s.level not in (_TITLE_LEVEL, _QUESTION_LEVEL)
        ]
        enclosing.append(section)
        if not section.body or section.level == _TITLE_LEVEL:
            continue
        entries.append(
            make_entry(
                question=section.title,
                answer=_answer(section.body),
                source_file=path,
                source_anchor=f"paragraph {section.number}",
                tags=[category.lower() for category in categories[-1:]],
            )
        )
    return entries


def _answer(body: list[_Block]) -> str:
    """Blocks separated by blank lines; consecutive list items form one list."""
    parts: list[str] = []
    previous_was_item = False
    for block in body:
        if block.list_level is not None:
            item = "  " * block.list_level + "- " + block.markdown.replace("\n", " ")
            if previous_was_item:
                parts[-1] += "\n" + item
            else:
                parts.append(item)
            previous_was_item = True
        else:
            parts.append(block.markdown)
            previous_was_item = False
    return "\n\n".join(parts)
