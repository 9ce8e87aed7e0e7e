"""Property-based fuzzing of every ingest parser and of the pipeline (issue #6, "Fuzzing").

What is fed in: random bytes under every known extension, documents generated from each
format's own syntax (headings, fences, quotes, tags, JSON punctuation ...) in several text
encodings, and mutations (bit flips, cuts, repeats, syntax tokens spliced in) of real
documents: ``examples/faq.md``, the PDFs in ``tests/data``, a DOCX built here (also with its
XML parts mutated inside the ZIP) and, when ``../shared/data/docs`` is present, the shared FAQs.

The properties:

- a parser returns entries (each with a normalised one-line question, a non-empty answer and
  its source) or raises an ``IngestError`` whose message names the file, fits on one line and
  stays short; never any other exception;
- through ``ingest_paths``, a file either ingests whole (every current version has its
  vectors) or fails with a reason and writes nothing: the previous state of the same file (its
  articles, versions, vectors and the KB revision) is exactly as it was.

Examples are derandomized (the same on every run, so CI is reproducible) and few, so the file
runs in seconds; ``HELPDESK_FUZZ_SCALE=20`` multiplies them for a deeper local run. The
pathological inputs that once took quadratic time (or hit the recursion limit) are pinned by
``test_pathological_inputs_finish_quickly``.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from pypdf import PdfReader, PdfWriter
from sqlalchemy import func, select

from bot.config import Settings
from bot.runtime import Services, open_services
from ingest.entry import Entry
from ingest.errors import MAX_REASON, IngestError, ParseError, ParseWarning
from ingest.parsers import SUPPORTED_SUFFIXES, normalize_question, parse_file
from ingest.parsers import docx as docx_parser
from ingest.pipeline import ingest_paths
from kb.models import Article, ArticleVersion, Embedding, KbState
from tests.conftest import EXAMPLE_FAQ, ROOT, StubEncoder, shared_path

SCALE = max(1, int(os.environ.get("HELPDESK_FUZZ_SCALE", "1")))
DATA = ROOT / "tests" / "data"


def fuzz_settings(examples: int, *, shared_fixture: bool = False) -> settings:
    """Reproducible (derandomized, no example database) and unhurried (no deadline).

    ``shared_fixture``: the examples share a function-scoped fixture on purpose (one database
    whose state each example compares before and after).
    """
    checks = [HealthCheck.too_slow, HealthCheck.data_too_large]
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[*checks, HealthCheck.function_scoped_fixture] if shared_fixture else checks,
    )


# --- what a parser may do ------------------------------------------------------------------------


def parse_checked(path: Path) -> list[Entry] | None:
    """Parse ``path``; check what came out (entries or a clear ingest error); ``None`` for an error.

    Any exception that is not an ``IngestError`` propagates and fails the test.
    """
    warnings: list[ParseWarning] = []
    try:
        entries = parse_file(path, warnings=warnings)
    except IngestError as exc:
        check_clear_error(exc, path)
        return None
    assert entries, "a parser returns entries or raises NoEntriesError"
    for entry in entries:
        assert entry.question and entry.question == normalize_question(entry.question), entry
        assert entry.answer.strip(), f"empty answer for {entry.question!r}"
        assert entry.source_file == str(path)
        assert entry.line is None or entry.line >= 1
    for warning in warnings:
        check_clear_message(str(warning), path)
    return entries


def check_clear_error(exc: IngestError, path: Path) -> None:
    check_clear_message(str(exc), path)
    if isinstance(exc, ParseError):
        assert exc.reason.strip(), "a ParseError says why"
        if exc.line is not None:
            data = path.read_bytes()
            assert 1 <= exc.line <= data.count(b"\n") + data.count(b"\r") + 1, exc


def check_clear_message(message: str, path: Path) -> None:
    """``file[:line]: reason`` on one line, short enough for a terminal or a Telegram message."""
    assert message.startswith(str(path)), message
    assert "\n" not in message and "\r" not in message, message
    assert len(message) <= len(str(path)) + 24 + MAX_REASON, message
    assert message[len(str(path)) :].lstrip(":0123456789 "), f"no reason in {message!r}"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A folder for the examples' files (hypothesis runs many examples per test function)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-parsers-") as folder:
        yield Path(folder)


def write(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(data)
    return path


# --- seeds: real documents ------------------------------------------------------------------------

SAMPLES: dict[str, str] = {
    ".csv": (
        "question,answer,alt_questions,key,lang,tags\n"
        'How do I pay?,"By card,\nor by transfer.",Payment options|Can I pay by card,pay,en,"bill,cards"\n'
        "Where is my invoice?,Under Billing.,,,,\n"
    ),
    ".tsv": "Question\tAnswer\tTags\nHow do I log in?\tWith your email.\taccount\nWhy?\tBecause.\t\n",
    ".jsonl": (
        '{"question": "How do I pay?", "answer": "By card.", "id": 7, "examples": ["Payment?"]}\n'
        '{"questionText": "Q. Is it safe?", "answerText": "A. Yes.", "tags": "a|b", "lang": "en"}\n'
        '{"question": "Opening hours?", "answer": "", "hasAnswer": false}\n'
    ),
    ".json": (
        '{"faqs": [\n  {"question": "How do I pay?", "answer": "By card.", "key": "pay",\n'
        '   "alt_questions": "Payment|Cards", "tags": ["billing"]},\n'
        '  {"q": "Where are you?", "a": "In Prague.", "language": "en"}\n]}\n'
    ),
    ".html": (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>FAQ</title></head><body>\n'
        "<nav><a href='/'>Home</a></nav><h1>Help</h1>\n<h2>Billing</h2>\n"
        '<h3 id="pay">How do I pay?</h3><p>By <b>card</b> or <a href="https://e.com/x">transfer</a>.\n'
        "<ul><li>Visa<li>Mastercard</ul><pre><code class='language-sh'>pay --now</code></pre>\n"
        "<dl><dt>Refunds?<dd>Within 30 days.<dt>Invoices?<dt>Bills?<dd><p>Under Billing.</dl>\n"
        "<details><summary>Accounts</summary><details><summary>Two accounts?</summary>No.</details>"
        "</details>\n<table><tr><th>Plan<th>Price<tr><td>Pro<td>10</table>\n"
        '<script type="application/ld+json">{"@context": "https://schema.org", "@graph": [{"@type":'
        ' "FAQPage", "mainEntity": [{"@type": "Question", "name": "Is it safe?", "acceptedAnswer":'
        ' {"@type": "Answer", "text": "<p>Yes, <em>very</em>.</p>"}}]}]}</script>\n'
        "<footer>(c) Acme</footer></body></html>\n"
    ),
    ".txt": (
        "Acme FAQ\n\nQ: How do I pay?\nA: By card.\n   - Visa\n   - Mastercard\n\n"
        "Question 2: Where is my invoice?\nAnswer: Under Billing.\n"
    ),
}
SAMPLES[".htm"] = SAMPLES[".html"]
SAMPLES[".md"] = EXAMPLE_FAQ.read_text(encoding="utf-8")
SAMPLES[".markdown"] = (
    "---\ntitle: Acme\nlang: en\ntags: [billing, help]\n---\n# Acme FAQ\n\n## Billing\n\n"
    "### How do I pay? ###\n\nBy card, see [terms][t].\n\n```sh\n# not a heading\n```\n\n"
    "<!-- a comment\n# hidden -->\n\n### Refunds?\n{:toc}\nWithin 30 days.\n\n[t]: https://e.com/terms\n"
)

SHARED_DOCS = {
    "homebrew.md": ("homebrew-faq", "docs", "FAQ.md"),
    "rclone.md": ("rclone-faq", "docs", "content", "faq.md"),
    "electron.md": ("electron-faq", "docs", "faq.md"),
    "7zip.htm": ("7zip-faq", "docs", "chm", "general", "faq.htm"),
    "covid.csv": ("csv-faq", "faq_db.csv"),
    "who.jsonl": ("jhu-covid-faq-jsonl", "data", "scraping", "schema_v0.3", "WhoMyth_v0.3.jsonl"),
}


def shared_seed(name: str) -> tuple[str, bytes]:
    """A shared document, or a skip (with the reason) when ``../shared/data`` is absent."""
    return Path(name).suffix, shared_path("docs", *SHARED_DOCS[name]).read_bytes()


@functools.cache
def docx_sample() -> bytes:
    """A small Word FAQ: title, heading categories, bold and "?" questions, a list, a table, a link."""
    document = docx.Document()
    document.add_paragraph("Acme FAQ", style="Title")
    document.add_heading("Billing", level=1)
    document.add_heading("How do I pay?", level=2)
    paragraph = document.add_paragraph("By card or ")
    paragraph.add_run("bank transfer").bold = True
    paragraph.add_run(" (see ")
    paragraph.add_run("terms").italic = True
    paragraph.add_run(").")
    document.add_paragraph("Visa", style="List Bullet")
    document.add_paragraph("Debit", style="List Bullet 2")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Plan", "Price"), ("Pro", "10")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    question = document.add_paragraph()
    question.add_run("Can I have two accounts?").bold = True
    document.add_paragraph("No, one per person.")
    document.add_paragraph("Why is my account locked?")
    document.add_paragraph("Too many attempts.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def seed(suffix: str) -> bytes:
    """A valid document of the type, from the repository (no shared data needed)."""
    if suffix == ".docx":
        return docx_sample()
    if suffix == ".pdf":
        return (DATA / "faq.pdf").read_bytes()
    return SAMPLES[suffix].encode("utf-8")


# --- strategies ----------------------------------------------------------------------------------

# fmt: off
TOKENS: dict[str, list[str]] = {
    "markdown": [
        "# ", "## ", "###### ", "####### ", " ##", "\n", "\n\n", "---\n", "...\n", "title: ", "lang: ",
        "tags: [a, b]\n", "tags:\n- x\n", "- ", "* ", "```", "~~~", "````", "<!--", "-->", "[t]: ",
        "[t]", "[t][]", "[x](", ")", "![i](", "`", "{:toc}", "[TOC]", '<a name="x"></a>', "?", " ",
        "\t", "\r", "\r\n", "#", "[", "]", "\u2028", "\ufeff",
    ],
    "csv": [
        ",", ";", "\t", '"', '""', "\n", "\r\n", "\r", "question", "answer", "alt_questions", "key",
        "lang", "tags", "Alt Questions", "|", " ", "\x00", "How?", "Yes.",
    ],
    "json": [
        "{", "}", "[", "]", ",", ":", '"', '"question"', '"answer"', '"q"', '"a"', '"questionText"',
        '"answerText"', '"faqs"', '"items"', '"key"', '"id"', '"tags"', '"examples"', '"lang"',
        '"hasAnswer"', "false", "true", "null", "1", "-0", "1e999", '"x"', '""', '"Q. y"', "\n", " ",
        "\\u0000", "\\ud800", "\u2028", "NaN",
    ],
    "html": [
        "<h1>", "</h1>", "<h2>", "</h2>", "<h3 id='a'>", "<p>", "</p>", "<br>", "<dl>", "</dl>", "<dt>",
        "<dd>", "<details>", "</details>", "<summary>", "</summary>", "<ul>", "<ol start='3'>", "<li>",
        "</ul>", "<table>", "<tr>", "<td>", "<th>", "</table>", "<pre>", "</pre>", "<code>", "<b>",
        "<i>", "<a href='https://e.com'>", "<a name='n'>", "</a>", "<nav>", "<header>", "<footer>",
        "<form>", "<script>", "</script>", '<script type="application/ld+json">', '{"@type": "FAQPage",',
        '"mainEntity": [', '{"@type": "Question", "name": "N?", "acceptedAnswer": {"text": "T"}}', "]}",
        "<!--", "-->", "<![CDATA[", "]]>", "<meta charset='cp1252'>", "<meta charset='utf-16'>",
        "<html lang='de-CH'>", "&amp;", "&#0;", "&#xD800;", "?", "\n", "\r", " ", "<", ">", "</", "/>",
    ],
    "text": [
        "Q:", "A:", "q1:", "Question 2:", "Answer:", "QUESTION :", "a :", "\n", "\r\n", "\r", " ", "\t",
        "    ", "?", "How?", "Yes.", "\ufeff", "\x0c",
    ],
}
FORMAT_OF = {
    ".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".tsv": "csv", ".json": "json",
    ".jsonl": "json", ".html": "html", ".htm": "html", ".txt": "text",
}
# PDF syntax, spaced so that it lands as whole tokens: operators, operands, names, references
# (an indirect reference inside a content stream once tripped an assert in pypdf), filters
# (an unknown or abbreviated one), fonts and numbers out of range.
PDF_TOKENS = [
    b" 2 0 R ", b" 9 0 R ", b" /Filter /Fl ", b" /Filter /FlateDecode ", b" /Filter /LZWDecode ",
    b" /Filter /Nonsense ", b" /Encrypt 9 0 R ", b" (x) Tj ", b" [(a) -250 (b)] TJ ", b" /F2 12 Tf ",
    b" /F1 1e400 Tf ", b" /F9 0 Tf ", b" 0 0 0 0 0 0 cm ", b" 1 0 0 -1 0 0 Tm ", b" q ", b" Q ",
    b" BT ", b" ET ", b" T* ", b" 5 TL ", b" <00ff> Tj ", b" << /Type /Font /Subtype /Type0 >> ",
    b" /FontDescriptor 2 0 R ", b" /Flags 262144 ", b" /FontWeight 900 ", b" /Length 0 ", b" /Length 99999 ",
    b" /Count -1 ", b" /Kids [ 1 0 R ] ", b" /MediaBox [0 0 0 0] ", b" null ", b" [ ", b" ] ", b" << ",
    b" >> ", b" ( ", b" ) ", b" obj ", b" endobj ", b" stream\n", b"\nendstream ", b" xref ", b" trailer ",
    b"%%EOF", b" -99999999999999999999 ", b"\x00", b"\xff",
]
# Bytes that matter in a ZIP package and in WordprocessingML.
DOCX_TOKENS = [
    b"\x00", b"\xff", b"PK\x03\x04", b"PK\x01\x02", b"<w:p>", b"</w:p>", b"<w:b/>", b'w:val="',
    b"<w:numPr>", b'<w:ilvl w:val="x"/>', b"</w:numPr>", b'<w:hyperlink r:id="rId99">',
    b'<w:pStyle w:val="Heading1"/>', b"<w:tbl>", b'<w:gridSpan w:val="-3"/>',
]
# fmt: on
TEXT_SUFFIXES = sorted(FORMAT_OF)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-32", "cp1252", "latin-1", "shift_jis"]


@st.composite
def generated(draw: st.DrawFn, suffix: str) -> bytes:
    """A document built from the format's own syntax and arbitrary text, in some encoding."""
    pieces = st.one_of(st.sampled_from(TOKENS[FORMAT_OF[suffix]]), st.text(max_size=12))
    text = "".join(draw(st.lists(pieces, max_size=80)))
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


