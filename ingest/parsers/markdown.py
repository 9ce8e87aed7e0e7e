"""Markdown FAQ pages: a question per heading, the heading's body its answer.

How a page is read:

- YAML-ish front matter between leading ``---`` lines gives ``title``, ``lang`` and ``tags``
  (``[a, b]``, ``a, b`` or a ``- item`` list); ``lang`` and ``tags`` apply to every entry.
- An ATX heading (``#`` .. ``######``, not inside a fenced code block or an HTML comment) whose
  body, up to the next heading of any level, is non-empty is an entry: the heading text is the
  question, the body (trimmed, otherwise verbatim Markdown) the answer.
- A heading without a body of its own that has sub-headings is a category: its lower-cased text
  becomes a tag of the entries beneath it (the nearest category only). The page's single
  ``# Title`` is never a category, and an entry only when it has a body of its own.
- Not content: kramdown attribute lines (``{:toc}``, ``{: .class}``), table-of-contents markers
  (``* Table of Contents``, ``[TOC]``), whole-line HTML comments and empty ``<a name>`` anchors.
- Link reference definitions (``[id]: url``) are collected from the whole page and removed from
  answers; reference links in answers are rewritten as inline links so each answer stands alone.
- A page none of whose headings reads as a question (ends with ``?``, or opens with an English
  question word: "How to ...", "Can I ...") is a README or a manual, not a FAQ: no entries.
- ``source_anchor`` is GitHub's slug of the heading (``-1``, ``-2`` ... for repeats), ``line`` the
  heading's 1-based line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import (
    decode_utf8,
    make_entry,
    normalize_question,
    read_bytes,
    require_a_question,
    split_tags,
)

__all__ = ["parse"]

NO_QUESTIONS = "no questions found: expected a heading per question"

# The patterns below avoid a quantifier that can retry a long run of spaces or brackets from
# every position: a fuzzed 1 MB heading must not take hours.
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")  # text right-stripped after the match
_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
_FENCE_CLOSE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*$")
_COMMENT_LINE = re.compile(r"^ {0,3}<!--.*-->[ \t]*$")
_COMMENT_OPEN = re.compile(r"^ {0,3}<!--(?!.*-->)")
_COMMENT_END = "-->"

_KRAMDOWN_ATTRIBUTES = re.compile(r"^ {0,3}\{:[^}]*\}[ \t]*$")
_TOC_MARKER = re.compile(
    r"^ {0,3}(?:[*+-][ \t]+)?(?:table of contents:?|\[toc\]|\[\[_?toc_?\]\])[ \t]*$", re.IGNORECASE
)
_EMPTY_ANCHOR = re.compile(r"^ {0,3}<a\s[^>]*>\s*</a>[ \t]*$", re.IGNORECASE)
_REFERENCE_DEFINITION = re.compile(
    r"^ {0,3}\[(?!\^)([^\]]+)\]:[ \t]*(<[^>]*>|\S+)"
    r"(?:[ \t]+(\"[^\"]*\"|'[^']*'|\([^)]*\)))?[ \t]*$"
)
_REFERENCE_LINK = re.compile(r"\[((?:[^\[\]]|\[[^\[\]]*\])+)\](?:\[([^\[\]]*)\])?(?![(:\[])")
_CODE_SPAN = re.compile(r"(`+).+?\1")
_SLUG_DROP = re.compile(r"[^\w\- ]")

_FRONT_MATTER_FENCE = "---"
_FRONT_MATTER_ENDS = ("---", "...")
_FRONT_MATTER_KEY = re.compile(r"^([A-Za-z_][\w-]*)[ \t]*:[ \t]*(.*)$")
_FRONT_MATTER_ITEM = re.compile(r"^[ \t]*-[ \t]+(.*)$")
_YAML_COMMENT = re.compile(r"[ \t]#")


@dataclass(frozen=True, slots=True)
class _FrontMatter:
    """What the page's front matter says; ``title`` is read but entries do not carry it."""

    title: str | None = None
    lang: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Line:
    """One physical line of the page after comments are dropped."""

    number: int
    text: str
    code: bool = False


