"""Log lines: one per event, with the update's context; secrets never reach a line, a report or a
person, even inside a quoted URL or a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import socket
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from bot.app import build_bot
from bot.cli import app
from bot.config import Settings
from bot.logs import (
    MASK,
    RedactingFormatter,
    StructuredFormatter,
    bind_log_context,
    log_context,
    logfmt,
    redact,
    scoped_log_context,
    secrets_of,
    setup_logging,
)
from bot.sandbox import User
from bot.texts import EN
from tests.conftest import eventually, make_settings

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
WEBHOOK_SECRET = "wh-sEcReT-4b7d9e2f61a8c3d5"  # not token-shaped: masked because it is configured
ANN = User(701, "Ann", language_code="en")
BEN = User(702, "Ben", language_code="en")
CARL = User(703, "Carl", language_code="en")
LINE_START = re.compile(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=\w+ logger=\S+ msg=")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared settings, with a webhook secret configured (the bot still long-polls)."""
    base = make_settings(tmp_path)
    telegram = base.telegram.model_copy(update={"webhook_secret": SecretStr(WEBHOOK_SECRET)})
    return base.model_copy(update={"telegram": telegram})


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger, put back as it was after the test (handlers, levels)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # only pytest's own handlers stay: not the stderr of an earlier command line test
    root.handlers[:] = [handler for handler in handlers if type(handler).__module__.startswith("_pytest")]
    quiet = {
        name: logging.getLogger(name).level for name in ("httpx", "sentence_transformers", "aiogram.event")
    }
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


