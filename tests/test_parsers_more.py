"""Unit tests for the HTML, plain-text, JSON, DOCX and PDF parsers and language detection.

Small documents are written to ``tmp_path`` (DOCX ones built with python-docx); the PDFs are
the hand-made samples in ``tests/data`` (see ``tests/data/make_samples.py``); the 7-Zip FAQ
comes from ``../shared`` and its test skips when that is absent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import docx
import pytest

from ingest.entry import Entry
from ingest.errors import NoEntriesError, ParseError
from ingest.parsers import SUPPORTED_SUFFIXES, parse_file, reads_as_question
from ingest.parsers import docx as docx_parser
from ingest.parsers import html as html_parser
from ingest.parsers import jsonl as jsonl_parser
from ingest.parsers import pdf as pdf_parser
from ingest.parsers import plaintext as plaintext_parser
from kb.language import base_language, detect_language
from tests.conftest import shared_path

DATA = Path(__file__).resolve().parent / "data"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def by_question(entries: list[Entry]) -> dict[str, Entry]:
    return {entry.question: entry for entry in entries}


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first occurrence of ``needle``."""
    return text[: text.index(needle)].count("\n") + 1


# --- dispatch -----------------------------------------------------------------------------------


def test_supported_suffixes_cover_the_new_formats() -> None:
    assert {".html", ".htm", ".txt", ".json", ".docx", ".pdf"} <= SUPPORTED_SUFFIXES


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
def test_every_supported_suffix_has_a_parser(tmp_path: Path, suffix: str) -> None:
    """An empty file of each type reaches its parser, which rejects it with a ParseError."""
    with pytest.raises(ParseError):
        parse_file(write(tmp_path, f"empty{suffix.upper()}", b""))


# --- HTML: headings -----------------------------------------------------------------------------

HEADINGS_PAGE = """\
<!DOCTYPE html>
<html lang="en-GB">
<head><title>Help</title><style>h2 { color: red }</style></head>
<body>
<header><nav><a href="/">Home</a> | <a href="/faq">FAQ</a></nav></header>
<main>
<h1>Help centre</h1>
<h2>Billing</h2>
<h3 id="pay">How do I pay?</h3>
<p>By <b>card</b> or <a href="https://example.com/transfer">bank transfer</a>.
See <a href="/terms">our terms</a>.</p>
<ul><li>Visa<ul><li>Debit</li></ul></li><li>Mastercard</ul>
<h3>Can I get a refund?</h3>
<p>Yes: run <code>refund --now</code>:</p>
<pre><code class="language-sh">refund --order 42
</code></pre>
<ol><li>Open orders<li>Choose one</ol>
<table><tr><th>Plan</th><th>Days</th></tr><tr><td>Basic</td><td>14</td></tr><tr><td>Pro<td>30</tr></table>
<h2>Why is it called <em>Acme</em>?</h2>
<p>Because.</p>
</main>
<aside>Related: <a href="/x">x</a></aside>
<footer><p>&copy; Acme</p></footer>
<script>document.write("<h2>Injected?</h2><p>no</p>")</script>
</body></html>
"""


def test_html_headings_categories_and_title(tmp_path: Path) -> None:
    entries = html_parser.parse(write(tmp_path, "faq.html", HEADINGS_PAGE))
    assert [entry.question for entry in entries] == [
        "How do I pay?",
        "Can I get a refund?",
        "Why is it called Acme?",
    ]
    pay, refund, name = entries
    assert pay.tags == refund.tags == ("billing",)
    assert name.tags == (), "the page's single h1 is its title, not a category"
    assert [entry.source_anchor for entry in entries] == [
        "pay",
        "can-i-get-a-refund",
        "why-is-it-called-acme",
    ]
    assert pay.line == line_of(HEADINGS_PAGE, "<h3 id")
    assert name.line == line_of(HEADINGS_PAGE, "<h2>Why")
    assert all(entry.lang == "en" and entry.key is None for entry in entries)
    assert name.answer == "Because."


