"""Hand-over to agents in a forum supergroup, through the sandbox Bot API over HTTP.

The real dispatcher long-polls the sandbox; the customer and the agents are played in Python.
Assertions are on the Bot API calls the bot made, on what each side sees, and on the rows written.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.keyboards import TicketCb
from bot.pacing import Pacing
from bot.sandbox import Chat, User
from kb.models import Author, Csat, Message, Suggestion, SuggestionStatus, Ticket, TicketState
from tests.conftest import BotHarness, eventually

ANN = User(501, "Ann", "Lee", username="ann_l", language_code="en")
BEN = User(502, "Ben", language_code="en")
MALLORY = User(950, "Mallory", username="mallory")
BRUNO = User(901, "Bruno", username="bruno_agent")
PIZZA = "What's the best pizza place in Naples?"


async def rows(harness: BotHarness, model: type, *where) -> list:
    async with harness.services.sessions() as session:
        return list((await session.scalars(select(model).where(*where).order_by(model.id))).all())


async def ticket_row(harness: BotHarness, ticket_id: int) -> Ticket:
    async with harness.services.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


async def escalate(harness: BotHarness, user: User = ANN, question: str = PIZZA) -> tuple[Ticket, int]:
    """The customer asks something the KB cannot answer, then /human; returns the ticket and topic."""
    await harness.say(user, question)
    await harness.say(user, "/human")
    tickets = await eventually(lambda: rows(harness, Ticket, Ticket.state == TicketState.WAITING))
    ticket = tickets[-1]
    topic = await harness.topic_of(ticket.id)
    await harness.settle()  # the pin and any transcript follow the card
    return await ticket_row(harness, ticket.id), topic


def agent_says(harness: BotHarness, topic: int | None, text: str, *, user: User | None = None, **kw) -> dict:
    return harness.sandbox.send_message(
        chat=harness.forum, user=user or harness.agent, text=text, message_thread_id=topic, **kw
    )


async def next_in_topic(harness: BotHarness, topic: int, after: int):
    return await harness.sandbox.wait_for_bot_message(harness.forum.id, after=after, thread_id=topic)


def topic_count(harness: BotHarness, topic: int) -> int:
    return len(harness.in_topic(topic))


# -- escalation -----------------------------------------------------------------------------------


async def test_escalation_by_button_opens_a_topic_with_the_card_pinned_first(harness: BotHarness) -> None:
    reply = await harness.say(ANN, PIZZA)
    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.press_button(
        chat=ANN.id, user=ANN, message_id=reply.message_id, button_text="🙋 Ask a person"
    )
    ack = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    [ticket] = await eventually(lambda: rows(harness, Ticket))
    assert (ticket.state, ticket.reason, ticket.question) == (TicketState.WAITING, "no_answer", PIZZA)
    assert f"request #{ticket.id}" in ack.plain_text
    assert "reply here, in this chat" in ack.plain_text and "won't need to repeat" in ack.plain_text
    assert "You're next in the queue." in ack.plain_text and "/cancel" in ack.plain_text

    topic = await harness.topic_of(ticket.id)
    assert harness.sandbox.topics(harness.forum.id) == {
        topic: f"#{ticket.id} Ann Lee — What's the best pizza place in…"
    }
    [created] = harness.sandbox.calls_to("createForumTopic")
    assert created.params["chat_id"] == harness.forum.id
    # the card's id is stored as soon as it is posted; it is pinned just after
    await harness.sandbox.wait_for(lambda c: c.method == "pinChatMessage")
    card = harness.in_topic(topic)[0]
    ticket = await ticket_row(harness, ticket.id)
    assert card.message_id == ticket.card_message_id and card.pinned
    assert card.buttons == [["🙋 Claim", "✅ Close"]]
    assert card.plain_text.startswith(f"🎫 Ticket #{ticket.id} · waiting for an agent")
    assert harness.sandbox.calls_to("pinChatMessage")[0].params["message_id"] == card.message_id
    # nothing went to the customer on the agents' behalf
    assert harness.sandbox.messages_to(ANN.id)[-1].message_id == ack.message_id


async def test_escalation_by_command_twice_keeps_one_ticket(harness: BotHarness) -> None:
    ack = await harness.say(ANN, "/human")
    [ticket] = await eventually(lambda: rows(harness, Ticket))
    assert ticket.reason == "command" and f"request #{ticket.id}" in ack.plain_text
    await harness.topic_of(ticket.id)
    again = await harness.say(ANN, "/human")
    assert f"#{ticket.id} is already with our team" in again.plain_text
    assert len(await rows(harness, Ticket)) == 1
    assert len(harness.sandbox.calls_to("createForumTopic")) == 1

    second = await harness.say(BEN, "/human")  # another customer queues behind Ann
    assert "Your place in the queue: 2." in second.plain_text


async def test_two_unanswered_questions_make_the_bot_offer_a_person(harness: BotHarness) -> None:
    first = await harness.say(ANN, PIZZA)
    assert first.buttons == [["🙋 Ask a person"]] and "Would you like to ask a person?" in first.plain_text
    second = await harness.say(ANN, "Which football team will win the league this year?")
    assert "Shall I pass you to a person" in second.plain_text
    assert second.buttons == [["🙋 Yes, connect me to a person"]]
    assert not await rows(harness, Ticket)  # offered, not opened: the customer confirms

    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.press_button(
        chat=ANN.id, user=ANN, message_id=second.message_id, button_text=second.buttons[0][0]
    )
    ack = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    [ticket] = await eventually(lambda: rows(harness, Ticket))
    assert ticket.reason == "unanswered" and f"request #{ticket.id}" in ack.plain_text


async def test_close_stores_the_rating_and_the_bot_answers_again(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    agent_says(harness, topic, "Try Da Michele!")
    await harness.sandbox.wait_for(lambda c: c.method == "copyMessage" and c.params["chat_id"] == ANN.id)

    before = len(harness.sandbox.messages_to(ANN.id))
    agent_says(harness, topic, "/close")
    closing = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert f"request #{ticket.id} as resolved" in closing.plain_text
    assert closing.buttons == [["1 ⭐", "2 ⭐", "3 ⭐", "4 ⭐", "5 ⭐"]]
    closed = await ticket_row(harness, ticket.id)
    assert closed.state is TicketState.RESOLVED and closed.outcome == "resolved" and closed.resolved_at
    await harness.sandbox.wait_for(
        lambda c: c.method == "closeForumTopic" and c.params["message_thread_id"] == topic
    )

    harness.sandbox.press_button(chat=ANN.id, user=ANN, message_id=closing.message_id, button_text="4 ⭐")
    [csat] = await eventually(lambda: rows(harness, Csat))
    assert (csat.ticket_id, csat.score) == (ticket.id, 4)
    assert await eventually(lambda: _edited(harness, ANN.id, closing.message_id))
    assert "You rated our help 4/5" in harness.sandbox.message(ANN.id, closing.message_id).plain_text
    assert await eventually(lambda: _has_text(harness, topic, "rated this ticket 4/5"))

    answer = await harness.say(ANN, "How do I reset my password?")
    assert "Source: How do I reset my password?" in answer.plain_text
    assert answer.buttons == [["👍 Helped", "👎 Didn't help"]]


async def _edited(harness: BotHarness, chat_id: int, message_id: int) -> bool:
    return harness.sandbox.message(chat_id, message_id).edit_count > 0


async def _has_text(harness: BotHarness, topic: int, text: str) -> bool:
    return any(text in (m.plain_text or "") for m in harness.in_topic(topic))


async def test_repeated_didnt_help_escalates_and_the_card_tells_the_whole_story(harness: BotHarness) -> None:
    # an earlier ticket, resolved and rated
    earlier, topic = await escalate(harness, question="Is there a student discount?")
    before = len(harness.sandbox.messages_to(ANN.id))
    agent_says(harness, topic, "/close")
    closing = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    harness.sandbox.press_button(chat=ANN.id, user=ANN, message_id=closing.message_id, button_text="4 ⭐")
    await eventually(lambda: rows(harness, Csat))

    for presses, question in enumerate(
        ("How do I cancel my subscription?", "Which payment methods do you accept?"), 1
    ):
        answer = await harness.say(ANN, question)
        assert answer.buttons == [["👍 Helped", "👎 Didn't help"]]
        before = len(harness.sandbox.messages_to(ANN.id))
        harness.sandbox.press_button(
            chat=ANN.id, user=ANN, message_id=answer.message_id, button_text="👎 Didn't help"
        )
        await harness.sandbox.wait_for(lambda c: c.method == "editMessageReplyMarkup", count=presses)
    offer = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert "haven't been able to help" in offer.plain_text
    assert offer.buttons == [["🙋 Yes, connect me to a person"]]
    assert harness.sandbox.message(ANN.id, answer.message_id).buttons == []

    harness.sandbox.press_button(
        chat=ANN.id, user=ANN, message_id=offer.message_id, button_text=offer.buttons[0][0]
    )
    tickets = await eventually(lambda: rows(harness, Ticket, Ticket.state == TicketState.WAITING))
    ticket = tickets[-1]
    assert ticket.reason == "unanswered" and ticket.question == "Which payment methods do you accept?"
    topic = await harness.topic_of(ticket.id)
    card = harness.in_topic(topic)[0].plain_text
    customer = await rows(harness, Message, Message.author == Author.CUSTOMER)
    assert f"🎫 Ticket #{ticket.id} · waiting for an agent" in card
    assert "Customer: Ann Lee · @ann_l · id 501 · language en" in card
    assert f"First seen: {customer[0].created_at:%Y-%m-%d}" in card
    assert f"Earlier tickets: #{earlier.id} {earlier.opened_at:%Y-%m-%d} resolved ⭐4" in card
    assert "Reason: several questions in a row without a useful answer" in card
    assert "Question: Which payment methods do you accept?" in card
    tried = re.findall(r"answered with “(.+?)” v(\d+) · score (\d\.\d\d) · (.+)", card)
    assert [(title, version, feedback) for title, version, _, feedback in tried] == [
        ("How do I cancel my subscription?", "1", "👎 didn't help"),
        ("Which payment methods do you accept?", "1", "👎 didn't help"),
    ]
    assert all(float(score) >= 0.7 for _, _, score, _ in tried)
    assert "Conversation so far" in card and "Ann Lee: Which payment methods do you accept?" in card
    assert "Bot: [answer: “Which payment methods do you accept?” v1]" in card


async def test_a_long_conversation_is_attached_as_a_text_file(harness: BotHarness) -> None:
    questions = [
        "How do I reset my password?",
        "How do I cancel my subscription?",
        "Which payment methods do you accept?",
        "How do I change the email address on my account?",
        "Why is the desktop app not syncing my files?",
        PIZZA,
    ]
    for question in questions:
        await harness.say(ANN, question)
    await harness.say(ANN, "/human")
    [ticket] = await eventually(lambda: rows(harness, Ticket))
    topic = await harness.topic_of(ticket.id)
    document = await next_in_topic(harness, topic, after=1)
    card = harness.in_topic(topic)[0]
    assert card.pinned and "Conversation so far (the last 8 of 13 messages" in card.plain_text
    assert "the whole conversation is in the file below" in card.plain_text
    assert (
        document.content_type == "document" and document.document_name == f"ticket-{ticket.id}-transcript.txt"
    )
    transcript = document.document_bytes.decode()
    assert all(question in transcript for question in questions)
    assert "Forgot password?" in transcript  # the bot's answers in full
    assert "(answer, score 0." in transcript


# -- relaying -------------------------------------------------------------------------------------


async def test_text_and_photos_are_relayed_both_ways(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    seen = topic_count(harness, topic)
    asked = harness.sandbox.send_message(chat=ANN.id, user=ANN, text="My order #123 <never> arrived")
    copied = await next_in_topic(harness, topic, after=seen)
    assert copied.plain_text == "My order #123 <never> arrived"
    harness.sandbox.send_photo(chat=ANN.id, user=ANN, caption="the receipt", content=b"\xff\xd8 receipt")
    photo = await next_in_topic(harness, topic, after=seen + 1)
    assert (photo.content_type, photo.plain_caption, photo.file_bytes) == (
        "photo",
        "the receipt",
        b"\xff\xd8 receipt",
    )
    assert not any(c.method == "forwardMessage" for c in harness.sandbox.calls)  # copies, not forwards

    before = len(harness.sandbox.messages_to(ANN.id))
    agent_says(harness, topic, "Sorry! A new one is on its way.", reply_to_message_id=copied.message_id)
    reply = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert reply.plain_text == "Sorry! A new one is on its way."
    assert reply.reply_to_message_id == asked["message"]["message_id"]  # the agent's reply stays a reply
    harness.sandbox.send_photo(
        chat=harness.forum,
        user=harness.agent,
        caption="your label",
        content=b"\xff\xd8 label",
        message_thread_id=topic,
    )
    label = await harness.sandbox.wait_for_bot_message(ANN.id, after=before + 1)
    assert (label.content_type, label.plain_caption, label.file_bytes) == (
        "photo",
        "your label",
        b"\xff\xd8 label",
    )

    async def relayed() -> list[Message]:
        found = await rows(
            harness, Message, Message.ticket_id == ticket.id, Message.relay_message_id.is_not(None)
        )
        return found if len(found) == 4 else []

    incoming, picture, answer, agent_photo = await eventually(relayed)
    assert (incoming.author, incoming.relay_message_id, incoming.text) == (
        Author.CUSTOMER,
        copied.message_id,
        "My order #123 <never> arrived",
    )
    assert (picture.content_type, picture.relay_message_id) == ("photo", photo.message_id)
    assert (answer.author, answer.telegram_message_id, answer.agent_id) == (
        Author.AGENT,
        reply.message_id,
        harness.agent.id,
    )
    assert agent_photo.telegram_message_id == label.message_id
    assigned = await ticket_row(harness, ticket.id)
    assert assigned.first_response_at is not None and assigned.first_response_at >= assigned.opened_at
    assert (assigned.state, assigned.agent_id) == (
        TicketState.ASSIGNED,
        harness.agent.id,
    )  # the first to answer has it
    assert await eventually(lambda: _has_text(harness, topic, "answered first and now has this ticket"))


async def test_every_kind_of_customer_message_reaches_the_topic(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    seen = topic_count(harness, topic)
    sandbox = harness.sandbox
    sandbox.send_document(chat=ANN.id, user=ANN, file_name="invoice.pdf", content=b"%PDF-1.4 invoice")
    sandbox.send_voice(chat=ANN.id, user=ANN, duration=4)
    sandbox.send_sticker(chat=ANN.id, user=ANN, emoji="😿")
    sandbox.send_location(chat=ANN.id, user=ANN, latitude=50.08, longitude=14.42)
    await next_in_topic(harness, topic, after=seen + 3)
    copies = harness.in_topic(topic)[seen:]
    assert [m.content_type for m in copies] == ["document", "voice", "sticker", "location"]
    assert (copies[0].document_name, copies[0].document_bytes) == ("invoice.pdf", b"%PDF-1.4 invoice")
    assert copies[3].raw["location"] == {"latitude": 50.08, "longitude": 14.42}

    async def relayed() -> list[str]:
        found = await rows(
            harness, Message, Message.ticket_id == ticket.id, Message.relay_message_id.is_not(None)
        )
        return [m.content_type for m in found] if len(found) == 4 else []

    assert await eventually(relayed) == ["document", "voice", "sticker", "location"]


async def test_notes_stay_in_the_topic(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    before = len(harness.sandbox.messages_to(ANN.id))
    seen = topic_count(harness, topic)
    agent_says(harness, topic, "/note she was charged twice, check with billing")
    saved = await next_in_topic(harness, topic, after=seen)
    assert "Note saved" in saved.plain_text
    agent_says(harness, topic, "// billing says it's fixed")
    agent_says(harness, topic, "/suggest_nonsense")  # an unknown command is not relayed either
    await harness.sandbox.wait_for_bot_message(harness.forum.id, thread_id=topic, after=seen + 1)
    await harness.settle()
    assert len(harness.sandbox.messages_to(ANN.id)) == before
    notes = await rows(harness, Message, Message.decision == "note")
    assert [n.text for n in notes] == ["she was charged twice, check with billing", "billing says it's fixed"]
    assert all(n.ticket_id == ticket.id and n.author is Author.AGENT for n in notes)
    assert (await ticket_row(harness, ticket.id)).first_response_at is None


async def test_claim_assigns_the_ticket_and_the_topic_shows_who_has_it(make_harness) -> None:
    async with make_harness(agents=[7001, BRUNO.id]) as harness:
        ticket, topic = await escalate(harness)
        card = harness.in_topic(topic)[0]
        harness.sandbox.press_button(
            chat=harness.forum, user=harness.agent, message_id=card.message_id, button_text="🙋 Claim"
        )
        [answered] = await harness.sandbox.wait_for(lambda c: c.method == "answerCallbackQuery")
        assert answered.params["text"] == "It's yours."
        assert await eventually(
            lambda: _has_text(harness, topic, "Alice Smith (@alice_agent) took this ticket.")
        )
        assert await eventually(lambda: _card_says(harness, topic, "Assigned to: Alice Smith (@alice_agent)"))
        assert "· with Alice Smith (@alice_agent)" in harness.in_topic(topic)[0].plain_text
        claimed = await ticket_row(harness, ticket.id)
        assert (claimed.state, claimed.agent_id) == (TicketState.ASSIGNED, harness.agent.id)

        harness.sandbox.press_button(
            chat=harness.forum, user=BRUNO, message_id=card.message_id, button_text="🙋 Claim"
        )
        assert await eventually(lambda: _has_text(harness, topic, "took this ticket over from Alice Smith"))
        assert (await ticket_row(harness, ticket.id)).agent_id == BRUNO.id


async def _card_says(harness: BotHarness, topic: int, text: str) -> bool:
    return text in (harness.in_topic(topic)[0].plain_text or "")


async def test_a_non_agent_is_refused_and_buttons_cannot_be_forged(harness: BotHarness) -> None:
    first, topic = await escalate(harness)
    second, _ = await escalate(harness, user=BEN, question="Do you ship to Mars?")
    before, ben_before = len(harness.sandbox.messages_to(ANN.id)), len(harness.sandbox.messages_to(BEN.id))
    seen = topic_count(harness, topic)
    agent_says(harness, topic, "Give me your password", user=MALLORY)
    refusal = await next_in_topic(harness, topic, after=seen)
    assert "Only agents can talk to customers here" in refusal.plain_text
    card = harness.in_topic(topic)[0]
    harness.sandbox.press_button(
        chat=harness.forum, user=MALLORY, message_id=card.message_id, button_text="✅ Close"
    )
    [toast] = await harness.sandbox.wait_for(lambda c: c.method == "answerCallbackQuery")
    assert toast.params["text"] == "Only agents can do this."

    forged = TicketCb(action="close", ticket=second.id).pack()  # Ben's ticket, pressed in Ann's topic
    harness.sandbox.press_button(
        chat=harness.forum, user=harness.agent, message_id=card.message_id, data=forged, strict=False
    )
    [_, refused] = await harness.sandbox.wait_for(lambda c: c.method == "answerCallbackQuery", count=2)
    assert refused.params["text"] == "This button doesn't belong to this topic."
    await harness.settle()
    assert len(harness.sandbox.messages_to(ANN.id)) == before
    assert len(harness.sandbox.messages_to(BEN.id)) == ben_before
    assert [(await ticket_row(harness, t.id)).state for t in (first, second)] == [TicketState.WAITING] * 2
    assert not await rows(harness, Message, Message.author == Author.AGENT)


async def test_without_an_agents_list_members_of_the_chat_are_agents(make_harness) -> None:
    async with make_harness(agents=[]) as harness:
        _, topic = await escalate(harness)
        before = len(harness.sandbox.messages_to(ANN.id))
        agent_says(harness, topic, "Hello from a member", user=BRUNO)
        reply = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
        assert reply.plain_text == "Hello from a member"
        checks = harness.sandbox.calls_to("getChatMember")
        assert any(c.params["user_id"] == BRUNO.id for c in checks)


async def test_a_deleted_topic_is_recreated_with_the_card(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    harness.sandbox.delete_topic(harness.forum.id, topic)
    harness.sandbox.send_message(chat=ANN.id, user=ANN, text="Hello? Anyone there?")
    new_topic = await eventually(lambda: _moved(harness, ticket.id, topic))
    relayed = await harness.sandbox.wait_for_bot_message(harness.forum.id, thread_id=new_topic, after=2)
    assert relayed.plain_text == "Hello? Anyone there?"
    card, transcript = harness.in_topic(new_topic)[:2]
    assert card.pinned and card.plain_text.startswith(f"🎫 Ticket #{ticket.id}")
    assert transcript.document_name == f"ticket-{ticket.id}-transcript.txt"
    assert harness.sandbox.topics(harness.forum.id) == {
        new_topic: f"#{ticket.id} Ann Lee — What's the best pizza place in…"
    }
    assert (await ticket_row(harness, ticket.id)).card_message_id == card.message_id

    before = len(harness.sandbox.messages_to(ANN.id))
    agent_says(harness, new_topic, "Yes, I'm here.")
    assert (await harness.sandbox.wait_for_bot_message(ANN.id, after=before)).plain_text == "Yes, I'm here."


async def _moved(harness: BotHarness, ticket_id: int, old: int) -> int | None:
    ticket = await ticket_row(harness, ticket_id)
    return ticket.topic_id if ticket.topic_id != old and ticket.card_message_id else None


async def test_thirty_messages_in_ten_seconds_reach_the_topic_in_order_without_429s(make_harness) -> None:
    # Telegram's 20 messages a minute into a group, thirty times faster: 2 per second
    pacing = Pacing(group_interval=0.05, group_limit=4, window=2.0, private_interval=0.05, backoff=0.1)
    async with make_harness(pacing=pacing) as harness:
        ticket, topic = await escalate(harness)
        sandbox = harness.sandbox
        before = len(sandbox.messages_to(ANN.id))
        first_call = len(sandbox.calls)
        started = time.monotonic()
        for number in range(1, 31):
            if number in (11, 21):  # Telegram says "slow down": the next call into the group gets a 429
                sandbox.fail_next("*", error_code=429, retry_after=1)
            sandbox.send_message(chat=ANN.id, user=ANN, text=f"message {number:02d}")
            await _sleep(0.1)
        sent_in = time.monotonic() - started
        assert sent_in < 10

        async def all_there() -> list[int]:
            texts = " ".join(m.plain_text or "" for m in harness.in_topic(topic)[1:])
            found = [int(n) for n in re.findall(r"message (\d\d)", texts)]
            return found if len(found) == 30 else []

        assert await eventually(all_there, within=30) == list(range(1, 31))
        took = time.monotonic() - started
        calls = sandbox.calls[first_call:]
        into_group = [
            c for c in calls if c.chat_id == harness.forum.id and c.method in ("sendMessage", "copyMessage")
        ]
        failed = [c for c in into_group if not c.ok]
        assert [c.error_code for c in failed] == [429, 429]
        sent = [c.time for c in into_group if c.ok]
        assert len(sent) < 30  # coalesced while the queue was backed up
        for i, at in enumerate(sent):  # never more than the limit in any window
            assert sum(1 for t in sent[i:] if t - at < pacing.window - 0.05) <= pacing.group_limit
        journal = harness.dispatcher["journal"]  # retries live under the paced sender, per call
        assert journal.stats.retried_after_429 == len(failed) and journal.stats.failed == 0
        assert harness.desk.sender.stats.failed == 0
        assert not [
            c for c in calls if c.method == "sendMessage" and "went wrong" in c.params.get("text", "")
        ]
        await harness.settle()
        assert len(sandbox.messages_to(ANN.id)) == before  # nothing (no error) reached the customer

        async def all_recorded() -> list[Message]:
            found = await rows(
                harness, Message, Message.ticket_id == ticket.id, Message.author == Author.CUSTOMER
            )
            return found if len(found) == 30 and all(m.relay_message_id for m in found) else []

        assert len(await eventually(all_recorded)) == 30
        logging.getLogger(__name__).warning(
            "30 messages sent in %.1fs reached the topic in %.1fs as %d messages; %d 429s absorbed",
            sent_in, took, len(sent), len(failed),
        )  # fmt: skip


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


# -- bad input and the rest of the commands ----------------------------------------------------------


async def test_cancel_hands_back_to_the_bot(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    cancelled = await harness.say(ANN, "/cancel")
    assert f"cancelled request #{ticket.id}" in cancelled.plain_text
    ended = await ticket_row(harness, ticket.id)
    assert (ended.state, ended.outcome) == (TicketState.BOT, "cancelled")
    assert await eventually(lambda: _has_text(harness, topic, "cancelled the request"))
    answer = await harness.say(ANN, "How do I reset my password?")
    assert "Source: How do I reset my password?" in answer.plain_text
    nothing = await harness.say(ANN, "/cancel")
    assert "no open request to cancel" in nothing.plain_text


async def test_messages_in_general_or_a_closed_topic_are_not_lost(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    agent_says(harness, None, "Ann, your refund is done")  # in General by mistake
    [hint] = await harness.sandbox.wait_for(
        lambda c: c.method == "sendMessage" and "reach no customer" in c.params.get("text", "")
    )
    assert hint.params.get("message_thread_id") is None

    agent_says(harness, topic, "/close")
    await harness.sandbox.wait_for(lambda c: c.method == "closeForumTopic")
    before = len(harness.sandbox.messages_to(ANN.id))
    seen = topic_count(harness, topic)
    late = agent_says(harness, topic, "One more thing: keep the receipt")
    told = await next_in_topic(harness, topic, after=seen)
    assert "This ticket is closed, so your message did not reach the customer" in told.plain_text
    assert told.reply_to_message_id == late["message"]["message_id"]
    await harness.settle()
    assert len(harness.sandbox.messages_to(ANN.id)) == before
    [kept] = await rows(harness, Message, Message.decision == "undelivered")
    assert kept.text == "One more thing: keep the receipt" and kept.ticket_id == ticket.id

    agent_says(harness, topic, "/reopen")
    reopened = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert f"reopened request #{ticket.id}" in reopened.plain_text
    assert (await ticket_row(harness, ticket.id)).state is TicketState.ASSIGNED
    await harness.sandbox.wait_for(lambda c: c.method == "reopenForumTopic")
    agent_says(harness, topic, "Keep the receipt, please")
    assert (
        await harness.sandbox.wait_for_bot_message(ANN.id, after=before + 1)
    ).plain_text == "Keep the receipt, please"


async def test_a_customer_who_blocked_the_bot_and_a_deleted_message(harness: BotHarness) -> None:
    _, topic = await escalate(harness)
    seen = topic_count(harness, topic)
    asked = harness.sandbox.send_message(chat=ANN.id, user=ANN, text="never mind")
    copy = await next_in_topic(harness, topic, after=seen)
    harness.sandbox.delete_message(chat=ANN.id, message_id=asked["message"]["message_id"])
    before = len(harness.sandbox.messages_to(ANN.id))
    agent_says(harness, topic, "Noted!", reply_to_message_id=copy.message_id)
    delivered = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert delivered.plain_text == "Noted!" and delivered.reply_to_message_id is None

    # deleted before it could be copied: the agents are told
    harness.sandbox.fail_next("copyMessage", error_code=429, retry_after=1)
    gone = harness.sandbox.send_message(chat=ANN.id, user=ANN, text="oops, wrong chat")
    await harness.sandbox.wait_for(lambda c: c.method == "copyMessage" and c.error_code == 429, since=0)
    harness.sandbox.delete_message(chat=ANN.id, message_id=gone["message"]["message_id"])
    assert await eventually(lambda: _has_text(harness, topic, "customer deleted a message"), within=6)

    harness.sandbox.block(ANN.id)
    seen = topic_count(harness, topic)
    agent_says(harness, topic, "Are you still there?")
    warning = await next_in_topic(harness, topic, after=seen)
    assert "blocked the bot" in warning.plain_text


async def test_edits_and_albums_are_relayed(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness)
    before = len(harness.sandbox.messages_to(ANN.id))
    sent = agent_says(harness, topic, "Your refund is 10 EUR")
    reply = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    await eventually(lambda: rows(harness, Message, Message.author == Author.AGENT))
    harness.sandbox.edit_message(
        chat=harness.forum,
        user=harness.agent,
        message_id=sent["message"]["message_id"],
        text="Your refund is 12 EUR",
    )
    await harness.sandbox.wait_for(lambda c: c.method == "editMessageText" and c.chat_id == ANN.id)
    edited = harness.sandbox.message(ANN.id, reply.message_id)
    assert edited.plain_text == "Your refund is 12 EUR" and edited.edit_count == 1
    [row] = await eventually(
        lambda: rows(
            harness, Message, Message.author == Author.AGENT, Message.text == "Your refund is 12 EUR"
        )
    )
    assert row.ticket_id == ticket.id

    seen = topic_count(harness, topic)
    harness.sandbox.send_album(chat=ANN.id, user=ANN, photos=3, caption="the damage")
    await harness.sandbox.wait_for_bot_message(harness.forum.id, thread_id=topic, after=seen + 2)
    album = harness.in_topic(topic)[seen : seen + 3]
    assert [m.content_type for m in album] == ["photo"] * 3
    assert len({m.raw["media_group_id"] for m in album}) == 1 and album[0].plain_caption == "the damage"
    [copies] = harness.sandbox.calls_to("copyMessages")
    assert len(copies.params["message_ids"]) == 3

    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.send_album(chat=harness.forum, user=harness.agent, photos=2, message_thread_id=topic)
    await harness.sandbox.wait_for_bot_message(ANN.id, after=before + 1)
    got = harness.sandbox.messages_to(ANN.id)[before:]
    assert [m.content_type for m in got] == ["photo", "photo"] and got[0].raw["media_group_id"] == got[1].raw[
        "media_group_id"
    ]


async def test_suggest_sends_a_kb_answer_and_faq_saves_a_suggestion(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness, question="I forgot my password and can't get in")
    seen = topic_count(harness, topic)
    agent_says(harness, topic, "/suggest")
    offer = await next_in_topic(harness, topic, after=seen)
    assert "Best KB answers for “I forgot my password and can't get in”" in offer.plain_text
    assert "1. How do I reset my password? · v1 · score 0." in offer.plain_text
    assert offer.buttons[0][0] == "📨 Send 1"

    before = len(harness.sandbox.messages_to(ANN.id))
    harness.sandbox.press_button(
        chat=harness.forum, user=harness.agent, message_id=offer.message_id, button_text="📨 Send 1"
    )
    answer = await harness.sandbox.wait_for_bot_message(ANN.id, after=before)
    assert "Forgot password?" in answer.plain_text
    assert answer.plain_text.rstrip().endswith("Source: How do I reset my password?")
    [sent] = await eventually(lambda: rows(harness, Message, Message.decision == "agent_kb"))
    assert sent.author is Author.AGENT and sent.version_id is not None and sent.agent_id == harness.agent.id
    assert await eventually(lambda: _has_text(harness, topic, "sent “How do I reset my password?” (v1)"))

    # /faq typed right after the answer, while it is still on its way to the customer (it is
    # stored once delivered): the suggestion still takes that answer, not "nothing to save"
    agent_says(harness, topic, "If the link doesn't arrive, check your spam folder.")
    agent_says(harness, topic, "/faq")
    [suggestion] = await eventually(lambda: rows(harness, Suggestion))
    assert suggestion.question == "I forgot my password and can't get in"
    assert suggestion.answer == "If the link doesn't arrive, check your spam folder."
    assert (suggestion.ticket_id, suggestion.agent_id, suggestion.status) == (
        ticket.id,
        harness.agent.id,
        SuggestionStatus.PENDING,
    )
    assert suggestion.customer_id == ticket.customer_id
    assert await eventually(lambda: _has_text(harness, topic, f"Saved as FAQ suggestion #{suggestion.id}"))


async def test_a_chat_that_is_not_a_forum_is_a_clear_error_and_tickets_are_kept(make_harness, caplog) -> None:
    caplog.set_level(logging.INFO)
    plain = Chat(id=-1002000000002, type="supergroup", title="Support team")
    async with make_harness(forum=plain) as harness:
        assert any("is not a forum" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
        await harness.say(ANN, PIZZA)
        ack = await harness.say(ANN, "/human")
        assert "They will reply here, in this chat" in ack.plain_text
        [ticket] = await eventually(lambda: rows(harness, Ticket))
        harness.sandbox.send_message(chat=ANN.id, user=ANN, text="still waiting")
        await eventually(lambda: rows(harness, Message, Message.ticket_id == ticket.id))
        assert (await ticket_row(harness, ticket.id)).topic_id is None
        assert not harness.sandbox.calls_to("createForumTopic")


async def test_a_bot_without_the_manage_topics_right_is_a_clear_error(make_harness, caplog) -> None:
    caplog.set_level(logging.INFO)

    def no_rights(sandbox) -> None:
        sandbox.set_bot_rights(-1001000000001, can_manage_topics=False)

    async with make_harness(prepare=no_rights) as harness:
        assert any(
            "'Manage topics' right" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
        )
        ack = await harness.say(ANN, "/human")
        assert "request #1" in ack.plain_text
        [ticket] = await eventually(lambda: rows(harness, Ticket))
        assert ticket.state is TicketState.WAITING and ticket.topic_id is None
        harness.sandbox.send_message(chat=ANN.id, user=ANN, text="My card was charged twice")
        await eventually(lambda: rows(harness, Message, Message.ticket_id == ticket.id))

        harness.sandbox.set_bot_rights(harness.forum.id)  # an admin fixes the rights
        harness.desk.forum_retry = 0  # instead of waiting a minute
        harness.sandbox.send_message(chat=ANN.id, user=ANN, text="Hello?")
        topic = await harness.topic_of(ticket.id)
        card, transcript = await eventually(lambda: _first_two(harness, topic))
        assert card.pinned and "Ann Lee: My card was charged twice" in card.plain_text
        assert "My card was charged twice" in transcript.document_bytes.decode()
        assert await eventually(lambda: _has_text(harness, topic, "Hello?"))


async def _first_two(harness: BotHarness, topic: int):
    """The card and the transcript, once both are posted (the card is pinned before the file)."""
    posted = harness.in_topic(topic)
    return posted[:2] if len(posted) >= 2 else None


async def test_outside_business_hours_the_customer_learns_when_to_expect_a_reply(make_harness) -> None:
    opens = (datetime.now(UTC) + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[opens.weekday()]
    hours = f"{day} {opens:%H}:00-{opens.hour + 1:02d}:00 UTC"
    async with make_harness(helpdesk={"business_hours": hours}) as harness:
        ack = await harness.say(ANN, "/human")
        assert "Our team is away right now" in ack.plain_text
        assert f"at {opens:%H}:00 (UTC time)" in ack.plain_text
        assert re.search(r"in about [23] hours", ack.plain_text)


async def test_without_an_agents_chat_nobody_is_offered(make_harness) -> None:
    async with make_harness(forum=False) as harness:
        reply = await harness.say(ANN, PIZZA)
        assert reply.buttons == [] and "try asking in other words" in reply.plain_text
        answer = await harness.say(ANN, "/human")
        assert "no one from our team I can pass you to" in answer.plain_text
        assert not await rows(harness, Ticket)
