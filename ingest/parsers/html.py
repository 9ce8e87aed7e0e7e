"""HTML FAQ pages: headings, ``<dt>``/``<dd>`` lists, ``<details>`` and FAQPage JSON-LD.

How a page is read:

- Encoding: a byte-order mark wins, then the page's own declaration (``<meta charset>`` or
  ``<meta http-equiv="Content-Type" content="...; charset=...">`` in its first 4 KB; ISO-8859-1
  and ASCII mean windows-1252, as browsers read them), then UTF-8, then charset-normalizer.
- schema.org ``FAQPage`` JSON-LD (``<script type="application/ld+json">``, at the top level, in
  a list, under ``@graph`` or nested in another object) is preferred when it yields questions:
  each ``mainEntity`` Question's ``name`` is the question, its ``acceptedAnswer`` (else first
  ``suggestedAnswer``) ``text`` the answer, converted from HTML; ``alternateName`` gives
  alternative questions, ``inLanguage`` the language. Broken JSON-LD is ignored.
- Otherwise the page body, without ``nav``, page-level ``header``/``footer``, ``aside``,
  ``script``, ``style``, form controls, ``<form>`` (unless it wraps the questions, as ASP.NET
  pages do) and other chrome, is read in three shapes, which may mix:

  * a heading (``h1``..``h6``) followed by content up to the next heading is an entry, exactly
    as in the Markdown parser: a heading with no content of its own that groups questions is a
    category (its lower-cased text a tag of the entries beneath it, the nearest one only), and
    the page's single leading ``h1`` is its title, never a category;
  * a ``<dl>``: each ``<dt>`` (further ``<dt>`` before the same ``<dd>`` are alternative
    questions) and its ``<dd>`` answer;
  * a ``<details>``: its ``<summary>`` and the rest of it; a ``<details>`` holding only other
    ``<details>`` is a category.

  A ``<dl>`` or ``<details>`` inside an answer stays part of that answer: they are read as
  questions when most of their terms end in ``?``, or when they come straight under a heading
  that is not itself a question (no ``?``) before any content of its own.
- Answers become the project's light Markdown: paragraphs separated by blank lines, ``- ``
  (and ``1.``) list items, fenced code for ``<pre>``, `` `code` ``, ``**bold**``, ``*italic*``,
  ``[text](url)`` for absolute http(s) and mailto links (other links keep their text only),
  tables as pipe tables; images are dropped.
- ``source_anchor`` is the question element's ``id`` (or that of an anchor inside it), else a
  GitHub-style slug of the question; ``line`` the 1-based source line of the question element.
  ``lang`` is the page's ``<html lang>`` (its primary subtag) unless JSON-LD says otherwise.

HTML's implied end tags (``<li>``, ``<dt>``, ``<dd>``, ``<p>``, ``<tr>``, ``<td>`` left open)
are written out before parsing, since Python's ``html.parser`` nests such elements instead.
"""

from __future__ import annotations

import bisect
import codecs
import html as html_entities
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup, NavigableString, ParserRejectedMarkup, Tag
from bs4.element import PreformattedString

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import decode_text, make_entry, normalize_question, read_bytes, require_a_question

__all__ = ["html_to_markdown", "parse"]

log = logging.getLogger(__name__)

NO_QUESTIONS = (
    "no questions found: expected headings with content, <dt>/<dd> pairs, "
    "<details>/<summary> or FAQPage JSON-LD"
)
MAX_DEPTH = 256  # elements open at once; real pages stay far below, the recursive walk cannot
TOO_DEEP = f"elements nested too deeply to read (more than {MAX_DEPTH} levels)"