@dataclass(slots=True)
class _Section:
    """A heading and the lines up to the next heading."""

    level: int
    title: str
    line: int
    body: list[_Line] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Reference:
    """A link reference definition: ``[label]: destination "title"``."""

    destination: str
    title: str | None


def parse(path: Path) -> list[Entry]:
    """Read a Markdown FAQ page into entries, one per heading that has a body."""
    lines = _split_lines(decode_utf8(read_bytes(path), path))
    front, first = _read_front_matter(lines, path)
    scanned = list(_scan(lines, first, path))
    references = _collect_references(scanned)
    sections = _split_sections(scanned, path)
    entries = _build_entries(sections, references, front, path)
    if not entries:
        raise NoEntriesError(path, NO_QUESTIONS)
    return require_a_question(entries, path, NO_QUESTIONS)


def _split_lines(text: str) -> list[str]:
    """Split on LF, CRLF or CR only (``str.splitlines`` would also split on U+2028 and such)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# --- front matter -------------------------------------------------------------------------------


def _read_front_matter(lines: list[str], path: Path) -> tuple[_FrontMatter, int]:
    """Parse leading front matter; return it and the index of the first content line."""
    if not lines or lines[0].strip() != _FRONT_MATTER_FENCE:
        return _FrontMatter(), 0
    for end in range(1, len(lines)):
        if lines[end].strip() in _FRONT_MATTER_ENDS:
            return _parse_front_matter(lines[1:end]), end + 1
    raise ParseError(path, 1, "front matter opened with '---' is never closed")


def _parse_front_matter(lines: list[str]) -> _FrontMatter:
    """Read top-level ``key: value`` pairs and ``- item`` lists; other keys are ignored."""
    values: dict[str, str | list[str]] = {}
    items: list[str] | None = None
    for line in lines:
        item = _FRONT_MATTER_ITEM.match(line)
        if item and items is not None:
            items.append(_yaml_scalar(item.group(1)))
            continue
        pair = _FRONT_MATTER_KEY.match(line)
        if pair is None:
            continue
        key, raw = pair.group(1).lower(), pair.group(2)
        items = None if raw.strip() else []
        values[key] = _yaml_value(raw) if items is None else items
    return _FrontMatter(
        title=_as_text(values.get("title")),
        lang=_as_text(values.get("lang")),
        tags=_as_tags(values.get("tags")),
    )


def _yaml_value(raw: str) -> str | list[str]:
    """A scalar, or an inline ``[a, b]`` list."""
    value = _strip_yaml_comment(raw)
    if value.startswith("[") and value.endswith("]"):
        return [_yaml_scalar(part) for part in value[1:-1].split(",") if part.strip()]
    return _yaml_scalar(raw)


def _yaml_scalar(raw: str) -> str:
    """Unquote a quoted scalar; drop a trailing ``# comment`` from a plain one."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return _strip_yaml_comment(value)


def _strip_yaml_comment(value: str) -> str:
    comment = _YAML_COMMENT.search(value)
    return (value[: comment.start()] if comment else value).strip()


def _as_text(value: str | list[str] | None) -> str | None:
    if isinstance(value, list):
        return ", ".join(value) or None
    return value or None


