"""The one entry type every parser yields."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Entry:
    """One question/answer pair read from an editor's document.

    ``key`` is the editor's explicit key, or ``None`` to let the pipeline derive a stable one
    from the source file and the question. ``answer`` is Markdown-ish plain text (paragraphs,
    lists, fenced or indented code, links); the bot renders it for Telegram.
    ``source_anchor`` says where in the file: a heading slug or ``line N``.
    """

    question: str
    answer: str
    source_file: str
    source_anchor: str
    key: str | None = None
    alt_questions: tuple[str, ...] = field(default_factory=tuple)
    lang: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    line: int | None = None