_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_STRUCTURE = (*_HEADINGS, "dl", "details")
_DROPPED = frozenset(
    "head title meta link base script style noscript template nav aside iframe object embed "
    "svg canvas select input textarea img picture video audio map".split()
)
_CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
# header/footer are page chrome unless inside one of these (ARIA's banner/contentinfo rule).
_SECTIONING = frozenset({"article", "section", "main", "aside", "nav", "details", "dialog"})
_BLOCKS = frozenset(
    "address article aside blockquote body center dd details dialog div dl dt fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hr html li main menu nav ol p pre section summary "
    "table tbody thead tfoot tr td th caption ul".split()
)
_LISTS = frozenset({"ul", "ol", "menu", "dir"})
_CODE = frozenset({"code", "kbd", "samp", "tt", "var"})
_BOLD = frozenset({"b", "strong"})
_ITALIC = frozenset({"i", "em", "cite", "dfn"})
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_SCOPE_LIMITS = frozenset("html body table td th caption button object template".split())
_LIST_SCOPE_LIMITS = _SCOPE_LIMITS | {"ul", "ol", "menu", "dir", "dl"}
_P_CLOSERS = frozenset(
    "address article aside blockquote details dialog div dl fieldset figcaption figure footer "
    "form h1 h2 h3 h4 h5 h6 header hr main menu nav ol p pre section table ul".split()
)
_ROWS = frozenset({"tbody", "thead", "tfoot", "tr"})
# A start tag -> (the open elements it implicitly ends, the open elements that shield them).
_IMPLIED_ENDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), _LIST_SCOPE_LIMITS),
    "dt": (frozenset({"dt", "dd"}), _LIST_SCOPE_LIMITS),
    "dd": (frozenset({"dt", "dd"}), _LIST_SCOPE_LIMITS),
    "tr": (frozenset({"tr"}), frozenset({"table", "tbody", "thead", "tfoot"})),
    "td": (frozenset({"td", "th"}), frozenset({"table", "tr"})),
    "th": (frozenset({"td", "th"}), frozenset({"table", "tr"})),
    **{name: (_ROWS, frozenset({"table"})) for name in ("tbody", "thead", "tfoot")},
    **{name: (frozenset({"p"}), _SCOPE_LIMITS) for name in _P_CLOSERS},
}