def test_html_answers_become_light_markdown(tmp_path: Path) -> None:
    pay, refund, _ = html_parser.parse(write(tmp_path, "faq.html", HEADINGS_PAGE))
    assert pay.answer == (
        "By **card** or [bank transfer](https://example.com/transfer). See our terms.\n\n"
        "- Visa\n  - Debit\n- Mastercard"
    )
    assert refund.answer == (
        "Yes: run `refund --now`:\n\n"
        "```sh\nrefund --order 42\n```\n\n"
        "1. Open orders\n2. Choose one\n\n"
        "| Plan | Days |\n| --- | --- |\n| Basic | 14 |\n| Pro | 30 |"
    )


def test_html_chrome_is_dropped(tmp_path: Path) -> None:
    page = """<html><body>
<header><h1>Acme</h1><nav><h2>Menu?</h2><ul><li>Home</li></ul></nav></header>
<form action="/search"><h2>Search?</h2><input name="q"></form>
<article><header><h2>Is it safe?</h2></header><p>Yes.</p>
<script>var x = "<p>hidden</p>";</script><style>p { margin: 0 }</style>
<noscript>Enable JS</noscript></article>
<aside><h2>Related?</h2><p>Other stuff.</p></aside>
<div role="navigation"><h2>Sitemap?</h2><p>Links.</p></div>
<footer><h2>Contact?</h2><p>Call us.</p></footer>
</body></html>"""
    [entry] = html_parser.parse(write(tmp_path, "faq.html", page))
    assert (entry.question, entry.answer) == ("Is it safe?", "Yes.")


def test_html_page_wrapped_in_a_form_is_kept(tmp_path: Path) -> None:
    page = '<body><form id="form1"><h2>Is it open?</h2><p>Yes.</p><input type="hidden"></form></body>'
    [entry] = html_parser.parse(write(tmp_path, "faq.aspx.html", page))
    assert entry.answer == "Yes."


def test_html_accordion_buttons_in_headings(tmp_path: Path) -> None:
    page = """<div class="accordion">
<h3><button aria-expanded="false" aria-controls="a1">How do I cancel?</button></h3>
<div id="a1" role="region" hidden><p>In <strong>Settings</strong>.</p></div>
</div>"""
    [entry] = html_parser.parse(write(tmp_path, "faq.html", page))
    assert (entry.question, entry.answer, entry.line) == ("How do I cancel?", "In **Settings**.", 2)


