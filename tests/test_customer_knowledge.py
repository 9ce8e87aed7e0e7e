"""Customer knowledge in Telegram: agents' /profile, /tag, /note and /stats; editors reviewing
FAQ suggestions with Approve / Edit / Reject, and the bot answering from them at once.

The real dispatcher long-polls the sandbox Bot API over HTTP; assertions are on the Bot API calls
and on the rows written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.keyboards import ReviewCb
from bot.sandbox import Chat, User
from kb.models import AuditEntry, Customer, Suggestion, SuggestionStatus
from tests.conftest import BotHarness, eventually, make_settings, running_bot
from tests.test_handover import agent_says, escalate, next_in_topic, rows, topic_count

ANN = User(501, "Ann", "Lee", username="ann_l", language_code="en")
BEN = User(502, "Ben", language_code="en")
EDITOR = User(900, "Erin", "Editor", language_code="en")
MALLORY = User(950, "Mallory", username="mallory")
OFFICE = "Do you have an office in Reykjavik that I can visit?"
OFFICE_ANSWER = "Yes: our Reykjavik office at Laugavegur 1 welcomes visitors on weekdays from 9 to 17."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = make_settings(tmp_path)
    return base.model_copy(update={"telegram": base.telegram.model_copy(update={"editors": [EDITOR.id]})})


@pytest.fixture
async def harness(settings: Settings, encoder) -> AsyncIterator[BotHarness]:
    """The standard harness; the editor has started a chat with the bot (else it cannot write)."""
    async with running_bot(
        settings, encoder, prepare=lambda sb: sb.add_chat(Chat.private(EDITOR))
    ) as running:
        yield running


async def _topic_text(harness: BotHarness, topic: int, needle: str, *, exact: bool = False):
    async def found():
        return next(
            (
                m
                for m in harness.in_topic(topic)
                if (needle == m.plain_text if exact else needle in (m.plain_text or ""))
            ),
            None,
        )

    return await eventually(found)


async def _editor_message(harness: BotHarness, needle: str, *, within: float = 10.0):
    async def found():
        return next(
            (m for m in harness.sandbox.messages_to(EDITOR.id) if needle in (m.plain_text or "")), None
        )

    return await eventually(found, within=within)


# -- agents: /profile, /tag, /note, /stats ------------------------------------------------------------


async def test_agents_tag_note_and_read_the_profile(harness: BotHarness) -> None:
    ticket, topic = await escalate(harness, ANN)
    agent_says(harness, topic, "/tag vip #Billing")
    await _topic_text(harness, topic, "Tags on the customer's profile: vip, billing")
    [customer] = await rows(harness, Customer, Customer.telegram_id == ANN.id)
    assert customer.tags == ["vip", "billing"]

    async def card_has_tags():
        card = harness.sandbox.message(harness.forum.id, ticket.card_message_id)
        return "Tags: vip, billing" in (card.plain_text or "")

    assert await eventually(card_has_tags)  # the pinned card shows them

    agent_says(harness, topic, "/note Prefers e-mail; call only after 17:00")
    await _topic_text(harness, topic, "Note saved on the ticket and the customer's profile")
    agent_says(harness, topic, "// just between us: second pizza question this week")
    [customer] = await eventually(
        lambda: rows(harness, Customer, Customer.telegram_id == ANN.id, Customer.notes != "")
    )
    assert customer.notes.endswith("Alice Smith (@alice_agent): Prefers e-mail; call only after 17:00")
    assert "second pizza" not in customer.notes  # a // note stays in the ticket only

    agent_says(harness, topic, "/tag -billing")
    await _topic_text(harness, topic, "🏷 Tags on the customer's profile: vip", exact=True)

    before = topic_count(harness, topic)
    agent_says(harness, topic, "/profile")
    profile = await next_in_topic(harness, topic, before)
    text = profile.plain_text
    assert text.startswith("👤 Ann Lee · @ann_l · id 501 · language en")
    assert "Tags: vip" in text and "billing" not in text.split("Tags:")[1].split("\n")[0]
    assert "1 ticket(s)" in text and f"#{ticket.id}" in text and "open" in text
    assert "Prefers e-mail; call only after 17:00" in text and "CSAT: no ratings yet" in text

    actions = [(e.actor, e.action) for e in await rows(harness, AuditEntry)]
    assert actions == [
        ("agent:7001", "tagged"),
        ("agent:7001", "noted"),
        ("agent:7001", "tagged"),
        ("agent:7001", "profile_viewed"),
    ]


async def test_only_agents_see_profiles_and_stats(harness: BotHarness) -> None:
    _, topic = await escalate(harness, ANN)
    before = topic_count(harness, topic)
    agent_says(harness, topic, "/profile", user=MALLORY)  # a member, not in telegram.agents
    refused = await next_in_topic(harness, topic, before)
    assert "Only agents" in refused.plain_text
    agent_says(harness, None, "/stats", user=MALLORY)
    agent_says(harness, topic, "/tag spy", user=MALLORY)
    agent_says(harness, None, "/stats")  # the agent's, answered

    async def stats():
        return [
            m
            for m in harness.sandbox.messages_to(harness.forum.id)
            if "Service figures" in (m.plain_text or "")
        ]

    [answer] = await eventually(stats)
    assert answer.thread_id is None and answer.plain_text.startswith("📊 Service figures")
    await harness.settle()
    assert len(await stats()) == 1
    [customer] = await rows(harness, Customer, Customer.telegram_id == ANN.id)
    assert customer.tags == []


async def test_stats_in_the_agents_chat_give_7_and_30_days(harness: BotHarness) -> None:
    await harness.say(BEN, "How do I reset my password?")
    ticket, topic = await escalate(harness, ANN)
    agent_says(harness, topic, "Hello Ann, Alice here.")
    await harness.sandbox.wait_for(lambda c: c.method == "copyMessage" and c.params["chat_id"] == ANN.id)
    await eventually(lambda: _first_response(harness, ticket.id))
    await harness.settle()  # the card refresh after the first response comes first
    before = topic_count(harness, topic)
    agent_says(harness, topic, "/stats")  # in a topic too; nothing reaches the customer
    stats = await next_in_topic(harness, topic, before)
    text = stats.plain_text
    assert "Last 7 days: 2 conversations, 1 tickets" in text
    assert "Last 30 days: 2 conversations, 1 tickets" in text
    assert "self-service 50% · escalation 50%" in text and "first response: median" in text
    assert all("Service figures" not in (m.plain_text or "") for m in harness.sandbox.messages_to(ANN.id))


async def _first_response(harness: BotHarness, ticket_id: int):
    from kb.models import Ticket

    async with harness.services.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        return ticket.first_response_at


async def test_stats_over_an_empty_database_say_so(make_harness) -> None:
    async with make_harness() as harness:
        agent_says(harness, None, "/stats")
        stats = await harness.sandbox.wait_for_bot_message(harness.forum.id, after=0)
        assert "No conversations in the last 7 days yet." in stats.plain_text
        assert "No conversations in the last 30 days yet." in stats.plain_text


# -- editors in Telegram --------------------------------------------------------------------------------


async def test_the_knowledge_loop_from_a_ticket_to_an_answer_for_the_next_customer(
    harness: BotHarness,
) -> None:
    """Unanswered, escalated, answered by an agent, saved with /faq, approved by an editor in
    Telegram, then answered by the bot for another customer asking in other words; no restart."""
    first = await harness.say(ANN, OFFICE)
    assert "I don't have an answer to that yet" in first.plain_text
    ticket, topic = await escalate(harness, ANN, OFFICE)
    agent_says(harness, topic, OFFICE_ANSWER)
    await harness.sandbox.wait_for(lambda c: c.method == "copyMessage" and c.params["chat_id"] == ANN.id)
    await eventually(lambda: _first_response(harness, ticket.id))
    agent_says(harness, topic, "/faq")
    [suggestion] = await eventually(lambda: rows(harness, Suggestion))

    review = await _editor_message(harness, f"FAQ suggestion #{suggestion.id}")
    assert f"from ticket #{ticket.id}" in review.plain_text and OFFICE in review.plain_text
    assert review.buttons == [["✅ Approve", "✏️ Edit", "❌ Reject"]]
    assert review.button_data[0] == ReviewCb(action="approve", suggestion=suggestion.id).pack()
    [announced] = await rows(harness, Suggestion)
    assert announced.announced_at is not None

    harness.sandbox.press_button(
        chat=EDITOR.id, user=EDITOR, message_id=review.message_id, button_text="✅ Approve"
    )

    async def approved():
        message = harness.sandbox.message(EDITOR.id, review.message_id)
        return message if "Approved by Erin Editor" in (message.plain_text or "") else None

    done = await eventually(approved, within=20)
    assert done.buttons == [] and "created agents/do-you-have-an-office-in-reykjavik" in done.plain_text
    [row] = await rows(harness, Suggestion)
    assert row.status is SuggestionStatus.APPROVED

    answer = await harness.say(BEN, "can I visit your Reykjavik office?")
    assert "Laugavegur 1" in answer.plain_text, answer.plain_text
    assert len(harness.sandbox.messages_to(EDITOR.id)) == 1  # announced once


async def test_edit_asks_for_the_answer_and_approves_with_it(harness: BotHarness) -> None:
    async with harness.services.sessions() as session, session.begin():
        session.add(Suggestion(question=OFFICE, answer="Yes.", agent_id=0))
    review = await _editor_message(harness, "FAQ suggestion #1")
    assert "from the knowledge gaps" in review.plain_text  # made by `helpdesk gaps --suggest`

    harness.sandbox.press_button(
        chat=EDITOR.id, user=EDITOR, message_id=review.message_id, button_text="✏️ Edit"
    )
    prompt = await _editor_message(harness, "Send me the new answer for suggestion #1")
    assert OFFICE in prompt.plain_text
    reply = await harness.say(EDITOR, "/cancel")
    assert "Editing cancelled: suggestion #1 is still pending" in reply.plain_text
    [row] = await rows(harness, Suggestion)
    assert row.status is SuggestionStatus.PENDING

    harness.sandbox.press_button(
        chat=EDITOR.id, user=EDITOR, message_id=review.message_id, button_text="✏️ Edit"
    )
    await eventually(lambda: _count_editor(harness, "Send me the new answer", 2))
    done = await harness.say(EDITOR, OFFICE_ANSWER)
    assert "Approved by Erin Editor" in done.plain_text and "Laugavegur 1" in done.plain_text
    [row] = await rows(harness, Suggestion)
    assert row.status is SuggestionStatus.APPROVED
    from kb.models import ArticleVersion

    [version] = await rows(harness, ArticleVersion, ArticleVersion.source_anchor == "suggestion 1")
    assert (version.answer, version.author) == (OFFICE_ANSWER, "telegram:900 (Erin Editor)")
    assert "Laugavegur 1" in (await harness.say(BEN, "can I visit your Reykjavik office?")).plain_text


async def _count_editor(harness: BotHarness, needle: str, count: int) -> bool:
    return len([m for m in harness.sandbox.messages_to(EDITOR.id) if needle in (m.plain_text or "")]) >= count


async def test_reject_then_presses_on_a_closed_suggestion_and_strangers(harness: BotHarness) -> None:
    async with harness.services.sessions() as session, session.begin():
        session.add(Suggestion(question="Is there parking?", answer="No.", agent_id=0))
    review = await _editor_message(harness, "FAQ suggestion #1")
    stranger = harness.sandbox.press_button(
        chat=EDITOR.id, user=MALLORY, message_id=review.message_id, button_text="✅ Approve"
    )
    await harness.sandbox.wait_for(
        lambda c: (
            c.method == "answerCallbackQuery"
            and c.params["callback_query_id"] == stranger["callback_query"]["id"]
        )
    )
    [row] = await rows(harness, Suggestion)
    assert row.status is SuggestionStatus.PENDING
    [answer] = [
        c for c in harness.sandbox.calls_to("answerCallbackQuery")
        if c.params["callback_query_id"] == stranger["callback_query"]["id"]
    ]  # fmt: skip
    assert answer.params["text"] == "Only editors can review suggestions."

    harness.sandbox.press_button(
        chat=EDITOR.id, user=EDITOR, message_id=review.message_id, button_text="❌ Reject"
    )

    async def rejected():
        message = harness.sandbox.message(EDITOR.id, review.message_id)
        return "Rejected by Erin Editor" in (message.plain_text or "")

    assert await eventually(rejected)
    [row] = await rows(harness, Suggestion)
    assert row.status is SuggestionStatus.REJECTED
    # an old Approve press (the buttons are gone now): refused on the server
    late = harness.sandbox.press_button(
        chat=EDITOR.id,
        user=EDITOR,
        message_id=review.message_id,
        data=ReviewCb(action="approve", suggestion=row.id).pack(),
        strict=False,
    )
    await harness.sandbox.wait_for(
        lambda c: (
            c.method == "answerCallbackQuery"
            and c.params["callback_query_id"] == late["callback_query"]["id"]
        )
    )
    [toast] = [
        c for c in harness.sandbox.calls_to("answerCallbackQuery")
        if c.params["callback_query_id"] == late["callback_query"]["id"]
    ]  # fmt: skip
    assert toast.params["text"] == "Suggestion #1 is already rejected."
    [row] = await rows(harness, Suggestion)
    assert row.status is SuggestionStatus.REJECTED


async def test_suggestions_made_from_the_command_line_are_announced_once(harness: BotHarness) -> None:
    from kb.suggestions import suggest_from_gaps

    groups = [
        {"examples": ["Is there parking?"], "agent_answers": ["No, sorry."], "tickets": []},
        {"examples": ["Do you ship to Mars?"], "agent_answers": ["Not yet."], "tickets": []},
    ]
    created = await suggest_from_gaps(harness.services.sessions, groups)
    assert len(created) == 2
    await _editor_message(harness, "Do you ship to Mars?")
    await _editor_message(harness, "Is there parking?")
    assert await harness.dispatcher["reviews"].announce() == 0
    assert len(harness.sandbox.messages_to(EDITOR.id)) == 2
    announced = await rows(harness, Suggestion)
    assert all(s.announced_at is not None for s in announced)
    assert len(await eventually(lambda: _all_sent(harness))) == 2


async def _all_sent(harness: BotHarness):
    return [c for c in harness.sandbox.calls_to("sendMessage") if c.params["chat_id"] == EDITOR.id]
