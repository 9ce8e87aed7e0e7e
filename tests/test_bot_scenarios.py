"""Scenario tests: the real aiogram dispatcher long-polling the sandbox Bot API over HTTP.

Assertions are on the Bot API calls the bot made and on the rows it wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bot.keyboards import FeedbackCb, HumanCb
from bot.render import LIMIT
from bot.sandbox import User
from ingest.pipeline import ingest_paths
from kb.models import Author, Customer, Direction, Feedback, Message, Ticket, TicketState
from tests.conftest import BotHarness, eventually

ANN = User(501, "Ann", "Lee", username="ann_l", language_code="en")
BOB = User(502, "Bob & <Co>", language_code="en-GB")


async def rows(harness: BotHarness, model: type, *where) -> list:
    async with harness.services.sessions() as session:
        return list((await session.scalars(select(model).where(*where).order_by(model.id))).all())


async def _two(pending) -> list:
    found = await pending
    return found if len(found) == 2 else []


async def test_start_greets_by_name_and_is_stored(harness: BotHarness) -> None:
    reply = await harness.say(BOB, "/start")
    assert "Hi, Bob & <Co>!" in reply.plain_text
    assert reply.parse_mode == "HTML"
    [customer] = await rows(harness, Customer)
    assert (customer.telegram_id, customer.first_name, customer.language) == (502, "Bob & <Co>", "en-GB")

    async def stored() -> list[Message]:
        messages = await rows(harness, Message)
        return messages if len(messages) == 2 and messages[1].telegram_message_id else []

    messages = await eventually(stored)
    first = messages[0]
    assert (first.direction, first.content_type, first.text) == (Direction.IN, "command", "/start")
    assert messages[1].author is Author.BOT and messages[1].telegram_message_id == reply.message_id
    commands = harness.sandbox.calls_to("setMyCommands")
    assert {c["command"] for c in commands[0].params["commands"]} >= {"start", "help", "human"}


async def test_a_paraphrase_gets_the_article_with_source_and_feedback_buttons(harness: BotHarness) -> None:
    reply = await harness.say(ANN, "I forgot my password, how can I get back in?")
    assert "Forgot password?" in reply.plain_text
    assert reply.plain_text.rstrip().endswith("Source: How do I reset my password?")
    assert reply.buttons == [["👍 Helped", "👎 Didn't help"]]

    async def stored() -> list[Message]:
        messages = await rows(harness, Message)
        return messages if len(messages) == 2 and messages[1].telegram_message_id else []

    incoming, outgoing = await eventually(stored)
    assert incoming.direction is Direction.IN and incoming.text.startswith("I forgot my password")
    assert incoming.telegram_message_id is not None
    assert outgoing.decision == "answer" and outgoing.version_id is not None
    # answered: above the answer threshold, or clearly ahead of the runner-up (the margin rule)
    kb = harness.services.settings.kb
    runner_up = outgoing.hits[1]["score"] if len(outgoing.hits) > 1 else 0.0
    assert outgoing.score is not None and (
        outgoing.score >= kb.answer_threshold
        or (
            outgoing.score >= (kb.margin_floor or kb.suggest_threshold)
            and outgoing.score - runner_up >= kb.answer_margin - 1e-3
        )
    )
    assert outgoing.hits[0]["article"].endswith("how-do-i-reset-my-password")
    assert all("score" in hit for hit in outgoing.hits)
    assert outgoing.telegram_message_id == reply.message_id


async def test_feedback_presses_are_stored(harness: BotHarness) -> None:
    answer = await harness.say(ANN, "How do I cancel my subscription?")
    outgoing = (await rows(harness, Message, Message.author == Author.BOT))[-1]
    harness.sandbox.press_button(
        chat=ANN.id,
        user=ANN,
        message_id=answer.message_id,
        data=FeedbackCb(message=outgoing.id, helpful=True).pack(),
    )
    await harness.sandbox.wait_for(lambda c: c.method == "answerCallbackQuery")
    await harness.sandbox.wait_for(lambda c: c.method == "editMessageReplyMarkup")
    [feedback] = await eventually(lambda: rows(harness, Feedback))
    assert feedback.helpful is True and feedback.version_id == outgoing.version_id
    assert harness.sandbox.message(ANN.id, answer.message_id).buttons == []

    other = await harness.say(ANN, "Which payment methods do you accept?")
    harness.sandbox.press_button(
        chat=ANN.id, user=ANN, message_id=other.message_id, button_text="👎 Didn't help"
    )
    await harness.sandbox.wait_for(lambda c: c.method == "editMessageReplyMarkup", count=2)
    feedback_rows = await eventually(lambda: _two(rows(harness, Feedback)))
    assert [f.helpful for f in feedback_rows] == [True, False]
    assert harness.sandbox.message(ANN.id, other.message_id).buttons == [["🙋 Ask a person"]]


async def test_the_middle_band_offers_did_you_mean_buttons(harness: BotHarness) -> None:
    reply = await harness.say(ANN, "change my login details")
    assert "Did you mean" in reply.plain_text
    labels = [row[0] for row in reply.buttons]
    assert 1 <= len(labels) - 1 <= 3 and labels[-1] == "🙋 Ask a person"
    assert labels[0] == "How do I change the email address on my account?"
    [outgoing] = await rows(harness, Message, Message.author == Author.BOT)
    assert outgoing.decision == "suggest"

    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.press_button(chat=ANN.id, user=ANN, message_id=reply.message_id, button_text=labels[0])
    answer = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert "Settings → Account → Email" in answer.plain_text
    assert "Source: How do I change the email address" in answer.plain_text
    assert answer.buttons == [["👍 Helped", "👎 Didn't help"]]
    picked = (await rows(harness, Message, Message.author == Author.BOT))[-1]
    assert picked.decision == "picked" and picked.version_id is not None


async def test_an_unknown_question_is_answered_honestly_and_a_person_can_be_asked(
    harness: BotHarness,
) -> None:
    reply = await harness.say(ANN, "What's the best pizza place in Naples?")
    assert "I don't have an answer to that yet" in reply.plain_text
    assert reply.buttons == [["🙋 Ask a person"]]
    [outgoing] = await rows(harness, Message, Message.author == Author.BOT)
    assert outgoing.decision == "escalate" and outgoing.version_id is None

    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.press_button(
        chat=ANN.id, user=ANN, message_id=reply.message_id, data=HumanCb(reason="no_answer").pack()
    )
    confirmation = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    [ticket] = await eventually(lambda: rows(harness, Ticket))
    assert f"request #{ticket.id}" in confirmation.plain_text
    assert ticket.state is TicketState.WAITING and ticket.reason == "no_answer"
    assert ticket.question == "What's the best pizza place in Naples?"

    again = await harness.say(ANN, "/human")
    assert f"#{ticket.id} is already with our team" in again.plain_text
    assert len(await rows(harness, Ticket)) == 1


async def test_non_text_messages_get_a_polite_reply(harness: BotHarness) -> None:
    harness.sandbox.send_sticker(chat=ANN.id, user=ANN, emoji="🐱")
    reply = await harness.sandbox.wait_for_bot_message(ANN.id)
    assert "I can only read text" in reply.plain_text
    incoming = await eventually(lambda: rows(harness, Message, Message.direction == Direction.IN))
    assert [m.content_type for m in incoming] == ["sticker"]


@pytest.mark.parametrize("text", ["???", "…", "🙂🙂"])
async def test_a_question_without_words_is_asked_for_again(harness: BotHarness, text: str) -> None:
    reply = await harness.say(ANN, text)
    assert "type your question in words" in reply.plain_text


async def test_a_message_of_4096_characters(harness: BotHarness) -> None:
    text = ("Why is the desktop app not syncing my files? " * 100)[:4096]
    reply = await harness.say(ANN, text)
    assert reply.plain_text
    stored = (await rows(harness, Message, Message.direction == Direction.IN))[0]
    assert len(stored.text) == 4096


async def test_html_in_kb_content_and_long_answers_reach_the_customer(
    harness: BotHarness, tmp_path: Path
) -> None:
    long_answer = "\n\n".join(f'Step {i}: run `make <target> && echo "done"` & wait.' for i in range(400))
    doc = tmp_path / "tricky.csv"
    doc.write_text(
        'question,answer\n"How do I build the <b>firmware</b> & flash it?","'
        + long_answer.replace('"', '""')
        + '"\n'
    )
    report = await ingest_paths([doc], sessions=harness.services.sessions, encoder=harness.services.encoder)
    assert report.added == 1
    await harness.services.kb.sync(harness.services.sessions)

    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.send_message(chat=ANN.id, user=ANN, text="How do I build the <b>firmware</b> & flash it?")
    await harness.sandbox.wait_for(
        lambda c: c.method == "sendMessage" and c.params.get("reply_markup") is not None, since=0
    )
    sent = harness.sandbox.messages_to(ANN.id)[before:]
    assert len(sent) >= 2
    assert all(len(m.text) <= LIMIT for m in sent)
    assert 'Step 0: run make <target> && echo "done" & wait.' in sent[0].plain_text
    assert "Step 399" in sent[-1].plain_text
    assert sent[-1].plain_text.rstrip().endswith("Source: How do I build the <b>firmware</b> & flash it?")
    assert [m.buttons for m in sent[:-1]] == [[]] * (len(sent) - 1)
    assert sent[-1].buttons == [["👍 Helped", "👎 Didn't help"]]
    assert not harness.sandbox.calls_to("sendMessage", ok=False)