_META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)", re.IGNORECASE)
_PRESCAN_BYTES = 4096
# As browsers read them (WHATWG Encoding): Latin-1 and ASCII labels mean windows-1252, and a
# page that declares UTF-16 in ASCII bytes is not UTF-16.
_WEB_ENCODINGS = {"iso8859-1": "cp1252", "ascii": "cp1252", "utf-16": "utf-8", "utf-32": "utf-8"}
_WHITESPACE = re.compile(r"\s+")
_LANGUAGE_TAG = re.compile(r"^\s*([A-Za-z]{2})(?:[-_][A-Za-z0-9-]*)?\s*$")
_ABSOLUTE_URL = re.compile(r"^(?:https?://|mailto:)\S+$", re.IGNORECASE)
_CODE_LANGUAGE = re.compile(r"^(?:language|lang)-([\w+#.-]+)$")
_HTML_TAG = re.compile(r"<[A-Za-z!/]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_SLUG_DROP = re.compile(r"[^\w\- ]")
_JSON_LD_WRAPPERS = re.compile(r"^\s*(?:<!--|<!\[CDATA\[)|(?:-->|\]\]>)\s*$")


def parse(path: Path) -> list[Entry]:
    """Read an HTML FAQ page into entries (JSON-LD first, else the page's markup)."""
    try:
        text = _with_implied_end_tags(_split_lines(_decode(read_bytes(path), path)))
    except _TooDeep as exc:
        raise ParseError(path, exc.line, TOO_DEEP) from exc
    try:
        soup = BeautifulSoup(text, "html.parser")
    except ParserRejectedMarkup as exc:
        raise ParseError(path, None, f"not parseable as HTML: {exc}") from exc
    lang = _page_language(soup)
    slugs = _Slugger()
    try:
        entries = _json_ld_entries(soup, path, lang, slugs)
        if not entries:
            _drop_chrome(soup)
            entries = require_a_question(
                _markup_entries(soup.body or soup, path, lang, slugs), path, NO_QUESTIONS
            )
    except (_TooDeep, RecursionError) as exc:  # an answer in JSON-LD holding deep markup
        raise ParseError(path, None, TOO_DEEP) from exc
    if not entries:
        raise NoEntriesError(path, NO_QUESTIONS)
    return entries


def html_to_markdown(fragment: str) -> str:
    """Convert an HTML fragment (an answer) to the project's light Markdown."""
    soup = BeautifulSoup(_with_implied_end_tags(fragment), "html.parser")
    _drop_chrome(soup)
    return "\n\n".join(_convert_blocks(soup))


# --- decoding -----------------------------------------------------------------------------------


def _decode(data: bytes, path: Path) -> str:
    return decode_text(data, path, declared=_declared_encoding(data))


def _declared_encoding(data: bytes) -> str | None:
    """The codec named by a ``<meta>`` in the page's first bytes, as a browser would use it."""
    match = _META_CHARSET.search(data[:_PRESCAN_BYTES])
    if match is None:
        return None
    try:
        codec = codecs.lookup(match.group(1).decode("ascii")).name
    except LookupError:
        return None
    return _WEB_ENCODINGS.get(codec.removesuffix("-le").removesuffix("-be"), codec)


def _split_lines(text: str) -> str:
    """Normalise line ends, so that the parser's line numbers count every kind."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _page_language(soup: BeautifulSoup) -> str | None:
    root = soup.find("html")
    value = root.get("lang") if isinstance(root, Tag) else None
    return _primary_language(value if isinstance(value, str) else None)


def _primary_language(value: object) -> str | None:
    """``de`` for ``de-CH``; ``None`` for anything that is not a two-letter language tag."""
    match = _LANGUAGE_TAG.match(value) if isinstance(value, str) else None
    return match.group(1).lower() if match else None


# --- tree repair and chrome ---------------------------------------------------------------------


def _with_implied_end_tags(text: str) -> str:
    """The markup with HTML's optional end tags written out (``<li>a<li>b`` -> ``<li>a</li><li>b``).

    Python's ``html.parser`` nests an unclosed ``<li>``, ``<dt>``, ``<dd>``, ``<p>``, ``<tr>`` or
    ``<td>`` inside the next one, where a browser closes it. The end tags are inserted on the
    line of the start tag that implies them, so source line numbers do not change.
    ``_TooDeep`` when more than ``MAX_DEPTH`` elements are open at once.
    """
    finder = _ImpliedEndFinder(text)
    finder.feed(text)
    finder.close()
    pieces: list[str] = []
    position = 0
    for offset, tags in finder.insertions:
        pieces += [text[position:offset], tags]
        position = offset
    pieces.append(text[position:])
    return "".join(pieces)


class _TooDeep(ValueError):
    """More than ``MAX_DEPTH`` elements open at once; ``line`` is where the limit was crossed."""

    def __init__(self, line: int | None) -> None:
        super().__init__(f"line {line}: more than {MAX_DEPTH} elements open")
        self.line = line


class _ImpliedEndFinder(HTMLParser):
    """Tracks open elements as html.parser sees them and notes where end tags are implied.

    Besides the stack of open elements it keeps, per element name, the stack positions where
    that name is open, so that a start or end tag costs no walk down a deeply nested page
    (``<div>`` ten thousand times deep would otherwise take quadratic time).
    """

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self._line_starts = [0, *(match.end() for match in re.finditer("\n", text))]
        self._open: list[str] = []
        self._positions: dict[str, list[int]] = {}
        self.insertions: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._end_implied(tag)
        if tag not in _VOID:
            if len(self._open) >= MAX_DEPTH:
                raise _TooDeep(self.getpos()[0])
            self._positions.setdefault(tag, []).append(len(self._open))
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._end_implied(tag)

    def handle_endtag(self, tag: str) -> None:
        positions = self._positions.get(tag)
        if positions:  # like BeautifulSoup: close up to the latest such element, if any
            self._close_from(positions[-1])

    def _end_implied(self, tag: str) -> None:
        """Close the lowest open element that ``tag`` ends, when no scope limit lies above it."""
        rule = _IMPLIED_ENDS.get(tag)
        if rule is None:
            return
        ends, limits = rule
        limit = max((self._positions[name][-1] for name in limits if self._positions.get(name)), default=-1)
        above = [self._first_above(name, limit) for name in ends]
        found = min((index for index in above if index is not None), default=None)
        if found is not None:
            closing = "".join(f"</{name}>" for name in reversed(self._open[found:]))
            line, column = self.getpos()
            self.insertions.append((self._line_starts[line - 1] + column, closing))
            self._close_from(found)

    def _first_above(self, name: str, limit: int) -> int | None:
        """The lowest stack position of an open ``name`` above position ``limit``."""
        positions = self._positions.get(name) or []
        index = bisect.bisect_right(positions, limit)
        return positions[index] if index < len(positions) else None

    def _close_from(self, index: int) -> None:
        """Pop the open elements from stack position ``index`` up."""
        for name in self._open[index:]:
            self._positions[name].pop()
        del self._open[index:]


def _drop_chrome(root: Tag) -> None:
    """Remove navigation, page header/footer, scripts, styles, forms and the like.

    Walked top-down, not descending into what goes (``Tag.decomposed`` would search each
    element's subtree, which is quadratic on a deep page).
    """
    stack = [child for child in reversed(root.contents) if isinstance(child, Tag)]
    while stack:
        tag = stack.pop()
        if _is_chrome(tag):
            tag.decompose()
        else:
            stack.extend(child for child in reversed(tag.contents) if isinstance(child, Tag))


def _is_chrome(tag: Tag) -> bool:
    if tag.name == "form":  # a search box goes; a page wrapped whole in a <form> (ASP.NET) stays
        return tag.find(_STRUCTURE) is None
    if tag.name in _DROPPED:
        return True
    role = tag.get("role")
    if isinstance(role, str) and role.strip().lower() in _CHROME_ROLES:
        return True
    if tag.name in ("header", "footer"):
        return not any(parent.name in _SECTIONING for parent in tag.parents)
    return False


# --- JSON-LD ------------------------------------------------------------------------------------


def _json_ld_entries(soup: BeautifulSoup, path: Path, lang: str | None, slugs: _Slugger) -> list[Entry]:
    entries: list[Entry] = []
    for script in soup.find_all("script"):
        kind = script.get("type")
        if not isinstance(kind, str) or kind.split(";")[0].strip().lower() != "application/ld+json":
            continue
        raw = script.string or ""
        data = _load_json_ld(raw, script.sourceline)
        locator = _Locator(raw, script.sourceline)
        for page in _faq_pages(data):
            page_lang = _primary_language(page.get("inLanguage")) or lang
            for question in _as_list(page.get("mainEntity")):
                entry = _json_ld_entry(question, path, page_lang, locator, slugs)
                if entry is not None:
                    entries.append(entry)
    return entries


def _load_json_ld(raw: str, line: int | None) -> object:
    text = _JSON_LD_WRAPPERS.sub("", raw.strip())
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        log.info("ignoring JSON-LD on line %s: %s", line, exc)
    except RecursionError:
        log.info("ignoring JSON-LD on line %s: nested too deeply", line)
    return None


def _faq_pages(data: object) -> Iterator[dict[str, Any]]:
    """Every object typed FAQPage, wherever it sits (top level, list, ``@graph``, nested)."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            if "FAQPage" in _types(node):
                yield node
            else:
                stack.extend(reversed(list(node.values())))


def _types(node: dict[str, Any]) -> set[str]:
    """``@type`` values without their vocabulary prefix (``schema:``, ``https://schema.org/``)."""
    return {
        value.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        for value in _as_list(node.get("@type"))
        if isinstance(value, str)
    }


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _json_ld_entry(
    question: object, path: Path, lang: str | None, locator: _Locator, slugs: _Slugger
) -> Entry | None:
    if not isinstance(question, dict) or (question.get("@type") and "Question" not in _types(question)):
        return None
    name = question.get("name")
    answer = _json_ld_answer(question)
    if not isinstance(name, str) or not answer:
        return None
    text = _html_text(name)
    if not text:
        return None
    return make_entry(
        question=text,
        answer=answer,
        source_file=path,
        source_anchor=_fragment(question.get("@id")) or _fragment(question.get("url")) or slugs.slug(text),
        alt_questions=[
            _html_text(alt) for alt in _as_list(question.get("alternateName")) if isinstance(alt, str)
        ],
        lang=_primary_language(question.get("inLanguage")) or lang,
        line=locator.line_of(name),
    )


def _json_ld_answer(question: dict[str, Any]) -> str:
    for name in ("acceptedAnswer", "suggestedAnswer"):
        for answer in _as_list(question.get(name)):
            text = answer.get("text") if isinstance(answer, dict) else answer
            if isinstance(text, str) and text.strip():
                return _answer_from_json_ld(text)
    return ""


def _answer_from_json_ld(text: str) -> str:
    """HTML is converted; plain text keeps its blank-line paragraphs."""
    if _HTML_TAG.search(text):
        return html_to_markdown(text)
    paragraphs = (_WHITESPACE.sub(" ", part).strip() for part in _BLANK_LINES.split(text))
    return "\n\n".join(html_entities.unescape(part) for part in paragraphs if part)


def _html_text(fragment: str) -> str:
    return normalize_question(_plain_text(BeautifulSoup(fragment, "html.parser")))


def _fragment(value: object) -> str | None:
    """The ``#fragment`` of an ``@id`` or URL, used as the entry's anchor."""
    if isinstance(value, str) and "#" in value:
        return value.rsplit("#", 1)[1].strip() or None
    return None


class _Locator:
    """Finds the source line of a string inside a JSON-LD script, searching forward."""

    def __init__(self, raw: str, first_line: int | None) -> None:
        self._raw = raw
        self._first_line = first_line
        self._position = 0

    def line_of(self, value: str) -> int | None:
        if self._first_line is None:
            return None
        for encoded in (json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1]):
            found = self._raw.find(encoded, self._position)
            if found >= 0:
                self._position = found + len(encoded)
                return self._first_line + self._raw.count("\n", 0, found)
        return self._first_line


# --- the page's markup: headings, <dl> and <details> --------------------------------------------


@dataclass(slots=True)
class _Item:
    """A question read from a ``<dt>`` or ``<details>``, with its answer already converted."""

    question: str
    answer: str
    line: int | None
    anchor: str | None
    alternatives: list[str] = field(default_factory=list)
    category: str | None = None


@dataclass(slots=True)
class _Section:
    """A heading, the content blocks under it and the question items listed under it."""

    level: int
    title: str
    line: int | None
    anchor: str | None
    body: list[str] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)


