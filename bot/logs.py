"""Logging set-up: one structured line per event, with the update's context, and no secrets.

A line is logfmt (``HELPDESK_LOG_FORMAT=json`` makes it a JSON object)::

    ts=2025-05-01T09:30:00.123Z level=error logger=bot.app msg="update 12 failed: ..." update_id=12
    customer_id=4242 ticket_id=7 exc="Traceback (most recent call last):\\n  File ..."

Fields, in order: ``ts`` (UTC), ``level``, ``logger``, ``msg``; then the context of the update
being handled; then the ``extra={...}`` of the call; then ``exc`` / ``stack`` (a traceback is a
field of its line, newlines escaped, so one event is always one line).

The context lives in contextvars. :class:`LogContextMiddleware`, the dispatcher's first outer
middleware, sets ``update_id`` and the person: ``customer_id`` (the user of a private chat) or
``user_id`` (someone in a group, e.g. an agent); code binds what it learns on the way with
:func:`bind_log_context` (``ticket_id``). Tasks started while handling an update inherit it.

Secrets: aiohttp's errors quote the request URL, and a Bot API URL holds the token
(``/bot<token>/method``). Every token-shaped string and every configured secret
(:func:`secrets_of`: the token, the webhook secret, the database password) is masked, in each
field before it is quoted and in the whole line after, traceback included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import Chat, TelegramObject, Update, User

if TYPE_CHECKING:
    from bot.config import Settings

TOKEN_SHAPE = re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{20,}")
MASK = "<secret>"
FORMAT_ENV = "HELPDESK_LOG_FORMAT"
FORMATS = ("logfmt", "json")

_context: ContextVar[Mapping[str, object]] = ContextVar("helpdesk_log_context", default=MappingProxyType({}))
_update_started: ContextVar[float | None] = ContextVar("helpdesk_update_started", default=None)
_BARE = re.compile(r"[^\s=\"\\]+")
# Attributes every LogRecord has; anything else on a record came from ``extra={...}``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


# -- secrets ------------------------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return TOKEN_SHAPE.sub(MASK, text)


def secrets_of(settings: Settings) -> list[str]:
    """What must never be logged: the bot token, the webhook secret, the database password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    found = [
        settings.telegram.token.get_secret_value(),
        settings.telegram.webhook_secret.get_secret_value(),
    ]
    with contextlib.suppress(ArgumentError, ValueError):  # a malformed URL has no password to hide
        found.append(make_url(settings.database.url).password or "")
    return [secret for secret in found if secret]


class RedactingFormatter(logging.Formatter):
    """A classic ``%``-format line with the secrets masked (tracebacks included)."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


# -- context ------------------------------------------------------------------------------------


def bind_log_context(**fields: object) -> None:
    """Add fields to every later line of this update (and of tasks it starts); ``None`` drops one."""
    merged = {**_context.get(), **fields}
    _context.set({key: value for key, value in merged.items() if value is not None})


def log_context() -> dict[str, object]:
    """The fields bound now (a copy)."""
    return dict(_context.get())


@contextlib.contextmanager
def scoped_log_context(**fields: object) -> Iterator[None]:
    """Exactly these fields for the body of the ``with`` (jobs outside an update, tests)."""
    token = _context.set({key: value for key, value in fields.items() if value is not None})
    try:
        yield
    finally:
        _context.reset(token)


def update_started() -> float | None:
    """``time.monotonic()`` when the update being handled reached the dispatcher, if one is."""
    return _update_started.get()


def update_fields(event: TelegramObject, user: User | None, chat: Chat | None) -> dict[str, object]:
    """The context of an update: its id, and who it is from (a customer in a private chat)."""
    fields: dict[str, object] = {}
    if isinstance(event, Update):
        fields["update_id"] = event.update_id
    if user is not None:
        private = chat is None or chat.type == ChatType.PRIVATE
        fields["customer_id" if private else "user_id"] = user.id
    return fields


class LogContextMiddleware(BaseMiddleware):
    """The first outer middleware: every line logged while an update is handled carries its id
    and the customer (and starts its clock, for the answer latency).

    When the handler raises, the fields stay set: the dispatcher's error handler runs after this
    middleware returns and logs with them. Every update runs in a task of its own (or replaces
    the fields on arrival), so nothing leaks to the next one.
    """

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        fields = update_fields(event, data.get("event_from_user"), data.get("event_chat"))
        context_token = _context.set(fields)
        clock_token = _update_started.set(time.monotonic())
        result = await handler(event, data)
        _update_started.reset(clock_token)
        _context.reset(context_token)
        return result


# -- lines --------------------------------------------------------------------------------------


def logfmt(fields: Mapping[str, object]) -> str:
    """``key=value ...``; values with spaces, quotes, ``=`` or control characters are quoted."""
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


def _logfmt_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)  # quoted, with \" \\ \n and \uXXXX escapes


class StructuredFormatter(logging.Formatter):
    """One line per event: logfmt, or a JSON object with ``json_lines``; secrets masked."""

    def __init__(self, secrets: Iterable[str] = (), *, json_lines: bool = False) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if self.json_lines:
            line = json.dumps(fields, ensure_ascii=False, default=str)
        else:
            line = logfmt(fields)
        return redact(line, self.secrets)

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        """The line's fields, every text already masked."""
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        fields: dict[str, object] = {
            "ts": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update(_context.get())
        fields.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
        )
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return {key: self._clean(value) for key, value in fields.items()}

    def _clean(self, value: object) -> object:
        if isinstance(value, bool | int | float) or value is None:
            return value
        return redact(str(value), self.secrets)


def log_format(environ: Mapping[str, str] = os.environ) -> str:
    """``$HELPDESK_LOG_FORMAT`` (``logfmt`` or ``json``); anything else is ``logfmt``."""
    wanted = environ.get(FORMAT_ENV, "").strip().lower()
    return wanted if wanted in FORMATS else "logfmt"


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each line (test runners swap it and close theirs)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """``StreamHandler.__init__`` sets it; the property wins."""


def setup_logging(level: int, *, secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """Root logging to ``stream`` (else stderr) in the format of ``$HELPDESK_LOG_FORMAT``."""
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(StructuredFormatter(secrets, json_lines=log_format() == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "sentence_transformers", "aiogram.event"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    wanted = os.environ.get(FORMAT_ENV, "")
    if wanted and wanted.strip().lower() not in FORMATS:
        log = logging.getLogger(__name__)
        log.warning("%s=%r is not one of %s: using logfmt", FORMAT_ENV, wanted, FORMATS)
