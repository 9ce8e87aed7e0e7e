"""Answers rendered for Telegram: escaped, formatted, split under the limit."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from bot.render import LIMIT, inline, render_answer

ALLOWED = {"b", "i", "code", "pre", "a"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED, tag
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible(html_text: str) -> str:
    checker = _Checker()
    checker.feed(html_text)
    checker.close()
    assert not checker.stack, f"unclosed {checker.stack}"
    return "".join(checker.text)


def test_html_special_characters_are_escaped() -> None:
    [out] = render_answer('Use <b>bold</b> & "quotes" and 1 < 2 > 0')
    assert "<b>bold</b>" not in out
    assert visible(out) == 'Use <b>bold</b> & "quotes" and 1 < 2 > 0'


def test_markdown_becomes_telegram_html() -> None:
    [out] = render_answer(
        "Run `brew update` then **restart**.\n\n    brew upgrade <formula>\n\n"
        "* one\n* two\n\nSee [the docs](https://example.com/a?b=1&c=2) or [local](Other.md#x)."
    )
    assert "<code>brew update</code>" in out
    assert "<b>restart</b>" in out
    assert "<pre>brew upgrade &lt;formula&gt;</pre>" in out
    assert "• one\n• two" in out
    assert '<a href="https://example.com/a?b=1&amp;c=2">the docs</a>' in out
    assert "local" in out and "Other.md" not in out
    visible(out)


def test_fenced_code_keeps_its_lines_and_markup_literal() -> None:
    [out] = render_answer("```sh\nexport A=1 # **not bold**\n<tag>\n```")
    assert out == "<pre>export A=1 # **not bold**\n&lt;tag&gt;</pre>"


def test_long_answers_are_split_under_the_limit_without_losing_text() -> None:
    paragraph = "All work and no play makes Jack a dull boy. " * 40
    answer = "\n\n".join([paragraph] * 12)
    parts = render_answer(answer, footer="<i>Source: Jack</i>")
    assert len(parts) > 1
    assert all(len(p) <= LIMIT for p in parts)
    words = re.findall(r"\w+", " ".join(visible(p) for p in parts))
    assert words.count("Jack") == 40 * 12 + 1
    assert parts[-1].endswith("<i>Source: Jack</i>")


def test_one_giant_code_block_is_split_into_valid_blocks() -> None:
    parts = render_answer("```\n" + "echo '<x>' && true\n" * 800 + "```")
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= LIMIT
        assert part.startswith("<pre>") and part.endswith("</pre>")
        visible(part)
    assert sum(visible(p).count("echo") for p in parts) == 800


def test_a_single_huge_word_is_cut() -> None:
    parts = render_answer("x" * 10000)
    assert all(len(p) <= LIMIT for p in parts)
    assert sum(len(visible(p)) for p in parts) == 10000


def test_inline_does_not_treat_snake_case_as_italics() -> None:
    assert inline("set MAX_FILE_SIZE and some_name_here") == "set MAX_FILE_SIZE and some_name_here"
    assert inline("a __strong__ word") == "a <b>strong</b> word"


def test_glob_patterns_are_not_italics() -> None:
    assert inline("select *.* and *.txt files") == "select *.* and *.txt files"


def test_wrapped_lines_join_but_lists_and_hard_breaks_stay() -> None:
    source = "We keep writing\nto the old address.\n\n1. One\n2. Two\n\n- a\n- b\n\nfirst  \nsecond"
    [out] = render_answer(source)
    expected = "We keep writing to the old address.\n\n1. One\n2. Two\n\n• a\n• b\n\nfirst\nsecond"
    assert out == expected
