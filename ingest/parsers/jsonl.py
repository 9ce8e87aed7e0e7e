"""JSON Lines FAQs: one JSON object per line, a question per object.

Each non-blank line is an object with ``question`` and ``answer`` (non-empty strings) and,
optionally:

    key or id                 the entry's key (a string or an integer, stored as a string);
                              ``key`` wins when both are given
    examples, alt_questions   alternative questions: a list of strings, or one string
                              separated by ``|`` or newlines (both keys may be given)
    lang                      the entry's language
    tags                      a list of strings, or one string separated by ``,`` or ``|``

Other keys (``category``, ``other_answers`` ...) are ignored. ``source_anchor`` is ``line N``.
Any bad line fails the whole file with a ``ParseError`` at that line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.entry import Entry
from ingest.errors import ParseError
from ingest.parsers import decode_utf8, make_entry, read_bytes, split_alternatives, split_tags

__all__ = ["parse"]

NO_QUESTIONS = "no questions found: expected one JSON object per line"

_KEY_FIELDS = ("key", "id")
_ALTERNATIVE_FIELDS = ("alt_questions", "examples")


class _RecordError(ValueError):
    """A record is wrong; the caller adds the path and line."""


def parse(path: Path) -> list[Entry]:
    """Read a ``.jsonl`` file into entries, one per non-blank line."""
    text = decode_utf8(read_bytes(path), path)
    entries: list[Entry] = []
    # Split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() splits on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entries.append(_entry(_load_object(line), path, number))
        except _RecordError as exc:
            raise ParseError(path, number, str(exc)) from exc
    if not entries:
        raise ParseError(path, None, NO_QUESTIONS)
    return entries


def _load_object(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _RecordError(f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise _RecordError(f"expected a JSON object, got {_json_type(value)}")
    return value


def _entry(record: dict[str, Any], path: Path, number: int) -> Entry:
    return make_entry(
        question=_required_text(record, "question"),
        answer=_required_text(record, "answer"),
        source_file=path,
        source_anchor=f"line {number}",
        key=_key(record),
        alt_questions=[alt for name in _ALTERNATIVE_FIELDS for alt in _alternatives(record, name)],
        lang=_optional_text(record, "lang"),
        tags=_tags(record),
        line=number,
    )


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