class _PageReader:
    """Walks the page in document order, splitting it into heading sections and items."""

    def __init__(self) -> None:
        self.sections: list[_Section] = [_Section(0, "", None, None)]  # content before any heading
        self._pending = _Blocks()
        self._categories: list[str] = []  # enclosing <details> categories

    @property
    def _current(self) -> _Section:
        return self.sections[-1]

    def read(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, Tag) and (child.name in _STRUCTURE or child.find(_STRUCTURE) is not None):
                self._flush()
                self._structure(child)
            else:
                _convert_node(child, self._pending)
        self._flush()

    def _structure(self, tag: Tag) -> None:
        """A heading, a question list, or an element holding some: read it, or keep it as content."""
        if tag.name in _HEADINGS:
            self._heading(tag)
        elif tag.name == "dl" and self._lists_questions(_dl_terms(tag)):
            self._current.items.extend(_dl_items(tag, self._category()))
        elif tag.name == "details" and _is_category(tag):
            self._details_category(tag)
        elif tag.name == "details" and self._lists_questions([_summary_text(tag)]):
            self._current.items.extend(_details_item(tag, self._category()))
        elif tag.name in ("dl", "details"):
            _convert_node(tag, self._pending)  # part of the current answer
        else:
            self.read(tag)

    def _heading(self, tag: Tag) -> None:
        self._flush()
        title = normalize_question(_plain_text(tag))
        if title:
            level = int(tag.name[1])
            self.sections.append(_Section(level, title, tag.sourceline, _element_id(tag)))

    def _details_category(self, tag: Tag) -> None:
        self._flush()
        self._categories.append(_summary_text(tag))
        for child in tag.find_all("details", recursive=False):
            self._read_details(child)
        self._categories.pop()

    def _read_details(self, tag: Tag) -> None:
        if _is_category(tag):
            self._details_category(tag)
        else:
            self._current.items.extend(_details_item(tag, self._category()))

    def _category(self) -> str | None:
        return self._categories[-1] if self._categories else None

    def _lists_questions(self, questions: list[str]) -> bool:
        """Whether a ``<dl>``/``<details>`` here lists questions rather than being answer content."""
        if not questions:
            return False
        if sum(question.endswith("?") for question in questions) * 2 > len(questions):
            return True
        section = self._current
        return not section.body and not section.title.endswith("?")

    def _flush(self) -> None:
        self._pending.flush()
        self._current.body.extend(self._pending.take())