def _as_tags(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else split_tags(value)
    return tuple(item.strip() for item in items if item.strip())


# --- lines, headings and sections ---------------------------------------------------------------


def _scan(lines: list[str], first: int, path: Path) -> Iterator[_Line]:
    """Yield the page's lines marked as code or not, without whole-line HTML comments.

    A fence or comment left open at the end of the page raises ``ParseError`` when it hides a
    heading, since that heading's question would silently vanish.
    """
    index = first
    while index < len(lines):
        text = lines[index]
        fence = _FENCE_OPEN.match(text)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
            end = _fence_end(lines, index, fence.group(1), path)
            yield from (_Line(n + 1, lines[n], code=True) for n in range(index, end))
            index = end
        elif _COMMENT_LINE.match(text):
            index += 1
        elif _COMMENT_OPEN.match(text):
            index = _comment_end(lines, index, path)
        else:
            yield _Line(index + 1, text)
            index += 1


def _fence_end(lines: list[str], start: int, marker: str, path: Path) -> int:
    """Index just past the fence closing the one opened at ``start``."""
    for index in range(start + 1, len(lines)):
        close = _FENCE_CLOSE.match(lines[index])
        if close and close.group(1)[0] == marker[0] and len(close.group(1)) >= len(marker):
            return index + 1
    _check_nothing_hidden(lines, start, "code fence", path)
    return len(lines)


def _comment_end(lines: list[str], start: int, path: Path) -> int:
    """Index just past the line closing the HTML comment opened at ``start``."""
    for index in range(start + 1, len(lines)):
        if _COMMENT_END in lines[index]:
            return index + 1
    _check_nothing_hidden(lines, start, "HTML comment", path)
    return len(lines)


def _check_nothing_hidden(lines: list[str], start: int, what: str, path: Path) -> None:
    for index in range(start + 1, len(lines)):
        if _HEADING.match(lines[index]):
            reason = f"{what} opened here is never closed; it hides the heading on line {index + 1}"
            raise ParseError(path, start + 1, reason)


def _heading(line: _Line) -> tuple[int, str] | None:
    """``(level, text)`` when the line is an ATX heading."""
    if line.code:
        return None
    match = _HEADING.match(line.text)
    if match is None:
        return None
    text = _without_closing_hashes((match.group(2) or "").rstrip(" \t"))
    return len(match.group(1)), normalize_question(text)


def _without_closing_hashes(text: str) -> str:
    """Drop an ATX heading's closing ``#`` run (``## Title ##``), when a space precedes it."""
    kept = text.rstrip("#")
    if kept == text or (kept and kept[-1] not in " \t"):
        return text
    return kept.rstrip(" \t")


def _split_sections(lines: list[_Line], path: Path) -> list[_Section]:
    """Group lines under their headings; text before the first heading is dropped."""
    sections: list[_Section] = []
    for line in lines:
        heading = _heading(line)
        if heading is not None:
            level, title = heading
            if not title:
                raise ParseError(path, line.number, "empty heading: a heading needs a question")
            sections.append(_Section(level, title, line.number))
        elif sections:
            sections[-1].body.append(line)
    return sections


# --- answers ------------------------------------------------------------------------------------


def _collect_references(lines: list[_Line]) -> dict[str, _Reference]:
    """Link reference definitions of the whole page; the first of a label wins."""
    references: dict[str, _Reference] = {}
    for line in lines:
        match = None if line.code else _REFERENCE_DEFINITION.match(line.text)
        if match and _label(match.group(1)):
            destination = match.group(2).removeprefix("<").removesuffix(">")
            references.setdefault(_label(match.group(1)), _Reference(destination, match.group(3)))
    return references


def _label(text: str) -> str:
    return normalize_question(text).casefold()


def _answer(body: list[_Line], references: dict[str, _Reference]) -> str:
    """The body as Markdown: not-content lines dropped, references inlined, blank runs collapsed."""
    kept: list[str] = []
    for line in body:
        if line.code:
            kept.append(line.text)
        elif not _is_markup_only(line.text):
            text = _inline_references(line.text, references)
            if text.strip() or (kept and kept[-1]):
                kept.append(text if text.strip() else "")
    while kept and not kept[-1].strip():
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept)


def _is_markup_only(text: str) -> bool:
    """True for lines that render to nothing a reader of one answer needs."""
    return any(
        pattern.match(text)
        for pattern in (_KRAMDOWN_ATTRIBUTES, _TOC_MARKER, _EMPTY_ANCHOR, _REFERENCE_DEFINITION)
    )


