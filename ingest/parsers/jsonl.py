"""JSON Lines and JSON FAQs: a question per JSON object.

``.jsonl``: each non-blank line is one object. ``.json``: the document is a list of objects, or
an object holding that list under ``faqs``, ``items``, ``entries`` or ``questions`` (the first
of these keys present wins). Each object has ``question`` and ``answer`` (non-empty strings) and,
optionally:

    key or id                 the entry's key (a string or an integer, stored as a string);
                              ``key`` wins when both are given
    examples, alt_questions   alternative questions: a list of strings, or one string
                              separated by ``|`` or newlines (both keys may be given)
    lang or language          the entry's language
    (question/answer may also be called questionText/answerText, as in scraped datasets; a
    leading "Q." / "A." marker is dropped)
    tags                      a list of strings, or one string separated by ``,`` or ``|``

Other keys (``category``, ``other_answers`` ...) are ignored. ``source_anchor`` is ``line N``,
the line the object starts on. Any bad record fails the whole file with a ``ParseError`` at
its line; in a ``.json`` list the reason also names the record as ``item N`` (its 0-based index
in the list).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError, ParseWarning
from ingest.parsers import decode_utf8, make_entry, read_bytes, split_alternatives, split_tags

__all__ = ["parse"]

NO_QUESTIONS = "no questions found: expected one JSON object per line"
NO_ITEMS = "no questions found: the list of objects is empty"
NO_ANSWERS = "no questions with an answer found: every item's answer is empty"
TOO_DEEP = "invalid JSON: arrays or objects nested too deeply to read"
LIST_KEYS = ("faqs", "items", "entries", "questions")
NOT_A_LIST = (
    "expected a list of objects, or an object with a list under 'faqs', 'items', 'entries' or 'questions'"
)

_KEY_FIELDS = ("key", "id", "ID")
_ALTERNATIVE_FIELDS = ("alt_questions", "examples")
# Common exports name the fields differently (e.g. the JHU COVID-QA scrape: questionText/answerText).
_QUESTION_FIELDS = ("question", "questionText", "q")
_ANSWER_FIELDS = ("answer", "answerText", "a")
_LANGUAGE_FIELDS = ("lang", "language")
_MARKER = re.compile(r"^\s*[QA][.:)]\s+")


class _RecordError(ValueError):
    """A record is wrong; the caller adds the path and line."""


class _Unanswered(_RecordError):
    """A question whose answer is empty: not an entry (yet), skipped with a warning, not an error."""


def parse(path: Path, *, warnings: list[ParseWarning] | None = None) -> list[Entry]:
    """Read a ``.jsonl`` file (one object per line) or a ``.json`` document into entries.

    A question with an empty answer (scraped datasets have them) is skipped and noted in
    ``warnings``; any other bad record fails the file.
    """
    text = decode_utf8(read_bytes(path), path)
    warnings = warnings if warnings is not None else []
    if path.suffix.lower() == ".json":
        return _parse_document(text, path, warnings)
    return _parse_lines(text, path, warnings)


def _parse_lines(text: str, path: Path, warnings: list[ParseWarning]) -> list[Entry]:
    """One object per non-blank line."""
    entries: list[Entry] = []
    # Split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() splits on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entries.append(_entry(_load_object(line), path, number))
        except _Unanswered as exc:
            warnings.append(ParseWarning(path, number, f"{exc}: skipped"))
        except _RecordError as exc:
            raise ParseError(path, number, str(exc)) from exc
    if not entries:
        raise NoEntriesError(path, NO_QUESTIONS)
    return entries


def _parse_document(text: str, path: Path, warnings: list[ParseWarning]) -> list[Entry]:
    """A list of objects, or an object holding one under a known key."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError as exc:
        raise ParseError(path, None, TOO_DEEP) from exc
    key = _list_key(document, path)
    items = document if key is None else document[key]
    if not items:
        raise NoEntriesError(path, NO_ITEMS)
    lines = _item_lines(text, key)
    entries: list[Entry] = []
    for index, item in enumerate(items):
        line = lines[index] if index < len(lines) else None
        try:
            if not isinstance(item, dict):
                raise _RecordError(f"expected a JSON object, got {_json_type(item)}")
            entries.append(_entry(item, path, line, fallback_anchor=f"item {index}"))
        except _Unanswered as exc:
            warnings.append(ParseWarning(path, line, f"item {index}: {exc}: skipped"))
        except _RecordError as exc:
            raise ParseError(path, line, f"item {index}: {exc}") from exc
    if not entries:  # every item was a question without an answer: fail as .jsonl does
        raise NoEntriesError(path, NO_ANSWERS)
    return entries