@st.composite
def mutated(draw: st.DrawFn, data: bytes, tokens: list[bytes]) -> bytes:
    """``data`` after a few random edits: flips, cuts, repeats, tokens or random bytes spliced in."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(buffer)))
        kind = draw(st.sampled_from(["token", "token", "flip", "cut", "truncate", "repeat", "bytes"]))
        if kind == "flip" and at < len(buffer):
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del buffer[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "repeat":
            start = draw(st.integers(0, len(buffer)))
            buffer[at:at] = buffer[start : start + draw(st.integers(1, 200))]
        elif kind == "token":
            buffer[at:at] = draw(st.sampled_from(tokens))
        else:
            buffer[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(buffer)


def tokens_for(suffix: str) -> list[bytes]:
    if suffix in FORMAT_OF:
        return [token.encode("utf-8") for token in TOKENS[FORMAT_OF[suffix]]]
    return PDF_TOKENS if suffix == ".pdf" else DOCX_TOKENS


@st.composite
def mutated_xml(draw: st.DrawFn, part: bytes) -> bytes:
    """An XML part that still parses, with an element or attribute gone, renamed or given junk.

    Well-formed but wrong: what python-docx's element classes meet in a damaged or foreign file.
    """
    root = etree.fromstring(part)
    elements = list(root.iter())
    for _ in range(draw(st.integers(1, 3))):
        element = draw(st.sampled_from(elements))
        kind = draw(st.sampled_from(["drop", "unqualify", "attribute", "junk", "duplicate"]))
        parent = element.getparent()
        if kind == "drop" and parent is not None:
            parent.remove(element)
        elif kind == "unqualify" and isinstance(element.tag, str):
            element.tag = etree.QName(element).localname  # the element loses its namespace
        elif kind == "attribute" and element.attrib:
            del element.attrib[draw(st.sampled_from(sorted(element.attrib)))]
        elif kind == "junk" and element.attrib:
            name = draw(st.sampled_from(sorted(element.attrib)))
            element.attrib[name] = draw(st.sampled_from(["", "-1", "x", "99999999999", "rId999", "\u00e9"]))
        elif kind == "duplicate" and parent is not None:
            parent.append(copy.deepcopy(element))
        elements = list(root.iter())
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)


@st.composite
def mutated_docx(draw: st.DrawFn) -> bytes:
    """The DOCX sample with one part mutated inside an intact ZIP (as XML or as bytes), maybe one
    part left out."""
    source = zipfile.ZipFile(io.BytesIO(docx_sample()))
    names = sorted(source.namelist())
    target = draw(st.sampled_from([name for name in names if name.endswith((".xml", ".rels"))]))
    dropped = draw(st.sampled_from([None, None, None, *names]))
    as_xml = draw(st.booleans())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name in names:
            part = source.read(name)
            if name == target:
                part = draw(mutated_xml(part) if as_xml else mutated(part, DOCX_TOKENS))
            if name != dropped:
                package.writestr(name, part)
    return buffer.getvalue()


@functools.cache
def compressed_pdf() -> bytes:
    """``faq.pdf`` with its page contents Flate-compressed (the hand-made samples are not)."""
    writer = PdfWriter(clone_from=PdfReader(DATA / "faq.pdf"))
    for page in writer.pages:
        page.compress_content_streams()
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


# --- parsers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
@fuzz_settings(25)
@given(data=st.binary(max_size=3000))
def test_random_bytes(scratch: Path, suffix: str, data: bytes) -> None:
    parse_checked(write(scratch, suffix, data))


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
@fuzz_settings(40)
@given(data=st.data())
def test_documents_generated_from_the_format_syntax(scratch: Path, suffix: str, data: st.DataObject) -> None:
    parse_checked(write(scratch, suffix, data.draw(generated(suffix))))


@pytest.mark.parametrize("suffix", sorted(SUPPORTED_SUFFIXES))
@fuzz_settings(30)
@given(data=st.data())
def test_mutated_sample_documents(scratch: Path, suffix: str, data: st.DataObject) -> None:
    original = seed(suffix)
    assert parse_checked(write(scratch, suffix, original)), "the unmutated sample parses"
    parse_checked(write(scratch, suffix, data.draw(mutated(original, tokens_for(suffix)))))


@fuzz_settings(40)
@given(data=mutated_docx())
def test_docx_with_mutated_xml_parts(scratch: Path, data: bytes) -> None:
    parse_checked(write(scratch, ".docx", data))


@pytest.mark.parametrize("pdf", ["faq.pdf", "compressed", "sizes.pdf", "scanned.pdf", "encrypted.pdf"])
@fuzz_settings(25)
@given(data=st.data())
def test_mutated_pdfs(scratch: Path, pdf: str, data: st.DataObject) -> None:
    original = compressed_pdf() if pdf == "compressed" else (DATA / pdf).read_bytes()
    parse_checked(write(scratch, ".pdf", data.draw(mutated(original, PDF_TOKENS))))


@pytest.mark.parametrize("name", sorted(SHARED_DOCS))
@fuzz_settings(20)
@given(data=st.data())
def test_mutated_shared_documents(scratch: Path, name: str, data: st.DataObject) -> None:
    suffix, original = shared_seed(name)
    assert parse_checked(write(scratch, suffix, original)), f"{name} parses unmutated"
    parse_checked(write(scratch, suffix, data.draw(mutated(original, tokens_for(suffix)))))


PATHOLOGICAL: dict[str, bytes] = {
    # Each took seconds to hours (quadratic regular expressions or tree walks) or raised
    # RecursionError before the fixes; at this size they must take a blink.
    "heading-spaces.md": b"# a" + b" " * 200_000 + b"b\n\ntext\n",
    "closing-hashes.md": b"# a" + b" " * 200_000 + b"x\n\nbody\n",
    "heading-brackets.md": b"# " + b"[a](" * 50_000 + b"\n\nanswer\n",
    "front-matter.md": b"---\ntitle: a" + b" " * 200_000 + b"b\n---\n# q\n\nx\n",
    "marker-spaces.txt": b"Q" + b" " * 200_000 + b"x\nA: b\n",
    "deep-divs.html": b"<div>" * 50_000 + b"<h2>q</h2><p>a</p>",
    "deep-bold.html": b"<h2>q</h2>" + b"<b>a" * 50_000,
    "deep-lists.html": b"<h2>q</h2>" + b"<ul><li>" * 20_000 + b"a",
    "deep-json-ld.html": b'<script type="application/ld+json">' + b"[" * 100_000 + b"</script><h2>q</h2>a",
    "deep.json": b"[" * 100_000 + b"]" * 100_000,
    "deep.jsonl": b'{"question": "q", "answer": ' + b"[" * 100_000 + b"\n",
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_inputs_finish_quickly(scratch: Path, name: str) -> None:
    path = write(scratch, Path(name).suffix, PATHOLOGICAL[name])
    started = time.perf_counter()
    parse_checked(path)
    assert time.perf_counter() - started < 5.0, "linear work, even on a loaded machine"


def test_html_nesting_limit_names_the_line(scratch: Path) -> None:
    path = write(scratch, ".html", b"<h2>q</h2>\n<p>a</p>\n" + b"<div>\n" * 300)
    with pytest.raises(ParseError) as caught:
        parse_file(path)
    assert caught.value.line == 2 + 257 and "nested too deeply" in caught.value.reason


def test_a_docx_bomb_is_refused_before_it_is_unpacked(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docx_parser, "MAX_UNPACKED_MB", 2)  # a 256 MB bomb would cost seconds to build
    source = zipfile.ZipFile(io.BytesIO(docx_sample()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name in source.namelist():
            package.writestr(name, source.read(name))
        package.writestr("word/media/zeros.bin", b"\0" * (3 * 1024 * 1024))
    path = write(scratch, ".docx", buffer.getvalue())
    assert path.stat().st_size < 100 * 1024
    with pytest.raises(ParseError, match=r"would unpack to \d MB; the limit is 2 MB"):
        parse_file(path)


def test_reasons_stay_on_one_short_line(scratch: Path) -> None:
    header = '"' + "a\nb " * 5_000 + '",x\n'
    path = write(scratch, ".csv", header.encode())
    with pytest.raises(ParseError) as caught:
        parse_file(path)
    assert caught.value.reason.startswith("missing column 'question' (found: a b a b")
    assert len(caught.value.reason) <= MAX_REASON and caught.value.reason.endswith("…")


# --- the pipeline: whole or nothing --------------------------------------------------------------


@pytest.fixture
async def stub_services(settings: Settings) -> AsyncIterator[Services]:
    """Services on the test's throwaway database with the stub encoder (the model is beside the point)."""
    async with open_services(settings, encoder=StubEncoder()) as opened:
        yield opened


