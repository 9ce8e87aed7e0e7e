"""Editors in Telegram: a document sent to the bot is ingested; others are customers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings
from bot.sandbox import User
from tests.conftest import BotHarness, make_settings

EDITOR = User(900, "Erin", language_code="en")
CUSTOMER = User(901, "Carl", language_code="en")

FAQ = b"""## Do you ship to Iceland?

Yes: Iceland is in our EU shipping zone, delivery takes 3-5 working days.

## Can I pay in instalments?

Yes, for orders over 200 EUR you can split the payment into three.
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = make_settings(tmp_path)
    return base.model_copy(
        update={
            "telegram": base.telegram.model_copy(update={"editors": [EDITOR.id]}),
            "ingest": base.ingest.model_copy(update={"uploads_dir": tmp_path / "uploads"}),
        }
    )


async def test_an_editor_ingests_a_document_and_customers_get_it(harness: BotHarness, tmp_path: Path) -> None:
    sandbox = harness.sandbox
    sandbox.send_document(chat=EDITOR.id, user=EDITOR, file_name="shipping.md", content=FAQ)
    await sandbox.wait_for_bot_message(EDITOR.id, after=0)  # "Ingesting ..."
    summary = await sandbox.wait_for_bot_message(EDITOR.id, after=1, timeout=30)
    assert "added 2" in summary.plain_text and "failed 0" in summary.plain_text
    assert (tmp_path / "uploads" / "shipping.md").read_bytes() == FAQ

    reply = await harness.say(CUSTOMER, "do you deliver to iceland?")
    assert "EU shipping zone" in reply.plain_text

    # Sending an edited file of the same name updates and retires, like the command line.
    sandbox.send_document(
        chat=EDITOR.id, user=EDITOR, file_name="shipping.md", content=FAQ.split(b"## Can I pay")[0]
    )
    again = await sandbox.wait_for_bot_message(EDITOR.id, after=3, timeout=30)
    assert "retired 1" in again.plain_text and "unchanged 1" in again.plain_text

    overview = await harness.say(EDITOR, "/kb")
    assert "14 published, 1 retired" in overview.plain_text  # with the example FAQ of the harness


async def test_a_broken_document_is_reported_with_its_line(harness: BotHarness) -> None:
    sandbox = harness.sandbox
    sandbox.send_document(
        chat=EDITOR.id, user=EDITOR, file_name="faq.csv", content=b"question,answer\nWhy?,\n"
    )
    summary = await sandbox.wait_for_bot_message(EDITOR.id, after=1, timeout=30)
    assert "failed 1" in summary.plain_text and "faq.csv:2" in summary.plain_text


async def test_a_customer_document_is_not_ingested(harness: BotHarness, tmp_path: Path) -> None:
    sandbox = harness.sandbox
    sandbox.send_document(chat=CUSTOMER.id, user=CUSTOMER, file_name="shipping.md", content=FAQ)
    reply = await sandbox.wait_for_bot_message(CUSTOMER.id)
    assert "Ingest" not in reply.plain_text
    assert not (tmp_path / "uploads").exists()
    commands = [m.text for m in sandbox.messages_to(CUSTOMER.id)]
    assert all("added" not in (text or "") for text in commands)