def _list_key(document: object, path: Path) -> str | None:
    """``None`` for a top-level list, else the key whose value is the list."""
    if isinstance(document, list):
        return None
    if not isinstance(document, dict):
        raise ParseError(path, 1, f"{NOT_A_LIST}; got {_json_type(document)}")
    for key in LIST_KEYS:
        if key in document:
            if not isinstance(document[key], list):
                raise ParseError(path, None, f"{key!r} must be a list of objects")
            return key
    found = ", ".join(repr(key) for key in list(document)[:8]) or "none"
    raise ParseError(path, None, f"{NOT_A_LIST} (keys found: {found})")


def _item_lines(text: str, key: str | None) -> list[int]:
    """The 1-based line each element of the list starts on; ``[]`` when it cannot be told.

    The text is known to be valid JSON, so this walks only the top level with
    ``raw_decode`` (which skips whole values) and records where each list element begins.
    """
    scanner = _Scanner(text)
    try:
        if key is not None:
            scanner.seek_member(key)
        return scanner.list_element_lines()
    except (ValueError, IndexError):
        return []


class _Scanner:
    """A cursor over valid JSON text that can skip values and report line numbers."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._position = 0
        self._decoder = json.JSONDecoder()

    def seek_member(self, key: str) -> None:
        """Move to the value of the top-level object's last member named ``key``."""
        self._expect("{")
        found: int | None = None
        while self._peek() != "}":
            name, self._position = self._decoder.raw_decode(self._text, self._skip_space())
            self._expect(":")
            start = self._skip_space()
            _, self._position = self._decoder.raw_decode(self._text, start)
            if name == key:
                found = start  # the last duplicate wins, as in json.loads
            if self._peek() == ",":
                self._position += 1
        if found is None:
            raise ValueError(f"no member {key!r}")
        self._position = found

    def list_element_lines(self) -> list[int]:
        self._expect("[")
        lines: list[int] = []
        while self._peek() != "]":
            start = self._skip_space()
            lines.append(self._text.count("\n", 0, start) + 1)
            _, self._position = self._decoder.raw_decode(self._text, start)
            if self._peek() == ",":
                self._position += 1
        return lines

    def _skip_space(self) -> int:
        while self._position < len(self._text) and self._text[self._position] in " \t\r\n":
            self._position += 1
        return self._position

    def _peek(self) -> str:
        return self._text[self._skip_space()]

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            raise ValueError(f"expected {char!r} at {self._position}")
        self._position += 1


def _load_object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _RecordError(f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError as exc:
        raise _RecordError(TOO_DEEP) from exc
    if not isinstance(value, dict):
        raise _RecordError(f"expected a JSON object, got {_json_type(value)}")
    return value


def _entry(
    record: dict[str, Any], path: Path, number: int | None, fallback_anchor: str | None = None
) -> Entry:
    return make_entry(
        question=_MARKER.sub("", _required_text(record, _pick(record, _QUESTION_FIELDS)), count=1),
        answer=_MARKER.sub("", _answer(record), count=1),
        source_file=path,
        source_anchor=f"line {number}" if number is not None else (fallback_anchor or ""),
        key=_key(record),
        alt_questions=[alt for name in _ALTERNATIVE_FIELDS for alt in _alternatives(record, name)],
        lang=_optional_text(record, _pick(record, _LANGUAGE_FIELDS)),
        tags=_tags(record),
        line=number,
    )


def _answer(record: dict[str, Any]) -> str:
    name = _pick(record, _ANSWER_FIELDS)
    value = record.get(name)
    if record.get("hasAnswer") is False or (isinstance(value, str) and not value.strip()):
        _required_text(record, _pick(record, _QUESTION_FIELDS))  # a real question, or a real error
        raise _Unanswered(f"question without an answer ({name!r} is empty)")
    return _required_text(record, name)


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> str:
    """The first of ``names`` present in ``record`` (else the first, for the error message)."""
    return next((name for name in names if name in record), names[0])


def _required_text(record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise _RecordError(f"missing {name!r}")
    value = record[name]
    if not isinstance(value, str):
        raise _RecordError(f"{name!r} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise _RecordError(f"empty {name}")
    return value.strip()


def _optional_text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _RecordError(f"{name!r} must be a string, got {_json_type(value)}")


def _key(record: dict[str, Any]) -> str | None:
    for name in _KEY_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _RecordError(f"{name!r} must be a string or an integer, got {_json_type(value)}")
        return str(value)
    return None


def _alternatives(record: dict[str, Any], name: str) -> list[str]:
    return _string_list(record, name, split_alternatives)


def _tags(record: dict[str, Any]) -> list[str]:
    return _string_list(record, "tags", split_tags)


def _string_list(record: dict[str, Any], name: str, split: Callable[[str], list[str]]) -> list[str]:
    """A list of strings, or one string that ``split`` cuts into several."""
    value = record.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return split(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise _RecordError(f"{name!r} must be a list of strings")


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