def _markup_entries(root: Tag, path: Path, lang: str | None, slugs: _Slugger) -> list[Entry]:
    reader = _PageReader()
    reader.read(root)
    return _build_entries(reader.sections, path, lang, slugs)


def _build_entries(sections: list[_Section], path: Path, lang: str | None, slugs: _Slugger) -> list[Entry]:
    """Heading entries and item entries, with the Markdown parser's category rules."""
    title_index = _page_title_index(sections)
    entries: list[Entry] = []
    enclosing: list[int] = []
    for index, section in enumerate(sections):
        while enclosing and sections[enclosing[-1]].level >= section.level:
            enclosing.pop()
        categories = [sections[i].title for i in enclosing if _is_grouping(sections, i, title_index)]
        anchor = section.anchor or (slugs.slug(section.title) if section.level else "")
        enclosing.append(index)
        if section.body and section.level:
            entries.append(
                make_entry(
                    question=section.title,
                    answer="\n\n".join(section.body),
                    source_file=path,
                    source_anchor=anchor,
                    lang=lang,
                    tags=[category.lower() for category in categories[-1:]],
                    line=section.line,
                )
            )
        if _is_grouping(sections, index, title_index):
            categories.append(section.title)
        entries.extend(_item_entry(item, categories, path, lang, slugs) for item in section.items)
    return entries