async def snapshot(services: Services) -> dict[str, object]:
    """Everything an ingest writes: counts, the revision, and each article's current state."""
    async with services.sessions() as session:
        counts = {
            model.__tablename__: await session.scalar(select(func.count()).select_from(model))
            for model in (Article, ArticleVersion, Embedding)
        }
        current = (
            await session.execute(
                select(Article.key, Article.status, ArticleVersion.language, ArticleVersion.number)
                .join(ArticleVersion, ArticleVersion.article_id == Article.id)
                .where(ArticleVersion.is_current)
                .order_by(Article.key, ArticleVersion.language)
            )
        ).all()
        return {**counts, "revision": await session.scalar(select(KbState.revision)), "current": current}


async def versions_without_vectors(services: Services) -> int:
    async with services.sessions() as session:
        with_vectors = select(Embedding.version_id)
        return await session.scalar(
            select(func.count())
            .select_from(ArticleVersion)
            .where(ArticleVersion.is_current, ArticleVersion.id.not_in(with_vectors))
        )


@st.composite
def pipeline_documents(draw: st.DrawFn) -> tuple[str, bytes]:
    """A file type and a fuzzed document of that type: random bytes, generated or mutated."""
    suffix = draw(st.sampled_from([".md", ".csv", ".json", ".jsonl", ".html", ".txt", ".docx", ".pdf"]))
    how = draw(st.sampled_from(["bytes", "generated", "mutated", "mutated"]))
    if how == "bytes":
        return suffix, draw(st.binary(max_size=500))
    if how == "generated" and suffix in FORMAT_OF:
        return suffix, draw(generated(suffix))
    return suffix, draw(mutated(seed(suffix), tokens_for(suffix)))