def _inline_references(text: str, references: dict[str, _Reference]) -> str:
    """Rewrite ``[text][id]``, ``[id][]`` and ``[id]`` as inline links, outside code spans.

    Code spans are masked rather than split off, so link text holding code still matches.
    """
    if not references or "[" not in text:
        return text
    masked = _CODE_SPAN.sub(lambda span: "\x00" * len(span.group(0)), text)
    pieces: list[str] = []
    position = 0
    for match in _REFERENCE_LINK.finditer(masked):
        link_text = text[match.start(1) : match.end(1)]
        label = text[match.start(2) : match.end(2)] if match.group(2) else link_text
        reference = references.get(_label(label))
        if reference is None:
            continue
        title = f" {reference.title}" if reference.title else ""
        pieces += [text[position : match.start()], f"[{link_text}]({reference.destination}{title})"]
        position = match.end()
    pieces.append(text[position:])
    return "".join(pieces)


# --- entries ------------------------------------------------------------------------------------


def _build_entries(
    sections: list[_Section],
    references: dict[str, _Reference],
    front: _FrontMatter,
    path: Path,
) -> list[Entry]:
    answers = [_answer(section.body, references) for section in sections]
    title_index = _page_title_index(sections)
    slugs = _Slugger()
    entries: list[Entry] = []
    enclosing: list[int] = []
    for index, section in enumerate(sections):
        while enclosing and sections[enclosing[-1]].level >= section.level:
            enclosing.pop()
        categories = [sections[i].title for i in enclosing if not answers[i] and i != title_index]
        anchor = slugs.slug(section.title)  # every heading counts towards GitHub's -1, -2 suffixes
        enclosing.append(index)
        if not answers[index]:
            continue
        entries.append(
            make_entry(
                question=section.title,
                answer=answers[index],
                source_file=path,
                source_anchor=anchor,
                lang=front.lang,
                tags=(*front.tags, *_category_tags(categories[-1:])),
                line=section.line,
            )
        )
    return entries


def _page_title_index(sections: list[_Section]) -> int | None:
    """The page's ``# Title``: the first heading, when it is the page's only level-1 heading."""
    if sections and sections[0].level == 1 and sum(s.level == 1 for s in sections) == 1:
        return 0
    return None


def _category_tags(categories: list[str]) -> list[str]:
    """The nearest enclosing category as a tag: lower-cased, without code backticks."""
    return [category.replace("`", "").lower() for category in categories]


class _Slugger:
    """GitHub-style heading anchors, with ``-1``, ``-2`` ... appended to repeats."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def slug(self, heading: str) -> str:
        base = _SLUG_DROP.sub("", _link_texts(heading).lower()).replace(" ", "-")
        count = self._seen.get(base, 0)
        self._seen[base] = count + 1
        return base if count == 0 else f"{base}-{count}"


def _link_texts(text: str) -> str:
    r"""Inline links and images (``[text](url)``, ``![alt](src)``) replaced by their text.

    What ``re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)`` gives, in linear time: the next
    ``]`` and ``)`` are remembered rather than searched for again from every ``[``.
    """
    pieces: list[str] = []
    position = search = 0
    bracket = paren = -1  # the next "]" / ")" found so far; len(text) when there is none
    while (start := text.find("[", search)) >= 0:
        if bracket < start:
            bracket = _find(text, "]", start)
        if text[bracket + 1 : bracket + 2] == "(":
            if paren < bracket + 2:
                paren = _find(text, ")", bracket + 2)
            if paren < len(text):
                begin = start - 1 if start > position and text[start - 1] == "!" else start
                pieces += [text[position:begin], text[start + 1 : bracket]]
                position = search = paren + 1
                continue
        search = start + 1
    pieces.append(text[position:])
    return "".join(pieces)


def _find(text: str, char: str, start: int) -> int:
    found = text.find(char, start)
    return found if found >= 0 else len(text)
