"""Delivery guarantees in one process: the inbox, the journal of calls, faults from the sandbox.

Crash-and-restart with a real subprocess is in tests/test_crash.py; webhook mode and replicas in
tests/test_webhook.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from datetime import UTC, datetime

import pytest
from aiogram import Bot
from aiogram.methods import SendMessage
from aiogram.types import Chat, Message
from prometheus_client import REGISTRY
from sqlalchemy import delete, select, update

from bot.delivery import _SCOPE, Journal, UpdateScope
from bot.sandbox import User
from kb.models import InboxState, InboxUpdate, OutboxCall, OutboxState
from tests.conftest import EXAMPLE_FAQ, eventually, running_bot

QUESTIONS = re.findall(r"^### (.+\?)$", EXAMPLE_FAQ.read_text(encoding="utf-8"), flags=re.MULTILINE)


def calm(settings):
    """No flood control in the way of a deliberate burst."""
    return settings.model_copy(
        update={
            "security": settings.security.model_copy(update={"flood_burst": 1000, "flood_per_minute": 6000})
        }
    )


async def inbox_rows(services) -> dict[int, InboxUpdate]:
    async with services.sessions() as session:
        return {row.update_id: row for row in await session.scalars(select(InboxUpdate))}


async def test_an_update_is_stored_processed_and_its_reply_journaled(settings, encoder) -> None:
    def processed() -> float:
        return REGISTRY.get_sample_value("helpdesk_updates_processed_total", {"outcome": "done"}) or 0.0

    before = processed()
    async with running_bot(settings, encoder, forum=False) as harness:
        ann = User(501, "Ann")
        sent = harness.sandbox.send_message(chat=ann.id, user=ann, text=QUESTIONS[0])
        reply = await harness.say(ann, QUESTIONS[1])
        assert reply.text

        async def both_done():
            rows = await inbox_rows(harness.services)
            done = [rows.get(sent["update_id"]), rows.get(sent["update_id"] + 1)]
            return all(row is not None and row.state == InboxState.DONE for row in done) and rows

        rows = await eventually(both_done)
        assert rows[sent["update_id"]].payload is None  # the text is not kept once processed
        async with harness.services.sessions() as session:
            calls = list(await session.scalars(select(OutboxCall).where(OutboxCall.chat_id == ann.id)))
        assert [(c.method, c.state) for c in calls] == [("sendMessage", OutboxState.SENT)] * 2
        assert {c.update_id for c in calls} == {sent["update_id"], sent["update_id"] + 1}
        assert processed() - before == 2


async def test_settling_waits_for_a_bot_that_thinks_longer_than_a_quiet_spell(settings, encoder) -> None:
    """The tests' ``harness.settle``: a quiet sandbox is not yet a bot that is done. With every
    search taking a second, a 0.3 s quiet spell comes before the answer; settling waits for it."""
    async with running_bot(settings, encoder, forum=False) as harness:
        kb = harness.services.kb
        search = kb.search

        async def slow(*args, **kwargs):
            await asyncio.sleep(1.0)
            return await search(*args, **kwargs)

        kb.search = slow  # type: ignore[method-assign]
        ann = User(509, "Ann")
        harness.sandbox.send_message(chat=ann.id, user=ann, text=QUESTIONS[0])
        await harness.sandbox.wait_idle(quiet=0.3)
        assert harness.sandbox.messages_to(ann.id) == []  # taken, quiet, and not answered yet
        await harness.settle(quiet=0.3)
        assert len(harness.sandbox.messages_to(ann.id)) == 1


async def test_processing_an_update_again_sends_nothing_twice(settings, encoder) -> None:
    """As after a crash between the reply and the 'done' mark: the update is processed again
    and its reply comes from the journal, not from Telegram a second time."""
    async with running_bot(settings, encoder, forum=False) as harness:
        ann = User(502, "Ann")
        await harness.say(ann, QUESTIONS[2])
        await harness.sandbox.wait_idle()
        rows = await inbox_rows(harness.services)
        (update_id,) = [uid for uid, row in rows.items() if row.state == InboxState.DONE]
        payload = harness.sandbox.updates[-1]
        assert payload["update_id"] == update_id
        async with harness.services.sessions() as session, session.begin():
            await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id == update_id)
                .values(state=InboxState.PENDING, payload=json.dumps(payload))
            )
        inbox = harness.dispatcher["inbox"]
        assert await inbox.claim_due() == 1
        await inbox.wait_idle()
        await harness.sandbox.wait_idle()
        assert len(harness.sandbox.messages_to(ann.id)) == 1
        assert harness.dispatcher["journal"].stats.replayed == 1
        rows = await inbox_rows(harness.services)
        assert rows[update_id].state == InboxState.DONE and rows[update_id].attempts == 2


async def test_a_transient_failure_is_retried_later_without_an_apology(settings, encoder) -> None:
    """Telegram down for longer than the call's own retries: the update is handled again after a
    pause (its row counts the attempt); the customer gets the answer, not the error text."""
    async with running_bot(settings, encoder, forum=False) as harness:
        ann = User(503, "Ann")
        retries = harness.services.settings.delivery.send_retries
        harness.sandbox.fail_next("sendMessage", error_code=502, times=retries + 1)
        reply = await harness.say(ann, QUESTIONS[3])
        await harness.sandbox.wait_idle(quiet=0.5)
        texts = [m.text for m in harness.sandbox.messages_to(ann.id)]
        assert texts == [reply.text] and "went wrong" not in reply.text.lower()
        rows = await inbox_rows(harness.services)
        assert [row.attempts for row in rows.values()] == [2]


async def test_a_chats_later_message_waits_for_an_earlier_one_handled_again(settings, encoder) -> None:
    """Two questions at once; the first answer's send fails past its retries. The second
    question is not answered before the first one's retry: the answers come in order."""
    async with running_bot(settings, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        ann = User(507, "Ann")
        first, second = QUESTIONS[1], QUESTIONS[2]
        expected = [(await harness.say(User(508, "Ref"), q)).text for q in (first, second)]
        assert expected[0] != expected[1], "pick questions with distinct answers"
        retries = harness.services.settings.delivery.send_retries
        sandbox.fail_next("sendMessage", error_code=500, times=retries + 1)
        sandbox.send_message(chat=ann.id, user=ann, text=first)
        sandbox.send_message(chat=ann.id, user=ann, text=second)

        async def answered():
            return len(sandbox.messages_to(ann.id)) >= 2

        await eventually(answered, within=30, interval=0.1)
        await sandbox.wait_idle(quiet=0.5)
        assert [m.text for m in sandbox.messages_to(ann.id)] == expected
        assert len(sandbox.calls_to("sendMessage", ok=False)) == retries + 1
        rows = sorted((await inbox_rows(harness.services)).items())[-2:]
        assert [(row.state, row.attempts) for _, row in rows] == [(InboxState.DONE, 2), (InboxState.DONE, 1)]


async def test_a_permanent_error_is_recorded_and_not_retried(settings, encoder) -> None:
    async with running_bot(settings, encoder, forum=False) as harness:
        ann = User(504, "Ann")
        harness.sandbox.block(ann.id)
        harness.sandbox.send_message(chat=ann.id, user=ann, text=QUESTIONS[0])
        await harness.sandbox.wait_idle(quiet=0.5)

        async def failed_call():
            async with harness.services.sessions() as session:
                calls = (await session.scalars(select(OutboxCall).where(OutboxCall.chat_id == ann.id))).all()
                return calls if calls and calls[0].state == OutboxState.FAILED else None

        calls = await eventually(failed_call)
        assert [c.state for c in calls] == [OutboxState.FAILED]
        assert "Forbidden" in (calls[0].error or "")
        assert len(harness.sandbox.calls_to("sendMessage", ok=False)) == 1  # tried once: no retry loop


@pytest.mark.slow
async def test_a_thousand_messages_through_failing_sends_are_answered_exactly_once(settings, encoder) -> None:
    """The issue's fault test: 100 customers x 10 questions, 10% of the bot's calls fail with 429
    or 500 and 1% of its connections drop; every question gets exactly one answer, in order."""
    async with running_bot(calm(settings), encoder, forum=False) as harness:
        sandbox = harness.sandbox
        asked = 10
        questions = QUESTIONS[:asked]
        # the answers without faults, asked by one customer first: the reference
        reference = [(await harness.say(User(9_999, "Ref"), question)).text for question in questions]
        assert len(set(reference)) == asked, "pick questions with distinct answers"

        sandbox.chaos(failures=0.10, drops=0.01, seed=6)
        customers = [User(10_000 + n, f"Customer{n}") for n in range(100)]
        for turn in range(asked):
            for n, customer in enumerate(customers):
                question = questions[(n + turn) % asked]
                sandbox.send_message(chat=customer.id, user=customer, text=question)

        async def all_answered():
            return all(len(sandbox.messages_to(c.id)) >= asked for c in customers)

        await eventually(all_answered, within=300, interval=0.5)
        await sandbox.wait_idle(quiet=1.5, timeout=60)
        sandbox.chaos(failures=0, drops=0)

        counts = Counter(len(sandbox.messages_to(c.id)) for c in customers)
        assert counts == {asked: len(customers)}, f"replies per customer: {counts}"
        for n, customer in enumerate(customers):
            got = [m.text for m in sandbox.messages_to(customer.id)]
            assert got == [reference[(n + turn) % asked] for turn in range(asked)], customer
        failed = [c for c in sandbox.calls if not c.ok and c.method != "getUpdates"]
        assert len(failed) > 50, "the chaos was not on"
        assert {c.error_code for c in failed} <= {0, 429, 500}  # 0: a dropped connection
        rows = await inbox_rows(harness.services)
        assert len(rows) == asked * (len(customers) + 1)
        assert {row.state for row in rows.values()} == {InboxState.DONE}


async def test_stopping_leaves_unfinished_updates_for_the_next_start(settings, encoder) -> None:
    """A stop while a reply is held at Telegram: the update stays in the inbox and the next start
    answers it, once."""
    settings = settings.model_copy(
        update={"delivery": settings.delivery.model_copy(update={"stop_timeout": 0.5})}
    )
    ann = User(505, "Ann")
    async with running_bot(settings, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        held = sandbox.stall("sendMessage")
        sandbox.send_message(chat=ann.id, user=ann, text=QUESTIONS[4])
        await asyncio.wait_for(held.reached.wait(), 20)
        harness.dispatcher["stop"].set()
        await asyncio.sleep(1.0)  # the stop gives up on the held call after stop_timeout
        held.release.set()
        rows = await inbox_rows(harness.services)
        assert [row.state for row in rows.values()] == [InboxState.PROCESSING]
        assert sandbox.messages_to(ann.id) == []
        # the next start, same database, same sandbox
        from bot.app import build_bot, polling
        from bot.pacing import Pacing

        bot = build_bot(harness.services.settings)
        try:
            async with polling(harness.services, bot, pacing=Pacing.fast()):
                await sandbox.wait_for_bot_message(ann.id)
                await sandbox.wait_idle(quiet=0.5)
        finally:
            await bot.session.close()
        assert len(sandbox.messages_to(ann.id)) == 1


async def test_a_call_whose_journal_entry_is_erased_in_flight_does_not_come_back(services) -> None:
    """/forget in one update deletes the journal entries of a chat while another update's reply
    into that chat is in flight: the reply's "sent" must not write the entry again."""
    chat = 880_000_001
    journal = Journal(services.sessions)

    async def rows() -> list[tuple[str, OutboxState]]:
        async with services.sessions() as session:
            found = await session.execute(
                select(OutboxCall.key, OutboxCall.state).where(OutboxCall.chat_id == chat)
            )
            return [tuple(row) for row in found]

    async def erased_while_sending(bot, method):
        assert await rows() == [(f"7:sendMessage:{chat}:1", OutboxState.SENDING)]
        async with services.sessions() as session, session.begin():
            await session.execute(delete(OutboxCall).where(OutboxCall.chat_id == chat))
        return Message(message_id=5, date=datetime.now(UTC), chat=Chat(id=chat, type="private"))

    async def delivered(bot, method):
        return Message(message_id=6, date=datetime.now(UTC), chat=Chat(id=chat, type="private"))

    bot = Bot("42:TEST")
    try:
        token = _SCOPE.set(UpdateScope(7))
        try:
            await journal(erased_while_sending, bot, SendMessage(chat_id=chat, text="hi"))
            assert await rows() == []
            # the next call into the chat is journaled as before, from "sending" to "sent"
            await journal(delivered, bot, SendMessage(chat_id=chat, text="again"))
        finally:
            _SCOPE.reset(token)
        assert await rows() == [(f"7:sendMessage:{chat}:2", OutboxState.SENT)]
    finally:
        await bot.session.close()


async def test_a_restart_takes_back_everything_it_held_page_by_page_in_order(settings, encoder) -> None:
    """A crash can leave hundreds of updates claimed by this replica: the next start takes back
    all of them (page after page, here pages of 2), and each chat is answered in order."""
    ann = User(506, "Ann")
    asked = QUESTIONS[:5]
    async with running_bot(settings, encoder, forum=False) as harness:
        inbox = harness.dispatcher["inbox"]
        await harness.say(ann, "Hello")  # the sandbox knows the chat
        before = len(harness.sandbox.messages_to(ann.id))
        now = datetime.now(UTC)
        async with harness.services.sessions() as session, session.begin():
            for n, question in enumerate(asked):
                update_id = 900_000 + n
                message = {
                    "message_id": 10 + n,
                    "date": int(now.timestamp()),
                    "chat": {"id": ann.id, "type": "private", "first_name": ann.first_name},
                    "from": {"id": ann.id, "is_bot": False, "first_name": ann.first_name},
                    "text": question,
                }
                session.add(
                    InboxUpdate(
                        update_id=update_id,
                        payload=json.dumps({"update_id": update_id, "message": message}),
                        state=InboxState.PROCESSING,
                        attempts=1,
                        owner=inbox.owner,
                        lease_until=now.replace(year=now.year + 1),
                        next_try_at=now,
                        received_at=now,
                    )
                )
        assert await inbox.claim_due(recovering=True, page=2) == len(asked)
        await eventually(lambda: _count_at_least(harness, ann.id, before + len(asked)), within=20)
        reference = [await harness.say(User(507 + n, "Ref"), question) for n, question in enumerate(asked)]
        assert [m.text for m in harness.sandbox.messages_to(ann.id)[before:]] == [r.text for r in reference]
        rows = await inbox_rows(harness.services)
        assert all(rows[900_000 + n].state == InboxState.DONE for n in range(len(asked)))


async def _count_at_least(harness, chat: int, count: int) -> bool:
    return len(harness.sandbox.messages_to(chat)) >= count


async def test_polling_fetches_no_more_while_max_inflight_updates_are_handled(settings, encoder) -> None:
    """A backlog (after downtime) is taken in steps: with ``delivery.max_inflight`` updates being
    handled, new ones wait at Telegram, unconfirmed, and are fetched as room frees up."""
    settings = settings.model_copy(
        update={"delivery": settings.delivery.model_copy(update={"max_inflight": 1})}
    )
    people = [User(510 + n, f"Customer{n}") for n in range(4)]
    async with running_bot(settings, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        held = sandbox.stall("sendMessage")
        sandbox.send_message(chat=people[0].id, user=people[0], text=QUESTIONS[0])
        await asyncio.wait_for(held.reached.wait(), 20)
        for n, person in enumerate(people[1:], start=1):
            sandbox.send_message(chat=person.id, user=person, text=QUESTIONS[n])
        await asyncio.sleep(0.5)
        assert len(await inbox_rows(harness.services)) == 1  # the three others wait at Telegram
        held.release.set()
        for person in people:
            await sandbox.wait_for_bot_message(person.id)
        rows = await eventually(
            lambda: _all_done(harness.services, 4),
        )
        assert len(rows) == 4


async def _all_done(services, count: int):
    rows = await inbox_rows(services)
    return rows if len(rows) == count and all(r.state == InboxState.DONE for r in rows.values()) else None