@fuzz_settings(30, shared_fixture=True)
@given(document=pipeline_documents())
async def test_a_fuzzed_file_ingests_whole_or_writes_nothing(
    stub_services: Services, tmp_path: Path, document: tuple[str, bytes]
) -> None:
    """The file first holds a valid FAQ (so it has a previous state to keep), then the fuzzed one."""
    suffix, data = document
    path = tmp_path / f"faq{suffix}"
    path.write_bytes(seed(suffix))
    first = await ingest_paths([path], sessions=stub_services.sessions, encoder=stub_services.encoder)
    assert not first.failed, first.failed
    before = await snapshot(stub_services)

    path.write_bytes(data)
    report = await ingest_paths([path], sessions=stub_services.sessions, encoder=stub_services.encoder)
    [result] = report.files
    if result.failed:
        assert result.error and "\n" not in result.error and len(result.error) <= MAX_REASON
        assert (result.added, result.updated, result.retired) == (0, 0, 0)
        assert await snapshot(stub_services) == before, "a failed file writes nothing and keeps its state"
    else:
        assert await versions_without_vectors(stub_services) == 0, "every current version has vectors"
        after = await snapshot(stub_services)
        assert after["article_versions"] == before["article_versions"] + result.added + result.updated


async def test_the_pipeline_reports_a_damaged_file_among_good_ones(
    stub_services: Services, tmp_path: Path
) -> None:
    """A damaged DOCX and PDF (which used to escape the parsers) fail alone; the good file goes in."""
    good = tmp_path / "good.md"
    good.write_text("## How do I pay?\n\nBy card.\n")
    docx_file = tmp_path / "broken.docx"
    docx_file.write_bytes(damaged_docx())
    pdf_file = tmp_path / "broken.pdf"
    # a content stream declared in pypdf 7's removed abbreviation: DeprecationError, not its own
    pdf_file.write_bytes((DATA / "faq.pdf").read_bytes().replace(b"/Length", b"/Filter /Fl /Length", 1))
    report = await ingest_paths(
        [docx_file, good, pdf_file], sessions=stub_services.sessions, encoder=stub_services.encoder
    )
    assert report.added == 1
    failures = {Path(f.path).name: f.error for f in report.failed}
    assert set(failures) == {"broken.docx", "broken.pdf"}
    assert failures["broken.docx"].startswith("not a valid .docx file: damaged document (AttributeError")
    assert "/Fl" in failures["broken.pdf"]


def damaged_docx() -> bytes:
    """The sample with a relationships part that is well-formed XML of the wrong shape."""
    source = zipfile.ZipFile(io.BytesIO(docx_sample()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for name in source.namelist():
            part = source.read(name)
            if name == "_rels/.rels":
                part = b'<?xml version="1.0"?><Relationships><x/></Relationships>'
            package.writestr(name, part)
    return buffer.getvalue()
