"""Secrets never reach a log line, even inside a quoted URL or a traceback."""

from __future__ import annotations

import logging
import sys

from bot.logs import MASK, RedactingFormatter, redact

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_token_shaped_strings_are_masked() -> None:
    line = f"Can not write request body for http://127.0.0.1:8081/bot{TOKEN}/getUpdates"
    assert TOKEN not in redact(line) and MASK in redact(line)
    assert redact("webhook secret s3cr3t-value", ["s3cr3t-value"]) == f"webhook secret {MASK}"


def test_the_formatter_masks_messages_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s", secrets=["hunter2"])
    try:
        raise RuntimeError(f"GET /bot{TOKEN}/getMe failed, password hunter2")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", (TOKEN,), None)
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert TOKEN not in text and "hunter2" not in text
    assert text.count(MASK) >= 3