def _is_grouping(sections: list[_Section], index: int, title_index: int | None) -> bool:
    """A heading with no content of its own (not the page title, not the pre-heading part)."""
    section = sections[index]
    return bool(section.level) and not section.body and index != title_index


def _page_title_index(sections: list[_Section]) -> int | None:
    """The page's ``<h1>``: the first heading, when it is the page's only ``h1``."""
    headings = sections[1:]
    if headings and headings[0].level == 1 and sum(s.level == 1 for s in headings) == 1:
        return 1
    return None


def _item_entry(item: _Item, categories: list[str], path: Path, lang: str | None, slugs: _Slugger) -> Entry:
    category = item.category or (categories[-1] if categories else None)
    return make_entry(
        question=item.question,
        answer=item.answer,
        source_file=path,
        source_anchor=item.anchor or slugs.slug(item.question),
        alt_questions=item.alternatives,
        lang=lang,
        tags=[category.lower()] if category else [],
        line=item.line,
    )


def _dl_terms(dl: Tag) -> list[str]:
    return [normalize_question(_plain_text(dt)) for dt in _dl_children(dl) if dt.name == "dt"]


def _dl_children(dl: Tag) -> Iterator[Tag]:
    """The ``<dt>``/``<dd>`` of a list, also when wrapped in ``<div>`` (allowed by HTML)."""
    for child in dl.children:
        if isinstance(child, Tag) and child.name in ("dt", "dd"):
            yield child
        elif isinstance(child, Tag) and child.name == "div":
            yield from _dl_children(child)


def _dl_items(dl: Tag, category: str | None) -> list[_Item]:
    """Each run of ``<dt>`` (question, then alternatives) and the ``<dd>`` after it."""
    items: list[_Item] = []
    terms: list[Tag] = []
    answers: list[str] = []
    for child in [*_dl_children(dl), None]:
        if (child is None or child.name == "dt") and answers:
            items.append(_term_item(terms, answers, category))
            terms, answers = [], []
        if child is not None and child.name == "dt":
            terms.append(child)
        elif child is not None and terms:
            answers.extend(_convert_blocks(child))
    return [item for item in items if item.question]


def _term_item(terms: list[Tag], answers: list[str], category: str | None) -> _Item:
    texts = [normalize_question(_plain_text(term)) for term in terms]
    return _Item(
        question=texts[0],
        answer="\n\n".join(answers),
        line=terms[0].sourceline,
        anchor=_element_id(terms[0]),
        alternatives=texts[1:],
        category=category,
    )


def _summary(details: Tag) -> Tag | None:
    summary = details.find("summary", recursive=False)
    return summary if isinstance(summary, Tag) else None


def _summary_text(details: Tag) -> str:
    summary = _summary(details)
    return normalize_question(_plain_text(summary)) if summary is not None else ""


def _is_category(details: Tag) -> bool:
    """A ``<details>`` whose content is nothing but other ``<details>``."""
    rest = [child for child in details.children if child is not _summary(details)]
    nested = [child for child in rest if isinstance(child, Tag) and child.name == "details"]
    others = [child for child in rest if child not in nested and _has_content(child)]
    return bool(nested) and not others and bool(_summary_text(details))


def _details_item(details: Tag, category: str | None) -> list[_Item]:
    summary = _summary(details)
    question = _summary_text(details)
    blocks = _Blocks()
    for child in details.children:
        if child is not summary:
            _convert_node(child, blocks)
    blocks.flush()
    answer = "\n\n".join(blocks.take())
    if summary is None or not question or not answer:
        return []
    anchor = _element_id(details) or _element_id(summary)
    return [_Item(question, answer, summary.sourceline, anchor, category=category)]