class Capture(logging.Handler):
    """Every record, as the project's formatter writes it and as it was before any masking."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []
        self.raw: list[str] = []
        self._plain = logging.Formatter("%(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.raw.append(self._plain.format(record))
        self.lines.append(self.format(record))

    def matching(self, *parts: str) -> list[str]:
        return [line for line in self.lines if all(part in line for part in parts)]


@contextlib.contextmanager
def capturing(root: logging.Logger, formatter: logging.Formatter) -> Iterator[Capture]:
    capture = Capture(formatter)
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)


# -- masking ------------------------------------------------------------------------------------


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


def test_the_secrets_of_the_settings_are_the_token_the_webhook_secret_and_the_database_password() -> None:
    settings = Settings(
        telegram={"token": TOKEN, "webhook_secret": WEBHOOK_SECRET},
        database={"url": "postgresql+asyncpg://helpdesk:db-pass-word@db.internal/helpdesk"},
    )
    assert secrets_of(settings) == [TOKEN, WEBHOOK_SECRET, "db-pass-word"]
    assert secrets_of(Settings()) == []


# -- the shape of a line ------------------------------------------------------------------------


def test_a_line_is_logfmt_with_the_update_context_and_the_extras() -> None:
    record = logging.LogRecord("bot.routers", logging.INFO, __file__, 1, "answered %s", ("in 12 ms",), None)
    record.decision = "answer"  # what extra={"decision": "answer"} does
    with scoped_log_context(update_id=12, customer_id=42, ticket_id=None):
        line = StructuredFormatter().format(record)
    assert LINE_START.match(line), line
    assert line.endswith(
        ' level=info logger=bot.routers msg="answered in 12 ms" update_id=12 customer_id=42 decision=answer'
    )


def test_values_are_quoted_only_when_they_must_be() -> None:
    fields = {
        "a": "plain",
        "b": "two words",
        "c": 'say "hi"',
        "d": "",
        "e": True,
        "f": "k=v",
        "g": "žluť",
        "h": 1.5,
    }
    assert logfmt(fields) == 'a=plain b="two words" c="say \\"hi\\"" d="" e=true f="k=v" g=žluť h=1.5'


def test_a_traceback_is_a_field_of_its_one_line_and_is_masked() -> None:
    formatter = StructuredFormatter(secrets=["hunter2"])
    try:
        raise RuntimeError(f"GET /bot{TOKEN}/getMe failed, password hunter2")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", (TOKEN,), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    assert f'msg="failed: {MASK}" exc="Traceback (most recent call last):\\n' in line
    assert f"RuntimeError: GET /bot{MASK}/getMe failed, password {MASK}" in line
    assert TOKEN not in line and "hunter2" not in line


def test_json_lines_on_request(monkeypatch: pytest.MonkeyPatch, root_logging: logging.Logger) -> None:
    monkeypatch.setenv("HELPDESK_LOG_FORMAT", "json")
    stream = io.StringIO()
    setup_logging(logging.INFO, secrets=["hunter2"], stream=stream)
    with scoped_log_context(update_id=7, customer_id=42):
        logging.getLogger("bot.test").warning("rated %d by hunter2", 5, extra={"ticket_id": 3})
        logging.getLogger("bot.test").debug("below the level")
    [line] = stream.getvalue().splitlines()
    fields = json.loads(line)
    assert fields["level"] == "warning" and fields["logger"] == "bot.test"
    assert fields["msg"] == f"rated 5 by {MASK}"
    assert (fields["update_id"], fields["customer_id"], fields["ticket_id"]) == (7, 42, 3)


async def test_bound_fields_reach_tasks_started_later_and_stay_in_their_task() -> None:
    async def seen() -> dict[str, object]:
        return log_context()

    async def binds_its_own() -> None:
        bind_log_context(ticket_id=10)

    with scoped_log_context(update_id=1, customer_id=5):
        bind_log_context(ticket_id=9)
        assert await asyncio.create_task(seen()) == {"update_id": 1, "customer_id": 5, "ticket_id": 9}
        await asyncio.create_task(binds_its_own())
        assert log_context()["ticket_id"] == 9
        bind_log_context(ticket_id=None)
        assert log_context() == {"update_id": 1, "customer_id": 5}
    assert log_context() == {}


# -- lines of a running bot ---------------------------------------------------------------------


async def test_the_lines_of_an_update_carry_its_id_the_customer_and_the_ticket(
    make_harness, root_logging: logging.Logger
) -> None:
    with capturing(root_logging, StructuredFormatter()) as capture:
        async with make_harness() as harness:
            await harness.say(ANN, "How do I reset my password?")
            update_id = harness.sandbox.updates[-1]["update_id"]

            async def answered() -> list[str]:
                return capture.matching('msg="question answered: answer"', f"update_id={update_id} ")

            [line] = await eventually(answered)
            assert f"customer_id={ANN.id} " in line and "decision=answer" in line
            assert re.search(r" latency_ms=\d+(\.\d+)?$", line)

            await harness.say(BEN, "/human")
            human_update = harness.sandbox.updates[-1]["update_id"]

            async def topic_line() -> list[str]:  # written by a task the update started
                return capture.matching("topic", f"update_id={human_update} ", "ticket_id=")

            [line] = await eventually(topic_line)
            assert f"customer_id={BEN.id} " in line

            await harness.settle()
            harness.sandbox.fail_next(
                "sendMessage", error_code=400, description="Bad Request: chat not found"
            )
            reply = await harness.say(CARL, "How do I reset my password?")
            assert reply.plain_text == EN.error
            failed_update = harness.sandbox.updates[-1]["update_id"]

            async def error_line() -> list[str]:
                return capture.matching(f"update_id={failed_update} ", "level=error")

            [line] = await eventually(error_line)
            assert f"customer_id={CARL.id} " in line and 'exc="Traceback (most recent call last):' in line
    assert capture.lines and all(LINE_START.match(line) for line in capture.lines)


async def test_neither_secret_reaches_a_log_line_or_a_person(
    make_harness, root_logging: logging.Logger
) -> None:
    async with make_harness() as harness:
        live = harness.services.settings
        token = live.telegram.token.get_secret_value()
        assert secrets_of(live)[:2] == [token, WEBHOOK_SECRET]
        with capturing(root_logging, StructuredFormatter(secrets_of(live))) as capture:
            await harness.say(ANN, "How do I reset my password?")
            second = build_bot(live)  # setWebhook carries the secret; the sandbox logs its calls
            try:
                await second.set_webhook("https://bot.example.com/telegram", secret_token=WEBHOOK_SECRET)
                await second.delete_webhook()
            finally:
                await second.session.close()
            harness.sandbox.fail_next(  # a proxy that quotes the URL: the token in an exception
                "sendMessage", error_code=400, description=f"Bad Request: no route to /bot{token}/sendMessage"
            )
            reply = await harness.say(CARL, "How do I reset my password?")
            assert reply.plain_text == EN.error
            await harness.settle()
        seen_to_people = [
            text
            for chat in (ANN.id, CARL.id)
            for message in harness.sandbox.messages_to(chat)
            for text in (message.text or "", message.caption or "")
        ]
    raw, logged = "\n".join(capture.raw), "\n".join(capture.lines)
    assert token in raw and WEBHOOK_SECRET in raw  # both went through logging...
    assert "Traceback (most recent call last)" in logged
    assert token not in logged and WEBHOOK_SECRET not in logged  # ...and neither came out
    assert logged.count(MASK) >= 2
    assert seen_to_people and not any(token in text or WEBHOOK_SECRET in text for text in seen_to_people)


# -- the command line ---------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reports_and_a_failed_run_print_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logging: logging.Logger
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    monkeypatch.setenv("HELPDESK_TELEGRAM__TOKEN", TOKEN)
    monkeypatch.setenv("HELPDESK_TELEGRAM__WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("HELPDESK_TELEGRAM__API_URL", f"http://127.0.0.1:{closed_port()}")  # Telegram down
    runner = CliRunner()
    outputs, stdouts = [], []
    for args in (["-v", "report"], ["-v", "report", "--json"], ["-v", "run"]):
        result = runner.invoke(app, args)
        assert (result.exit_code == 0) is (args[1] == "report"), (args, result.output)
        shown = result.output + result.stderr
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            shown += "".join(traceback.format_exception(*result.exc_info))
        outputs.append(shown)
        stdouts.append(result.stdout)
    assert "conversations" in stdouts[0] and json.loads(stdouts[1])["conversations"] == 0
    assert "TelegramNetworkError" in outputs[2] or "127.0.0.1" in outputs[2]
    for shown in outputs:
        assert TOKEN not in shown and WEBHOOK_SECRET not in shown
