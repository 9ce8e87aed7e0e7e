"""Logging set-up: one line per event, and secrets never reach a log line.

aiohttp's errors quote the request URL, and a Bot API URL holds the token
(``/bot<token>/method``); the formatter masks every token-shaped string and every configured
secret in the whole formatted line, traceback included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

TOKEN_SHAPE = re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{20,}")
MASK = "<secret>"


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return TOKEN_SHAPE.sub(MASK, text)


def setup_logging(level: int, *, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "sentence_transformers", "aiogram.event"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