def test_html_without_questions_fails(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as caught:
        html_parser.parse(write(tmp_path, "faq.html", "<html><body><p>Just text.</p></body></html>"))
    assert caught.value.line is None
    assert caught.value.reason == html_parser.NO_QUESTIONS


# --- HTML: <dl> and <details> -------------------------------------------------------------------

DL_PAGE = """\
<html><body>
<h2>Shipping</h2>
<dl>
  <dt id="where">Where do you ship?
  <dt>Which countries do you ship to?
  <dd><p>To the EU and the UK.</p>
  <dt>How long does it take?
  <dd>Two to five days.
</dl>
<h2>What do the codes mean?</h2>
<dl><dt>200</dt><dd>OK</dd><dt>404</dt><dd>Not found</dd></dl>
</body></html>
"""


def test_html_definition_lists(tmp_path: Path) -> None:
    entries = html_parser.parse(write(tmp_path, "faq.htm", DL_PAGE))
    assert [entry.question for entry in entries] == [
        "Where do you ship?",
        "How long does it take?",
        "What do the codes mean?",
    ]
    questions = by_question(entries)
    ship = questions["Where do you ship?"]
    assert ship.alt_questions == ("Which countries do you ship to?",)
    assert (ship.answer, ship.source_anchor, ship.tags) == ("To the EU and the UK.", "where", ("shipping",))
    assert ship.line == line_of(DL_PAGE, "<dt id")
    took = questions["How long does it take?"]
    assert (took.answer, took.source_anchor) == ("Two to five days.", "how-long-does-it-take")
    codes = questions["What do the codes mean?"]
    assert codes.answer == "**200**\n\nOK\n\n**404**\n\nNot found", (
        "a glossary inside an answer stays content"
    )
    assert codes.tags == ()


DETAILS_PAGE = """\
<html><body>
<details><summary>Accounts</summary>
  <details id="q-reset"><summary>How do I reset my password?</summary><p>Use the link.</p></details>
  <details><summary>Can I change my e-mail?</summary>Yes, in <em>Settings</em>.</details>
</details>
<details><summary>Is there an API?</summary><p>Yes.</p>
  <details><summary>Limits</summary>100/s</details></details>
</body></html>
"""


def test_html_details_and_summary(tmp_path: Path) -> None:
    entries = html_parser.parse(write(tmp_path, "faq.html", DETAILS_PAGE))
    assert [entry.question for entry in entries] == [
        "How do I reset my password?",
        "Can I change my e-mail?",
        "Is there an API?",
    ]
    reset, email, api = entries
    assert (reset.answer, reset.source_anchor, reset.tags) == ("Use the link.", "q-reset", ("accounts",))
    assert reset.line == 3
    assert (email.answer, email.tags) == ("Yes, in *Settings*.", ("accounts",))
    assert api.answer == "Yes.\n\n**Limits**\n\n100/s"
    assert api.tags == ()


# --- HTML: JSON-LD ------------------------------------------------------------------------------

JSON_LD_PAGE = """\
<html lang="en"><head>
<script type="application/ld+json">
{
  "@context": "https://schema.org",
  "@graph": [
    {"@type": "WebSite", "name": "Acme"},
    {
      "@type": ["WebPage", "FAQPage"],
      "inLanguage": "de-DE",
      "mainEntity": [
        {
          "@type": "Question",
          "@id": "https://acme.example/faq#versand",
          "name": "Wie lange dauert der Versand?",
          "alternateName": "Lieferzeit?",
          "acceptedAnswer": {
            "@type": "Answer",
            "text": "<p>Zwei bis fünf <b>Werktage</b>.</p><ul><li>DHL</li><li>DPD</li></ul>"
          }
        },
        {
          "@type": "Question",
          "name": "Kann ich zur&uuml;ckgeben?",
          "acceptedAnswer": {"@type": "Answer", "text": "Ja.\\n\\nInnerhalb von 30 Tagen."}
        },
        {"@type": "Question", "name": "Ohne Antwort?"}
      ]
    }
  ]
}
</script></head>
<body><h2>Markup question?</h2><p>Ignored when JSON-LD has questions.</p></body></html>
"""


def test_html_json_ld_in_graph_is_preferred(tmp_path: Path) -> None:
    entries = html_parser.parse(write(tmp_path, "faq.html", JSON_LD_PAGE))
    assert [entry.question for entry in entries] == ["Wie lange dauert der Versand?", "Kann ich zurückgeben?"]
    shipping, returns = entries
    assert shipping.answer == "Zwei bis fünf **Werktage**.\n\n- DHL\n- DPD"
    assert shipping.alt_questions == ("Lieferzeit?",)
    assert shipping.source_anchor == "versand"
    assert shipping.line == line_of(JSON_LD_PAGE, '"name": "Wie lange')
    assert returns.answer == "Ja.\n\nInnerhalb von 30 Tagen."
    assert returns.source_anchor == "kann-ich-zurückgeben"
    assert returns.line == line_of(JSON_LD_PAGE, '"name": "Kann')
    assert {entry.lang for entry in entries} == {"de"}


def test_html_json_ld_top_level_list(tmp_path: Path) -> None:
    data = [
        {"@type": "Organization", "name": "Acme"},
        {
            "@context": "https://schema.org",
            "@type": "FAQPage",
            "mainEntity": {"@type": "Question", "name": "Is it free?", "acceptedAnswer": {"text": "Yes."}},
        },
    ]
    page = f'<script type="application/ld+json">{json.dumps(data)}</script><h2>Other?</h2><p>No.</p>'
    [entry] = html_parser.parse(write(tmp_path, "faq.html", page))
    assert (entry.question, entry.answer, entry.line) == ("Is it free?", "Yes.", 1)


def test_html_broken_json_ld_falls_back_to_markup(tmp_path: Path) -> None:
    page = '<script type="application/ld+json">{"@type": "FAQPage", </script><h2>Is it free?</h2><p>Yes.</p>'
    [entry] = html_parser.parse(write(tmp_path, "faq.html", page))
    assert (entry.question, entry.answer) == ("Is it free?", "Yes.")


# --- HTML: encodings ----------------------------------------------------------------------------

CP1252_BODY = "<h2>Où est ma commande ?</h2><p>Expédiée – “bientôt”.</p>"


@pytest.mark.parametrize(
    "head",
    [
        '<meta charset="windows-1252">',
        "<meta http-equiv=Content-Type content='text/html; charset=iso-8859-1'>",
    ],
)
def test_html_declared_cp1252(tmp_path: Path, head: str) -> None:
    page = f"<html><head>{head}</head><body>{CP1252_BODY}</body></html>".encode("cp1252")
    [entry] = html_parser.parse(write(tmp_path, "faq.html", page))
    assert entry.question == "Où est ma commande ?"
    assert entry.answer == "Expédiée – “bientôt”.", "ISO-8859-1 is read as windows-1252, as browsers do"


def test_html_bom_wins_over_declaration(tmp_path: Path) -> None:
    page = f'<meta charset="windows-1252">{CP1252_BODY}'.encode()
    [entry] = html_parser.parse(write(tmp_path, "faq.html", b"\xef\xbb\xbf" + page))
    assert entry.answer == "Expédiée – “bientôt”."


def test_html_undeclared_encoding_is_detected(tmp_path: Path) -> None:
    page = (
        "<html><body><h2>Как оплатить заказ?</h2><p>Оплатить заказ можно банковской картой или "
        "переводом. Деньги списываются сразу после подтверждения заказа.</p></body></html>"
    )
    [entry] = html_parser.parse(write(tmp_path, "faq.html", page.encode("cp1251")))
    assert entry.question == "Как оплатить заказ?"
    assert entry.answer.startswith("Оплатить заказ можно")


def test_html_crlf_line_numbers(tmp_path: Path) -> None:
    page = "<html>\r\n<body>\r\n\r\n<h4>Why?</h4>\r\n<p>Because.</p>\r\n</body></html>\r\n"
    [entry] = html_parser.parse(write(tmp_path, "faq.htm", page))
    assert entry.line == 4


# --- HTML: the real 7-Zip FAQ -------------------------------------------------------------------


def test_real_7zip_faq() -> None:
    entries = parse_file(shared_path("docs", "7zip-faq", "docs", "chm", "general", "faq.htm"))
    assert len(entries) == 10
    questions = by_question(entries)
    assert entries[0].question == "Can I use 7-Zip in a commercial organization?"
    assert entries[0].line == 14
    assert entries[0].answer.startswith("Yes, 7-Zip is free software.")
    assert "Frequently Asked Questions (FAQ)" not in questions
    assert all(entry.tags == () and entry.lang is None for entry in entries)
    associations = questions["How can I set file associations to 7-Zip in Windows 7 and Windows Vista?"]
    assert "click **Run as administrator**." in associations.answer
    switch = questions["Why doesn't -r switch work as expected?"]
    assert '```\n  7z.exe a c:\\a.7z "C:\\Program Files"\n```' in switch.answer
    assert "If you need to compress only files with some extension" in switch.answer
    recover = questions["How can I recover corrupted 7z archive?"]
    assert "\n- When you open archive, you get message" in recover.answer
    assert recover.answer.endswith("[Recover corrupted 7z archive](https://sevenzip.osdn.jp/recover.html)")


# --- plain text ---------------------------------------------------------------------------------

TXT = """\
Acme FAQ (plain text edition)

Q: How do I pay?
A: By card
or bank transfer.

    Both are free.
q: Can I get
   a refund?
a: Yes.
Question: Is there an app?
Answer:
  For Android
  and iOS.
Q2: Numbered?
A2: Fine.
"""


def test_plaintext_blocks(tmp_path: Path) -> None:
    entries = plaintext_parser.parse(write(tmp_path, "faq.txt", TXT))
    assert [(entry.question, entry.answer, entry.line) for entry in entries] == [
        ("How do I pay?", "By card\nor bank transfer.\n\n    Both are free.", 3),
        ("Can I get a refund?", "Yes.", 8),
        ("Is there an app?", "For Android\nand iOS.", 11),
        ("Numbered?", "Fine.", 15),
    ]
    assert entries[0].source_anchor == "line 3"


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("Q: One?\nA: Yes.\nQ: Two?\nQ: Three?\nA: No.\n", 3, "question without an answer"),
        ("Q: One?\nA: Yes.\n\nQ: Two?\n", 4, "question without an answer"),
        ("A: Yes.\n", 1, "answer without a question"),
        ("Q: One?\nA: Yes.\nA: Again.\n", 3, "already has an answer"),
        ("Q: One?\nA:\n\nQ: Two?\nA: Yes.\n", 2, "empty answer"),
        ("Q:\nA: Yes.\n", 1, "empty question"),
    ],
)
def test_plaintext_errors_name_their_line(tmp_path: Path, content: str, line: int, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        plaintext_parser.parse(write(tmp_path, "faq.txt", content))
    assert caught.value.line == line
    assert reason in caught.value.reason


def test_plaintext_without_blocks(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as caught:
        parse_file(write(tmp_path, "notes.txt", "Just some notes.\nNothing else.\n"))
    assert (caught.value.line, caught.value.reason) == (None, "no Q:/A: blocks found")


def test_plaintext_encodings(tmp_path: Path) -> None:
    content = "Q: Où est ma commande ?\r\nA: Expédiée.\r\n"
    for data in (b"\xef\xbb\xbf" + content.encode(), content.encode("utf-16")):
        [entry] = plaintext_parser.parse(write(tmp_path, "faq.txt", data))
        assert (entry.question, entry.answer) == ("Où est ma commande ?", "Expédiée.")


# --- JSON ---------------------------------------------------------------------------------------

RECORDS = [
    {
        "id": "pay",
        "question": "How do I pay?",
        "answer": "By card.",
        "examples": ["Payment?"],
        "tags": "billing",
    },
    {"question": "Refund?", "answer": "Yes.", "lang": "de"},
]


def test_json_list(tmp_path: Path) -> None:
    text = json.dumps(RECORDS, indent=2)
    first, second = jsonl_parser.parse(write(tmp_path, "faqs.json", text))
    assert (first.key, first.alt_questions, first.tags) == ("pay", ("Payment?",), ("billing",))
    assert first.line == 2 and first.source_anchor == "line 2"
    assert second.line == line_of(text, '{\n    "question": "Refund?"')
    assert second.lang == "de"


@pytest.mark.parametrize("key", jsonl_parser.LIST_KEYS)
def test_json_object_with_a_list(tmp_path: Path, key: str) -> None:
    text = json.dumps(
        {"title": "FAQ", "meta": {"faqs": "decoy"} if key != "faqs" else {}, key: RECORDS}, indent=2
    )
    entries = parse_file(write(tmp_path, "faqs.json", text))
    assert [entry.question for entry in entries] == ["How do I pay?", "Refund?"]
    assert entries[1].line == line_of(text, '{\n      "question": "Refund?"')


def test_json_on_one_line(tmp_path: Path) -> None:
    entries = jsonl_parser.parse(write(tmp_path, "faqs.json", json.dumps({"items": RECORDS})))
    assert [entry.line for entry in entries] == [1, 1]


def test_json_bad_item_names_index_and_line(tmp_path: Path) -> None:
    records = [*RECORDS, {"question": "No answer?"}]
    text = json.dumps({"questions": records}, indent=2)
    with pytest.raises(ParseError) as caught:
        jsonl_parser.parse(write(tmp_path, "faqs.json", text))
    assert caught.value.reason == "item 2: missing 'answer'"
    assert caught.value.line == line_of(text, '{\n      "question": "No answer?"')


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[{"question": "A?", "answer": "a"},\n "oops"]', 2, "item 1: expected a JSON object, got a string"),
        ('[\n  {"question": "A?",\n   "answer": }\n]', 3, "invalid JSON"),
        ('{"faq": []}', None, "expected a list of objects"),
        ('{"items": {"question": "A?"}}', None, "'items' must be a list of objects"),
        ("42", 1, "expected a list of objects"),
        ("[]", None, "no questions found"),
    ],
)
def test_json_errors(tmp_path: Path, text: str, line: int | None, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        jsonl_parser.parse(write(tmp_path, "faqs.json", text))
    assert caught.value.line == line
    assert reason in caught.value.reason


def test_jsonl_is_still_one_object_per_line(tmp_path: Path) -> None:
    text = "".join(json.dumps(record) + "\n" for record in RECORDS)
    entries = parse_file(write(tmp_path, "faqs.jsonl", text))
    assert [entry.line for entry in entries] == [1, 2]


# --- DOCX ---------------------------------------------------------------------------------------


def build_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_paragraph("Acme FAQ", style="Title")
    document.add_paragraph("An introduction that is not an answer.")
    document.add_heading("Billing", level=1)
    document.add_heading("How do I pay?", level=2)
    paragraph = document.add_paragraph("By card or ")
    paragraph.add_run("bank transfer").bold = True
    paragraph.add_run(" (see ")
    paragraph.add_run("terms").italic = True
    paragraph.add_run(").")
    document.add_paragraph("Visa", style="List Bullet")
    document.add_paragraph("Debit", style="List Bullet 2")
    document.add_paragraph("Mastercard", style="List Bullet")
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Plan", "Price"), ("Basic", "5 | 6"), ("Pro", "10")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.add_paragraph("")
    document.add_heading("Accounts", level=1)
    question = document.add_paragraph()
    question.add_run("Can I have ").bold = True
    question.add_run("two accounts?").bold = True
    document.add_paragraph("No, one per person.")
    document.add_paragraph().add_run("Note:").bold = True
    document.add_paragraph("Family plans have three.")
    document.add_paragraph("Why is my account locked?")
    document.add_paragraph("Too many attempts.")
    document.add_paragraph("Then wait an hour.")
    document.save(path)
    return path


def test_docx_questions_answers_and_categories(tmp_path: Path) -> None:
    entries = parse_file(build_docx(tmp_path / "faq.docx"))
    assert [(entry.question, entry.tags, entry.source_anchor) for entry in entries] == [
        ("How do I pay?", ("billing",), "paragraph 4"),
        ("Can I have two accounts?", ("accounts",), "paragraph 11"),
        ("Why is my account locked?", ("accounts",), "paragraph 15"),
    ]
    pay, accounts, locked = entries
    assert pay.answer == (
        "By card or **bank transfer** (see *terms*).\n\n"
        "- Visa\n  - Debit\n- Mastercard\n\n"
        "| Plan | Price |\n| --- | --- |\n| Basic | 5 \\| 6 |\n| Pro | 10 |"
    )
    assert accounts.answer == "No, one per person.\n\n**Note:**\n\nFamily plans have three.", "a lead-in"
    assert locked.answer == "Too many attempts.\n\nThen wait an hour."
    assert all(entry.line is None for entry in entries)


def test_docx_question_paragraphs_followed_by_questions_are_not_questions(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Is this a question?")
    document.add_paragraph("Is this one?")
    document.add_paragraph("Yes.")
    path = tmp_path / "faq.docx"
    document.save(path)
    [entry] = docx_parser.parse(path)
    assert (entry.question, entry.answer, entry.source_anchor) == ("Is this one?", "Yes.", "paragraph 2")


def test_docx_without_questions_fails(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Only a statement.")
    path = tmp_path / "faq.docx"
    document.save(path)
    with pytest.raises(ParseError) as caught:
        docx_parser.parse(path)
    assert caught.value.reason == docx_parser.NO_QUESTIONS


def test_docx_corrupt_files(tmp_path: Path) -> None:
    garbage = write(tmp_path, "garbage.docx", b"this is not a zip file")
    no_document = tmp_path / "empty.docx"
    with zipfile.ZipFile(no_document, "w") as archive:
        archive.writestr("hello.txt", "no word/document.xml here")
    for path in (garbage, no_document):
        with pytest.raises(ParseError) as caught:
            parse_file(path)
        assert caught.value.line is None
        assert caught.value.reason.startswith("not a valid .docx file: ")


# --- PDF ----------------------------------------------------------------------------------------


def load_make_samples(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``tests/data/make_samples.py`` (not a package) for the duration of one test."""
    spec = importlib.util.spec_from_file_location("make_samples", DATA / "make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_pdf_samples_are_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = load_make_samples(monkeypatch)
    pages = [samples.page_content(lines, samples.header(n)) for n, lines in enumerate(samples.FAQ_PAGES, 1)]
    assert (DATA / "faq.pdf").read_bytes() == samples.build_pdf(pages), "run tests/data/make_samples.py"
    assert (DATA / "sizes.pdf").read_bytes() == samples.build_pdf(
        [samples.page_content(samples.SIZES_PAGE, [])]
    )


def test_pdf_bold_and_question_lines() -> None:
    entries = parse_file(DATA / "faq.pdf")
    assert [(entry.question, entry.tags, entry.source_anchor) for entry in entries] == [
        ("How do I pay for my subscription?", ("billing",), "page 1"),
        ("Can I get a refund?", ("billing",), "page 1"),
        ("Changing your password", ("accounts",), "page 1"),
        ("Why is my upload slow?", ("accounts",), "page 2"),
        ("Is there a mobile app?", ("accounts",), "page 2"),
    ]
    pay, refund, password, upload, app = entries
    assert pay.answer == (
        "You can pay by credit card or bank transfer. Invoices are sent by e-mail at the start of "
        "each month; see the billing documentation for the details."
    )
    assert refund.answer == "Yes, within 30 days of purchase."
    assert password.answer == (
        "Open Settings, then Security, and choose Change password.\n\n"
        "The new password works at once on every device."
    )
    assert upload.answer == (
        "Uploads run at the speed of your connection. Large files are split into parts that are "
        "sent one after another."
    )
    assert app.answer == "Yes, for Android and iOS.", "the running header and footer are dropped"
    assert all(entry.line is None for entry in entries)


def test_pdf_wrapped_questions_and_bullets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = load_make_samples(monkeypatch)
    line = samples.Line
    lines = [
        line("What happens to my files when I cancel my", "bold", 12),
        line("subscription?", "bold", 12),
        line("They stay for 30 days:", gap=4),
        line("- Downloads keep working."),
        line("- Sharing links stop."),
        line("Example:", "bold", 11, gap=8),  # a bold lead-in, not a question
        line("A cancelled account keeps its files until the end of the month.", gap=4),
        line("Can I come back?", "bold", 12, gap=10),
        line("Yes.", gap=4),
    ]
    path = write(tmp_path, "faq.pdf", samples.build_pdf([samples.page_content(lines, [])]))
    cancel, back = pdf_parser.parse(path)
    assert cancel.question == "What happens to my files when I cancel my subscription?"
    assert cancel.answer == (
        "They stay for 30 days:\n\n- Downloads keep working.\n- Sharing links stop.\n\n"
        "Example: A cancelled account keeps its files until the end of the month."
    )
    assert (back.question, back.answer) == ("Can I come back?", "Yes.")


def test_pdf_larger_type_questions() -> None:
    entries = pdf_parser.parse(DATA / "sizes.pdf")
    assert [(entry.question, entry.answer) for entry in entries] == [
        ("Opening hours", "We are open from 9 to 17, Monday to Friday."),
        ("Delivery times", "Parcels arrive within two working days."),
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("scanned.pdf", "no extractable text (scanned PDF?)"),
        ("encrypted.pdf", "encrypted PDF: it needs a password to be read"),
    ],
)
def test_pdf_without_readable_text(name: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        pdf_parser.parse(DATA / name)
    assert (caught.value.line, caught.value.reason) == (None, reason)


@pytest.mark.parametrize("content", [b"%PDF-1.4\nthis is not really a PDF\n", b"GIF89a garbage"])
def test_pdf_garbage(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_file(write(tmp_path, "broken.pdf", content))
    assert caught.value.reason.startswith("not a readable PDF: ")


# --- language detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("How long does shipping take to Canada?", "en"),
        ("Wie kann ich mein Passwort zurücksetzen?", "de"),
        ("Как мне сбросить пароль от моей учётной записи?", "ru"),
        ("¿Cómo puedo restablecer mi contraseña?", "es"),
        ("ok", None),
        ("", None),
        ("7z.exe a -r c:/a.7z", None),
    ],
)
def test_detect_language(text: str, language: str | None) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize(
    ("tag", "language"),
    [
        ("en", "en"),
        ("pt-br", "pt"),
        ("zh-hans", "zh"),
        ("pt_BR", "pt"),
        (" DE-at ", "de"),
        ("", None),
        (None, None),
    ],
)
def test_base_language(tag: str | None, language: str | None) -> None:
    """Telegram's IETF tags and files' locale names, as detect_language names the language."""
    assert base_language(tag) == language


def test_a_question_without_an_answer_is_skipped_with_a_warning(tmp_path: Path) -> None:
    from ingest.errors import ParseWarning

    path = tmp_path / "scraped.jsonl"
    path.write_text(
        '{"questionText": "Q. Is it safe?", "answerText": "A. Yes."}\n'
        '{"questionText": "How many cases?", "answerText": ""}\n'
        '{"question": "Hours?", "answer": "9-5", "hasAnswer": false}\n'
    )
    warnings: list[ParseWarning] = []
    [entry] = parse_file(path, warnings=warnings)
    assert (entry.question, entry.answer) == ("Is it safe?", "Yes.")
    assert [w.line for w in warnings] == [2, 3]
    assert "question without an answer" in str(warnings[0])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "", "answer": ""}\n')
    with pytest.raises(ParseError):
        parse_file(broken)


# -- a page of headings that are not questions is not a FAQ --------------------------------------


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("How do I reset my password?", True),
        ("How to move a license to a new computer", True),
        ("Can I pay by invoice", True),
        ("**Why is the sky blue?**", True),
        ("Wie kann ich bezahlen?", True),
        ("如何重置密码？", True),
        ("Πώς αλλάζω τον κωδικό μου;", True),
        ("Installation", False),
        ("Scraped data", False),
        ("Doing things", False),
    ],
)
def test_reads_as_question(heading: str, expected: bool) -> None:
    assert reads_as_question(heading) is expected


@pytest.mark.parametrize(
    ("name", "page"),
    [
        ("readme.md", "# Tool\n\n## Installation\n\nRun make.\n\n## Usage\n\nRun it.\n"),
        ("manual.html", "<h2>Installation</h2><p>Run make.</p><h2>Usage</h2><p>Run it.</p>"),
    ],
)
def test_a_page_whose_headings_hold_no_question_has_no_entries(tmp_path: Path, name: str, page: str) -> None:
    with pytest.raises(
        NoEntriesError, match="no heading reads as a question \\(the first: 'Installation'\\)"
    ):
        parse_file(write(tmp_path, name, page))


def test_one_question_heading_makes_a_faq_page_of_all_its_sections(tmp_path: Path) -> None:
    page = "# FAQ\n\n## Installation\n\nRun make.\n\n## Why does it fail?\n\nCheck the logs.\n"
    assert [e.question for e in parse_file(write(tmp_path, "faq.md", page))] == [
        "Installation",
        "Why does it fail?",
    ]