def _has_content(node: object) -> bool:
    if isinstance(node, Tag):
        return bool(node.get_text(strip=True))
    return isinstance(node, NavigableString) and _is_text(node) and bool(node.strip())


def _element_id(tag: Tag) -> str | None:
    """The element's ``id``, else the ``id``/``name`` of an anchor inside it."""
    candidates = [tag.get("id")]
    for anchor in tag.find_all("a", limit=3):
        candidates += [anchor.get("id"), anchor.get("name")]
    return next((value.strip() for value in candidates if isinstance(value, str) and value.strip()), None)


class _Slugger:
    """GitHub-style anchors, with ``-1``, ``-2`` ... appended to repeats."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def slug(self, text: str) -> str:
        base = _SLUG_DROP.sub("", text.lower()).replace(" ", "-")
        count = self._seen.get(base, 0)
        self._seen[base] = count + 1
        return base if count == 0 else f"{base}-{count}"


# --- HTML -> light Markdown ---------------------------------------------------------------------


class _Blocks:
    """Markdown blocks in order; inline text collects into the open paragraph until a block."""

    def __init__(self) -> None:
        self._blocks: list[str] = []
        self._inline: list[str] = []

    def add_inline(self, text: str) -> None:
        self._inline.append(text)

    def add_block(self, block: str) -> None:
        self.flush()
        if block.strip():
            self._blocks.append(block)

    def flush(self) -> None:
        paragraph = _paragraph("".join(self._inline))
        self._inline = []
        if paragraph:
            self._blocks.append(paragraph)

    def take(self) -> list[str]:
        blocks, self._blocks = self._blocks, []
        return blocks


def _paragraph(raw: str) -> str:
    """Inline Markdown with ``\\n`` for ``<br>``: whitespace collapsed, empty lines dropped."""
    lines = (_WHITESPACE.sub(" ", line).strip() for line in raw.split("\n"))
    return "\n".join(line for line in lines if line)


def _convert_blocks(node: Tag) -> list[str]:
    blocks = _Blocks()
    for child in node.children:
        _convert_node(child, blocks)
    blocks.flush()
    return blocks.take()


def _convert_node(node: object, out: _Blocks) -> None:
    if isinstance(node, NavigableString):
        if _is_text(node):
            out.add_inline(_WHITESPACE.sub(" ", str(node)))
        return
    if not isinstance(node, Tag) or node.name in _DROPPED:
        return
    name = node.name
    if name == "br":
        out.add_inline("\n")
    elif name in _HEADINGS or name in ("dt", "summary"):
        out.add_block(_bold(_inline_children(node)))
    elif name in _LISTS:
        out.add_block(_list(node))
    elif name == "pre":
        out.add_block(_fence(node))
    elif name == "table":
        _table(node, out)
    elif name == "hr":
        out.flush()
    elif name in _BLOCKS or node.find(_BLOCKS) is not None:
        out.flush()
        for child in node.children:
            _convert_node(child, out)
        out.flush()
    else:
        out.add_inline(_inline(node))


def _is_text(node: NavigableString) -> bool:
    """Text a reader sees: not a comment, doctype, CDATA or processing instruction."""
    return not isinstance(node, PreformattedString)


def _inline(node: Tag) -> str:
    name = node.name
    if name in _DROPPED:
        return ""
    if name == "br":
        return "\n"
    if name in _CODE:
        return _code_span(node.get_text())
    inner = _inline_children(node)
    if name in _BOLD:
        return _wrap(inner, "**")
    if name in _ITALIC:
        return _wrap(inner, "*")
    if name == "a":
        return _link(node, inner)
    return inner


def _inline_children(node: Tag) -> str:
    parts: list[str] = []
    for child in node.children:
        if isinstance(child, NavigableString):
            if _is_text(child):
                parts.append(_WHITESPACE.sub(" ", str(child)))
        elif isinstance(child, Tag):
            parts.append(_inline(child))
    return "".join(parts)


def _wrap(inner: str, marker: str) -> str:
    """``**text**`` keeping surrounding spaces outside the markers, one span per line."""
    text = inner.strip()
    if not text:
        return inner
    lead = " " if inner[:1].isspace() else ""
    trail = " " if inner[-1:].isspace() else ""
    lines = (line.strip() for line in text.split("\n"))
    return lead + "\n".join(f"{marker}{line}{marker}" for line in lines if line) + trail


def _bold(text: str) -> str:
    return _wrap(_paragraph(text), "**")


def _code_span(text: str) -> str:
    code = _WHITESPACE.sub(" ", text).strip()
    if not code:
        return ""
    ticks = "``" if "`" in code else "`"
    padding = " " if ticks == "``" else ""
    return f"{ticks}{padding}{code}{padding}{ticks}"


def _link(node: Tag, inner: str) -> str:
    text = _WHITESPACE.sub(" ", inner).strip()
    href = node.get("href")
    if not text or not isinstance(href, str) or not _ABSOLUTE_URL.match(href.strip()):
        return inner
    url = href.strip().replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    label = text.replace("[", "(").replace("]", ")")
    lead = " " if inner[:1].isspace() else ""
    trail = " " if inner[-1:].isspace() else ""
    return f"{lead}[{label}]({url}){trail}"


def _fence(pre: Tag) -> str:
    code = pre.get_text().removeprefix("\n").rstrip()
    if not code.strip():
        return ""
    fence = "````" if "```" in code else "```"
    return f"{fence}{_code_language(pre)}\n{code}\n{fence}"


def _code_language(pre: Tag) -> str:
    for tag in (pre, pre.find("code")):
        classes = tag.get("class") if isinstance(tag, Tag) else None
        for name in classes or []:
            match = _CODE_LANGUAGE.match(name)
            if match:
                return match.group(1)
    return ""


def _list(node: Tag) -> str:
    """A list as ``- `` (or ``1. ``) items, nested lists indented under their item."""
    lines: list[str] = []
    number = _start(node)
    for item in node.children:
        if not isinstance(item, Tag):
            continue
        if item.name in _LISTS:  # a list directly inside a list: nest it under the last item
            lines.extend("  " + line for line in _list(item).split("\n") if line)
            continue
        blocks = _convert_blocks(item) if item.name == "li" else [_paragraph(_inline(item))]
        text = "\n".join(block for block in blocks if block)
        if not text:
            continue
        marker = f"{number}. " if node.name == "ol" else "- "
        number += 1
        first, *rest = text.split("\n")
        lines.append(marker + first)
        lines.extend(" " * len(marker) + line if line else "" for line in rest)
    return "\n".join(lines)


def _start(node: Tag) -> int:
    value = node.get("start")
    return int(value) if isinstance(value, str) and value.strip().isdigit() else 1


def _table(table: Tag, out: _Blocks) -> None:
    """A data table as a pipe table; a one-column (layout) table as plain blocks."""
    rows = [_cells(row) for row in _rows(table)]
    rows = [row for row in rows if any(cell for cell in row)]
    width = max((len(row) for row in rows), default=0)
    if width <= 1:
        out.flush()
        for cell in _cell_tags(table):
            for block in _convert_blocks(cell):
                out.add_block(block)
        return
    padded = [row + [""] * (width - len(row)) for row in rows]
    lines = [_pipe_row(padded[0]), _pipe_row(["---"] * width), *(_pipe_row(row) for row in padded[1:])]
    caption = table.find("caption")
    if isinstance(caption, Tag) and caption.get_text(strip=True):
        out.add_block(_bold(_inline_children(caption)))
    out.add_block("\n".join(lines))


def _rows(table: Tag) -> Iterator[Tag]:
    """The table's own rows (not those of tables nested in its cells)."""
    for row in table.find_all("tr"):
        if row.find_parent("table") is table:
            yield row


def _cell_tags(table: Tag) -> Iterator[Tag]:
    for row in _rows(table):
        yield from (cell for cell in row.children if isinstance(cell, Tag) and cell.name in ("td", "th"))


def _cells(row: Tag) -> list[str]:
    cells = (cell for cell in row.children if isinstance(cell, Tag) and cell.name in ("td", "th"))
    return [" ".join(_convert_blocks(cell)).replace("\n", " ").replace("|", "\\|") for cell in cells]


def _pipe_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _plain_text(node: Tag) -> str:
    """The text of a question element: ``<br>`` and block boundaries become spaces."""
    parts: list[str] = []
    for descendant in node.descendants:
        if isinstance(descendant, NavigableString):
            if _is_text(descendant) and not any(p.name in _DROPPED for p in descendant.parents):
                parts.append(str(descendant))
        elif isinstance(descendant, Tag) and (descendant.name == "br" or descendant.name in _BLOCKS):
            parts.append(" ")
    return "".join(parts)
