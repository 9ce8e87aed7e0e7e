"""Write the small sample PDFs the parser tests read; run it again to regenerate them.

    python tests/data/make_samples.py

The PDFs are written by hand (PDF 1.4 syntax, the standard Type1 fonts Helvetica and
Helvetica-Bold, no embedded fonts), so they are a few KB and byte-for-byte reproducible:

    faq.pdf        two pages: a title, category headings, bold questions, plain questions
                   ending in "?", a hyphenated line break, and a header and a footer that
                   repeat on every page
    sizes.pdf      one page whose questions are set in a larger regular font, without "?"
    scanned.pdf    one page with a drawing and no text at all, like a scan
    encrypted.pdf  faq.pdf encrypted with the user password "secret" (RC4, written with pypdf)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE_WIDTH, PAGE_HEIGHT = 595, 842
LEFT_MARGIN, TOP = 72, 770
FONTS = {"regular": "F1", "bold": "F2"}


@dataclass(frozen=True, slots=True)
class Line:
    """One line of text: its font, size, and the extra space above it (in points)."""

    text: str
    font: str = "regular"
    size: float = 11
    gap: float = 0


def header(page: int) -> list[tuple[float, Line]]:
    """The running header and footer, at fixed positions on every page."""
    return [
        (810, Line("Acme Cloud - customer documentation", size=9)),
        (40, Line(f"Acme Cloud FAQ - page {page} of 2", size=9)),
    ]


FAQ_PAGES: list[list[Line]] = [
    [
        Line("Acme Cloud FAQ", "bold", 18),
        Line("Billing", "bold", 14, gap=14),
        Line("How do I pay for my subscription?", "bold", 12, gap=8),
        Line("You can pay by credit card or bank transfer. Invoices are sent by e-mail", gap=4),
        Line("at the start of each month; see the billing docu-"),
        Line("mentation for the details."),
        Line("Can I get a refund?", "bold", 12, gap=10),
        Line("Yes, within 30 days of purchase.", gap=4),
        Line("Accounts", "bold", 14, gap=14),
        Line("Changing your password", "bold", 12, gap=8),
        Line("Open Settings, then Security, and choose Change password.", gap=4),
        Line("The new password works at once on every device.", gap=8),
    ],
    [
        Line("Why is my upload slow?"),
        Line("Uploads run at the speed of your connection. Large files are split", gap=4),
        Line("into parts that are sent one after another."),
        Line("Is there a mobile app?", gap=10),
        Line("Yes, for Android and iOS.", gap=4),
    ],
]

SIZES_PAGE: list[Line] = [
    Line("Opening hours", size=15),
    Line("We are open from 9 to 17, Monday to Friday.", size=10, gap=4),
    Line("Delivery times", size=15, gap=10),
    Line("Parcels arrive within two working days.", size=10, gap=4),
]


def pdf_string(text: str) -> str:
    """A PDF literal string, escaped."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({escaped})"


def text_op(x: float, y: float, line: Line) -> str:
    return f"BT /{FONTS[line.font]} {line.size:g} Tf {x:g} {y:g} Td {pdf_string(line.text)} Tj ET"


def page_content(lines: list[Line], fixed: list[tuple[float, Line]]) -> bytes:
    """The content stream of one page: flowing lines from the top, then the fixed ones."""
    ops: list[str] = []
    y = TOP
    for line in lines:
        y -= line.gap
        ops.append(text_op(LEFT_MARGIN, y, line))
        y -= line.size * 1.25
    ops += [text_op(LEFT_MARGIN, y_fixed, line) for y_fixed, line in fixed]
    return "\n".join(ops).encode("latin-1")


def build_pdf(contents: list[bytes]) -> bytes:
    """A complete PDF with one page per content stream and both Helvetica fonts."""
    page_count = len(contents)
    first_page = 5
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(page_count))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {page_count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
    ]
    for index, content in enumerate(contents):
        page_number = first_page + 2 * index
        objects.append(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
                f"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {page_number + 1} 0 R >>"
            ).encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    return serialise(objects)


def serialise(objects: list[bytes]) -> bytes:
    """Number the objects from 1 and write the header, bodies, xref table and trailer."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def encrypt(data: bytes, password: str) -> bytes:
    """The same document encrypted with a user password (RC4-128, which needs no extra package)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password=f"{password}-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def main() -> None:
    faq = build_pdf([page_content(lines, header(n)) for n, lines in enumerate(FAQ_PAGES, start=1)])
    samples = {
        "faq.pdf": faq,
        "sizes.pdf": build_pdf([page_content(SIZES_PAGE, [])]),
        "scanned.pdf": build_pdf([b"0.5 g 72 400 450 300 re f"]),
        "encrypted.pdf": encrypt(faq, "secret"),
    }
    for name, data in samples.items():
        (HERE / name).write_bytes(data)
        print(f"wrote {HERE / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
