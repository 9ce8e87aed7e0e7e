"""Unit tests for the ingest parsers: small documents in ``tmp_path``, then the real shared files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.entry import Entry
from ingest.errors import ParseError, UnsupportedFormatError
from ingest.parsers import SUPPORTED_SUFFIXES, make_entry, parse_file
from ingest.parsers import jsonl as jsonl_parser
from ingest.parsers import markdown as markdown_parser
from ingest.parsers import tabular as tabular_parser
from tests.conftest import shared_path


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def by_question(entries: list[Entry]) -> dict[str, Entry]:
    return {entry.question: entry for entry in entries}


# --- dispatch and shared normalisation ----------------------------------------------------------


def test_supported_suffixes() -> None:
    expected = {
        ".md",
        ".markdown",
        ".csv",
        ".tsv",
        ".jsonl",
        ".json",
        ".html",
        ".htm",
        ".txt",
        ".docx",
        ".pdf",
    }
    assert frozenset(expected) == SUPPORTED_SUFFIXES


def test_parse_file_dispatches_on_lower_cased_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "FAQ.MARKDOWN", "## Why?\n\nBecause.\n")
    assert [entry.question for entry in parse_file(path)] == ["Why?"]


def test_parse_file_rejects_unknown_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.rtf", "Why? Because.")
    with pytest.raises(UnsupportedFormatError) as caught:
        parse_file(path)
    assert caught.value.path == path


def test_parse_file_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as caught:
        parse_file(tmp_path / "missing.md")
    assert caught.value.line is None
    assert "cannot read file" in caught.value.reason


def test_make_entry_normalises_question_and_alternatives() -> None:
    entry = make_entry(
        question="  How do\tI   log in?\n",
        answer="Like this.",
        source_file=Path("faq.csv"),
        source_anchor="line 2",
        key="  ",
        alt_questions=["Login?", "How do I log in?", "Login?", " Sign  in? ", ""],
        lang=" en ",
        tags=["a", " a ", "b", ""],
    )
    assert entry.question == "How do I log in?"
    assert entry.alt_questions == ("Login?", "Sign in?")
    assert entry.key is None
    assert entry.lang == "en"
    assert entry.tags == ("a", "b")
    assert entry.source_file == "faq.csv"


# --- Markdown -----------------------------------------------------------------------------------

FRONT_MATTER_PAGE = """\
---
title: "Billing FAQ"
lang: de
tags: [billing, "payments"]
description: ignored
---

# Billing FAQ

* Table of Contents
{:toc}

## How do I pay?

By card.
{: .note}

## Can I get a refund? ##

Yes, within 30 days.
"""


def test_markdown_front_matter_applies_to_every_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.md", FRONT_MATTER_PAGE)
    entries = markdown_parser.parse(path)
    assert [entry.question for entry in entries] == ["How do I pay?", "Can I get a refund?"]
    for entry in entries:
        assert entry.lang == "de"
        assert entry.tags == ("billing", "payments")
        assert entry.source_file == str(path)
    assert entries[0].answer == "By card."
    assert entries[0].line == 13
    assert entries[1].source_anchor == "can-i-get-a-refund"


@pytest.mark.parametrize(
    "tags_yaml",
    ["tags: billing, payments", "tags:\n  - billing\n  - 'payments'", "tags: [billing, payments] # two"],
)
def test_markdown_front_matter_tag_forms(tmp_path: Path, tags_yaml: str) -> None:
    path = write(tmp_path, "faq.md", f"---\n{tags_yaml}\n---\n## Q?\n\nA.\n")
    assert markdown_parser.parse(path)[0].tags == ("billing", "payments")


def test_markdown_front_matter_never_closed(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.md", "---\nlang: en\n## Q?\n\nA.\n")
    with pytest.raises(ParseError) as caught:
        markdown_parser.parse(path)
    assert caught.value.line == 1


NESTED_PAGE = """\
# Accounts

## Signing in

### How do I reset my password?

Use the *Forgot password* link.

### Why is my account locked?

Too many attempts.

## Can I have two accounts?

No.

# Billing

## Refunds

### How long does a refund take?

