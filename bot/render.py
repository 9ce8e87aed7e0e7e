"""Knowledge-base answers (light Markdown) -> Telegram HTML, split under the 4096 limit.

Supported: paragraphs, headings (bold), ``*``/``-``/``+`` lists (bullets), numbered lists,
fenced and indented code blocks (``<pre>``), tables (``<pre>``), inline code, ``**bold**``,
``*italic*``/``_italic_`` and ``[links](https://...)``; relative links keep their text only.
Everything else is escaped, so KB content can never break the parse mode.
"""

from __future__ import annotations

import html
import re

LIMIT = 4096

_FENCE = re.compile(r"^\s*(```(?!.*`)|~~~)")  # a backtick fence's info string has no backtick
_TAG = re.compile(r"<[^>]*>")
_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>[^)\s]+)(?:\s+\"[^\"]*\")?\)"
    r"|\*\*(?P<bold>[^*\n]+)\*\*"
    r"|(?<![\w_])__(?P<bold2>[^_\n]+)__(?![\w_])"
    r"|(?<![\w*])\*(?P<em>[^\W_](?:[^*\n]*[^\s*])?)\*(?![\w*])"
    r"|(?<![\w_])_(?P<em2>[^\W_](?:[^_\n]*[^\s_])?)_(?![\w_])"
)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[*+-]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+")
_ATTRIBUTE = re.compile(r"^\s*\{:.*\}\s*$")


def inline(text: str) -> str:
    """Escape a line of text, turning inline Markdown into Telegram HTML."""
    parts: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        parts.append(html.escape(text[position : match.start()], quote=False))
        position = match.end()
        if match["code"] is not None:
            parts.append(f"<code>{html.escape(match['code'], quote=False)}</code>")
        elif match["label"] is not None:
            label, url = inline(match["label"]), match["url"]
            if url.startswith(("http://", "https://", "tg://", "mailto:")):
                parts.append(f'<a href="{html.escape(url, quote=True)}">{label}</a>')
            else:
                parts.append(label)
        elif match["bold"] is not None or match["bold2"] is not None:
            parts.append(f"<b>{inline(match['bold'] or match['bold2'])}</b>")
        else:
            parts.append(f"<i>{inline(match['em'] or match['em2'])}</i>")
    parts.append(html.escape(text[position:], quote=False))
    return "".join(parts)


def _blocks(markdown: str) -> list[tuple[str, str]]:
    """Split into ("code" | "text", raw) blocks."""
    blocks: list[tuple[str, str]] = []
    lines = markdown.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fence = _FENCE.match(line).group(1)  # type: ignore[union-attr]
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            blocks.append(("code", "\n".join(body)))
            i += 1
        elif line.startswith(("    ", "\t")) and line.strip() and (not blocks or _ends_paragraph(lines, i)):
            body = []
            while i < len(lines) and (lines[i].startswith(("    ", "\t")) or not lines[i].strip()):
                body.append(lines[i][4:] if lines[i].startswith("    ") else lines[i].lstrip("\t"))
                i += 1
            blocks.append(("code", "\n".join(body).strip("\n")))
        elif line.lstrip().startswith("|"):
            body = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                body.append(lines[i].strip())
                i += 1
            blocks.append(("code", "\n".join(body)))
        else:
            body = []
            while i < len(lines) and lines[i].strip() and not _FENCE.match(lines[i]):
                if lines[i].lstrip().startswith("|"):
                    break
                body.append(lines[i])
                i += 1
            if body:
                blocks.append(("text", "\n".join(body)))
            else:
                i += 1
    return blocks


def _ends_paragraph(lines: list[str], i: int) -> bool:
    return i == 0 or not lines[i - 1].strip()


def _render_text(raw: str) -> str:
    """One paragraph: lines that merely wrap are joined (as Markdown does), list items, headings
    and hard breaks (two trailing spaces or a backslash) keep their own lines."""
    out: list[str] = []
    joinable = False
    for line in raw.split("\n"):
        if _ATTRIBUTE.match(line):
            continue
        heading = _HEADING.match(line)
        bullet = _BULLET.match(line)
        hard_break = line.endswith(("  ", "\\"))
        text = line.strip().removesuffix("\\").rstrip()
        if heading:
            out.append(f"<b>{inline(heading.group(1))}</b>")
            joinable = False
            continue
        if bullet:
            out.append(f"{bullet.group(1)}• {inline(bullet.group(2))}")
        elif _NUMBERED.match(line) or not (joinable and out):
            out.append(inline(text))
        else:
            out[-1] = f"{out[-1]} {inline(text)}"
        joinable = not hard_break
    return "\n".join(out)


def _render_code(raw: str) -> str:
    return f"<pre>{html.escape(raw, quote=False)}</pre>"


def _visible(rendered: str) -> bool:
    """Whether the HTML shows anything: Telegram refuses a message that is empty once parsed."""
    return bool(html.unescape(_TAG.sub("", rendered)).strip())


def _split_raw(kind: str, raw: str, limit: int) -> list[str]:
    """Render one block, cutting it (at lines, then words, then characters) until each fits."""
    render = _render_code if kind == "code" else _render_text
    rendered = render(raw)
    if len(rendered) <= limit:
        return [rendered] if _visible(rendered) else []
    for separator in ("\n", " "):
        pieces = raw.split(separator)
        if len(pieces) > 1:
            middle = len(pieces) // 2
            return _split_raw(kind, separator.join(pieces[:middle]), limit) + _split_raw(
                kind, separator.join(pieces[middle:]), limit
            )
    middle = len(raw) // 2
    return _split_raw(kind, raw[:middle], limit) + _split_raw(kind, raw[middle:], limit)


def pack(parts: list[str], limit: int = LIMIT) -> list[str]:
    """Join rendered parts with blank lines into as few messages as fit under ``limit``."""
    messages: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}\n\n{part}" if current else part
        if len(candidate) <= limit:
            current = candidate
        else:
            if current:
                messages.append(current)
            current = part
    if current:
        messages.append(current)
    return messages


def render_answer(markdown: str, *, footer: str = "", limit: int = LIMIT) -> list[str]:
    """The answer as one or more HTML messages; ``footer`` (already HTML) ends the last one."""
    parts = [piece for kind, raw in _blocks(markdown) for piece in _split_raw(kind, raw, limit)]
    if footer:
        parts.append(footer)
    return pack(parts, limit) or [footer or "…"]


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def toast_text(html_text: str, limit: int = 190) -> str:
    """A text made for HTML as the plain line a callback toast shows (it has no parse mode),
    within Telegram's 200 characters."""
    text = " ".join(html.unescape(_TAG.sub("", html_text)).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