Five days.
"""


def test_markdown_nested_categories_become_tags(tmp_path: Path) -> None:
    entries = by_question(markdown_parser.parse(write(tmp_path, "faq.md", NESTED_PAGE)))
    assert list(entries) == [
        "How do I reset my password?",
        "Why is my account locked?",
        "Can I have two accounts?",
        "How long does a refund take?",
    ]
    assert entries["How do I reset my password?"].tags == ("signing in",)
    assert entries["Why is my account locked?"].tags == ("signing in",)
    assert entries["Can I have two accounts?"].tags == ("accounts",)
    assert entries["How long does a refund take?"].tags == ("refunds",)
    assert entries["How long does a refund take?"].line == 21


def test_markdown_page_title_is_not_a_tag(tmp_path: Path) -> None:
    page = "<!-- lint: off -->\n# Product FAQ\n\n### Is it free?\n\nYes.\n"
    [entry] = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert entry.question == "Is it free?"
    assert entry.tags == ()
    assert entry.line == 4


def test_markdown_page_title_with_its_own_body_is_an_entry(tmp_path: Path) -> None:
    page = "# About us\n\nWe sell bikes.\n\n## Do you ship abroad?\n\nYes.\n"
    entries = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert [entry.question for entry in entries] == ["About us", "Do you ship abroad?"]


def test_markdown_hash_inside_fenced_code_is_not_a_heading(tmp_path: Path) -> None:
    page = (
        "## How do I install?\n\nRun:\n\n```sh\n# not a heading\nmake install\n```\n\n"
        "~~~\n## also not a heading\n~~~\n\n## Next?\n\nDone.\n"
    )
    entries = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert [entry.question for entry in entries] == ["How do I install?", "Next?"]
    assert entries[0].answer == (
        "Run:\n\n```sh\n# not a heading\nmake install\n```\n\n~~~\n## also not a heading\n~~~"
    )
    assert entries[1].line == 14


def test_markdown_keeps_blocks_verbatim(tmp_path: Path) -> None:
    body = (
        "    brew --cache\n\n"
        "Which is usually:\n\n"
        "| OS | Path |\n|----|------|\n| macOS | `~/Library/Caches` |\n\n"
        "* one\n* two [link](https://example.com)\n\n"
        "Line with hard break  \nnext line."
    )
    page = f"## Where does stuff go?\n\n{body}\n\n\n"
    [entry] = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert entry.answer == body


def test_markdown_drops_markup_that_is_not_content(tmp_path: Path) -> None:
    page = (
        "## First?\n\nOne.\n\n{: .warning}\n\n<!--\nreviewer note\n-->\n\n"
        '<a name="old-anchor"></a>\n\n## Second?\n\n[TOC]\n\nTwo.\n'
    )
    entries = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert [entry.answer for entry in entries] == ["One.", "Two."]


def test_markdown_heading_text_and_anchors(tmp_path: Path) -> None:
    page = (
        "## Why  does `brew upgrade <formula>` fail? ##\n\nBecause.\n\n"
        "## My macOS `.app`s don’t find C# utilities\n\nPATH.\n\n"
        "## FAQ\n\nOne.\n\n## FAQ\n\nTwo.\n"
    )
    entries = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert [(entry.question, entry.source_anchor) for entry in entries] == [
        ("Why does `brew upgrade <formula>` fail?", "why-does-brew-upgrade-formula-fail"),
        ("My macOS `.app`s don’t find C# utilities", "my-macos-apps-dont-find-c-utilities"),
        ("FAQ", "faq"),
        ("FAQ", "faq-1"),
    ]


def test_markdown_reference_links_are_inlined(tmp_path: Path) -> None:
    page = (
        "## Where are the docs?\n\nSee [the guide][guide], [`api`][API] and [guide].\n"
        "Code stays: `[guide]`.\n\n"
        '## Last?\n\nBye.\n\n[guide]: https://example.com/guide "Guide"\n[api]: <https://example.com/api>\n'
    )
    entries = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert entries[0].answer == (
        'See [the guide](https://example.com/guide "Guide"), [`api`](https://example.com/api) and '
        '[guide](https://example.com/guide "Guide").\nCode stays: `[guide]`.'
    )
    assert entries[1].answer == "Bye."


def test_markdown_crlf_and_bom(tmp_path: Path) -> None:
    page = "\ufeff---\r\nlang: fr\r\n---\r\n## Où est-ce ?\r\n\r\nIci.\r\n\r\nEt là.\r\n"
    [entry] = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert entry.question == "Où est-ce ?"
    assert entry.answer == "Ici.\n\nEt là."
    assert entry.lang == "fr"
    assert entry.line == 4


def test_markdown_heading_without_body_is_skipped(tmp_path: Path) -> None:
    page = "## Unanswered?\n\n## Answered?\n\nYes.\n"
    entries = markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert [entry.question for entry in entries] == ["Answered?"]


def test_markdown_undecodable_bytes_report_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.md", b"## Q?\n\nCaf\xe9 is fine.\n")
    with pytest.raises(ParseError) as caught:
        markdown_parser.parse(path)
    assert caught.value.line == 3
    assert "UTF-8" in caught.value.reason


def test_markdown_without_headings_fails(tmp_path: Path) -> None:
    path = write(tmp_path, "faq.md", "---\ntitle: x\n---\nJust prose, no questions.\n")
    with pytest.raises(ParseError) as caught:
        markdown_parser.parse(path)
    assert caught.value.line is None
    assert caught.value.reason == "no questions found: expected a heading per question"


def test_markdown_unclosed_fence_hiding_a_heading_fails(tmp_path: Path) -> None:
    page = "## Q?\n\n```sh\nls\n\n## Next?\n\nA.\n"
    with pytest.raises(ParseError) as caught:
        markdown_parser.parse(write(tmp_path, "faq.md", page))
    assert caught.value.line == 3
    assert "line 6" in caught.value.reason


# --- CSV and TSV --------------------------------------------------------------------------------


def test_csv_all_columns(tmp_path: Path) -> None:
    content = (
        " Key ,QUESTION,Answer,Alt Questions,lang,tags,notes\n"
        "login,How do I log in?,With your email.,Login? | Sign in?|Login?|How do I log in?,en,"
        '"account, auth|web",ignored\n'
    )
    [entry] = tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert entry == Entry(
        question="How do I log in?",
        answer="With your email.",
        source_file=str(tmp_path / "faq.csv"),
        source_anchor="line 2",
        key="login",
        alt_questions=("Login?", "Sign in?"),
        lang="en",
        tags=("account", "auth", "web"),
        line=2,
    )


def test_csv_semicolon_delimited(tmp_path: Path) -> None:
    content = "question;answer\nHow much?;5,00 €\nWhy, though?;Because\n"
    entries = tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert [(entry.question, entry.answer) for entry in entries] == [
        ("How much?", "5,00 €"),
        ("Why, though?", "Because"),
    ]


@pytest.mark.parametrize("name", ["faq.tsv", "faq.csv"])
def test_tab_delimited(tmp_path: Path, name: str) -> None:
    content = "question\tanswer\nA, B or C?\tB; always\n"
    [entry] = tabular_parser.parse(write(tmp_path, name, content))
    assert (entry.question, entry.answer) == ("A, B or C?", "B; always")


def test_csv_encodings(tmp_path: Path) -> None:
    text = "question,answer\r\nCafé?,Crème.\r\n"
    for name, data in [
        ("bom.csv", b"\xef\xbb\xbf" + text.encode("utf-8")),
        ("cp1252.csv", text.encode("cp1252")),
        ("utf16.csv", text.encode("utf-16")),
    ]:
        [entry] = tabular_parser.parse(write(tmp_path, name, data))
        assert (entry.question, entry.answer, entry.line) == ("Café?", "Crème.", 2), name


def test_csv_multiline_fields_keep_start_lines(tmp_path: Path) -> None:
    content = (
        "question,answer,alt_questions\r\n"
        '"How do I\r\nlog in?","Step one.\r\n\r\nStep two.","Login?\r\nSign in?"\r\n'
        "\r\n"
        "Second?,Yes.,\r\n"
    )
    entries = tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert entries[0].question == "How do I log in?"
    assert entries[0].answer == "Step one.\n\nStep two."
    assert entries[0].alt_questions == ("Login?", "Sign in?")
    assert [(entry.line, entry.source_anchor) for entry in entries] == [(2, "line 2"), (8, "line 8")]


def test_csv_error_after_multiline_field_names_the_record_line(tmp_path: Path) -> None:
    content = 'question,answer\n"Multi\nline?","Yes\nreally"\n  ,Orphan answer\n'
    with pytest.raises(ParseError) as caught:
        tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert (caught.value.line, caught.value.reason) == (5, "empty question")


def test_csv_empty_answer(tmp_path: Path) -> None:
    content = "question,answer\nFine?,Yes\nEmpty?,   \n"
    with pytest.raises(ParseError) as caught:
        tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert (caught.value.line, caught.value.reason) == (3, "empty answer")


def test_csv_missing_column(tmp_path: Path) -> None:
    content = "ID,Question,Answer (Original)\n1,Q?,A.\n"
    with pytest.raises(ParseError) as caught:
        tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert caught.value.line == 1
    assert caught.value.reason == "missing column 'answer' (found: ID, Question, Answer (Original))"


def test_csv_unterminated_quote_reports_record_start(tmp_path: Path) -> None:
    content = 'question,answer\nFine?,Yes\nBroken?,"never closed\nmore\n'
    with pytest.raises(ParseError) as caught:
        tabular_parser.parse(write(tmp_path, "faq.csv", content))
    assert caught.value.line == 3
    assert "malformed record" in caught.value.reason


def test_csv_header_only_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no questions found"):
        tabular_parser.parse(write(tmp_path, "header.csv", "question,answer\n,\n"))
    with pytest.raises(ParseError, match="empty file"):
        tabular_parser.parse(write(tmp_path, "empty.csv", ""))


def test_csv_undecodable_even_as_cp1252(tmp_path: Path) -> None:
    # 0x81 is undefined in cp1252 and invalid as a UTF-8 start byte.
    path = write(tmp_path, "faq.csv", b"question,answer\nQ?,A.\nQ2?,\x81\n")
    with pytest.raises(ParseError) as caught:
        tabular_parser.parse(path)
    assert caught.value.line == 3


# --- JSON Lines ---------------------------------------------------------------------------------


def jsonl(*records: object) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def test_jsonl_fields_and_synonyms(tmp_path: Path) -> None:
    content = (
        jsonl(
            {
                "id": 7,
                "question": " How  do I pay? ",
                "answer": " By card. ",
                "examples": ["Payment?", "Payment?", "How do I pay?"],
                "lang": "en",
                "tags": ["billing"],
                "category": "ignored",
            },
        )
        + "\n   \n"
        + jsonl(
            {"key": "refund", "question": "Refund?", "answer": "Yes.", "alt_questions": "Money back?|Return?"}
        )
    )
    first, second = jsonl_parser.parse(write(tmp_path, "faqs.jsonl", content))
    assert first == Entry(
        question="How do I pay?",
        answer="By card.",
        source_file=str(tmp_path / "faqs.jsonl"),
        source_anchor="line 1",
        key="7",
        alt_questions=("Payment?",),
        lang="en",
        tags=("billing",),
        line=1,
    )
    assert (second.key, second.alt_questions, second.line) == ("refund", ("Money back?", "Return?"), 4)


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    record = '{"question": "Q?", "answer": "one\u2028two"}\n'
    [entry] = jsonl_parser.parse(write(tmp_path, "faqs.jsonl", record))
    assert entry.answer == "one\u2028two"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"question": "Q?", "answer": ', "invalid JSON"),
        ('["Q?", "A."]', "expected a JSON object, got an array"),
        ('{"answer": "A."}', "missing 'question'"),
        ('{"question": 5, "answer": "A."}', "'question' must be a string, got a number"),
        ('{"question": "Q?", "answer": "A.", "examples": [1]}', "'examples' must be a list of strings"),
        ('{"id": 1.5, "question": "Q?", "answer": "A."}', "'id' must be a string or an integer"),
    ],
)
def test_jsonl_bad_line_reports_its_number(tmp_path: Path, bad_line: str, reason: str) -> None:
    content = jsonl({"question": "Fine?", "answer": "Yes."}) + "\n" + bad_line + "\n"
    with pytest.raises(ParseError) as caught:
        jsonl_parser.parse(write(tmp_path, "faqs.jsonl", content))
    assert caught.value.line == 3
    assert reason in caught.value.reason


def test_jsonl_without_records_fails(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no questions found"):
        jsonl_parser.parse(write(tmp_path, "faqs.jsonl", "\n\n"))


# --- the real shared documents ------------------------------------------------------------------


def test_real_homebrew_faq() -> None:
    entries = parse_file(shared_path("docs", "homebrew-faq", "docs", "FAQ.md"))
    assert len(entries) == 28
    questions = by_question(entries)
    assert "How do I uninstall Homebrew?" in questions
    assert "FAQ (Frequently Asked Questions)" not in questions
    assert questions["Where does stuff get downloaded?"].answer.startswith("    brew --cache")
    assert (
        "data-proofer-ignore"
        not in questions["How can I specify different configure arguments for a formula?"].answer
    )
    assert all(entry.tags == () for entry in entries)


def test_real_electron_faq() -> None:
    entries = parse_file(shared_path("docs", "electron-faq", "docs", "faq.md"))
    assert len(entries) == 10
    assert "Electron FAQ" not in by_question(entries)
    assert "[memory-management]:" not in entries[-1].answer
    tray = by_question(entries)["My app's tray disappeared after a few minutes."]
    assert "[Memory Management](https://developer.mozilla.org/" in tray.answer


def test_real_rclone_faq() -> None:
    entries = parse_file(shared_path("docs", "rclone-faq", "docs", "content", "faq.md"))
    assert len(entries) == 18
    dns = by_question(entries)["tcp lookup some.domain.com no such host"]
    assert "# both should print a long list of possible IP addresses" in dns.answer


def test_real_csv_faq() -> None:
    entries = parse_file(shared_path("docs", "csv-faq", "faq_db.csv"))
    assert len(entries) > 0
    assert all(entry.key is None and entry.question and entry.answer for entry in entries)
    assert entries[0].source_anchor == "line 2"


def test_real_stackfaq_jsonl() -> None:
    path = shared_path("eval", "stackfaq", "faqs.jsonl")
    entries = parse_file(path)
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    assert len(entries) == len(lines) == 125
    assert entries[0].key == "stackfaq-000"
