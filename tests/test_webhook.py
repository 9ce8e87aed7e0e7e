"""Webhook mode: the sandbox posts updates to the bot's endpoint; the secret header is checked;
replicas sharing one database never process an update twice."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiogram.types import Update
from pydantic import SecretStr
from sqlalchemy import func, select

from bot.app import build_bot, polling
from bot.pacing import Pacing
from bot.runtime import open_services
from bot.sandbox import BotAPISandbox, Chat, User
from kb.models import InboxState, InboxUpdate
from tests.conftest import EXAMPLE_FAQ, eventually, running_bot
from tests.test_delivery import QUESTIONS

SECRET = "s3cret-webhook-token_0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_settings(settings, *, instance: str = "", index: str | None = None):
    port = free_port()
    telegram = settings.telegram.model_copy(
        update={
            "mode": "webhook",
            "webhook_url": f"http://127.0.0.1:{port}/telegram/hook",
            "webhook_listen": f"127.0.0.1:{port}",
            "webhook_secret": SecretStr(SECRET),
        }
    )
    update = {"telegram": telegram, "delivery": settings.delivery.model_copy(update={"instance": instance})}
    if index:
        update["kb"] = settings.kb.model_copy(update={"index_dir": index})
    return settings.model_copy(update=update)


async def post(url: str, payload: dict, *, secret: str | None) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    async with aiohttp.ClientSession() as client, client.post(url, json=payload, headers=headers) as response:
        return response.status


async def test_in_webhook_mode_telegram_posts_and_the_bot_answers(settings, encoder) -> None:
    live = webhook_settings(settings)
    async with running_bot(live, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        assert sandbox.webhook_url == live.telegram.webhook_url
        ann = User(601, "Ann")
        reply = await harness.say(ann, QUESTIONS[0])
        assert reply.text and sandbox.webhook_deliveries >= 1
        await sandbox.wait_idle()
        assert sandbox.pending_updates == 0  # answered 200: confirmed


async def test_a_webhook_request_waits_while_max_inflight_updates_are_handled(settings, encoder) -> None:
    """With ``max_inflight`` updates being handled, the next request is neither stored nor
    answered: Telegram keeps it until one is done. Nothing is lost."""
    live = webhook_settings(settings)
    live = live.model_copy(update={"delivery": live.delivery.model_copy(update={"max_inflight": 1})})
    async with running_bot(live, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        ann, bob = User(611, "Ann"), User(612, "Bob")
        held = sandbox.stall("sendMessage")
        sandbox.send_message(chat=ann.id, user=ann, text=QUESTIONS[0])
        await asyncio.wait_for(held.reached.wait(), 20)
        sandbox.send_message(chat=bob.id, user=bob, text=QUESTIONS[1])
        await asyncio.sleep(1.0)

        async def stored() -> int:
            async with harness.services.sessions() as session:
                return int(await session.scalar(select(func.count()).select_from(InboxUpdate)) or 0)

        assert await stored() == 1 and sandbox.pending_updates == 1  # Bob's waits at "Telegram"
        held.release.set()

        async def both_answered() -> bool:
            return bool(sandbox.messages_to(ann.id)) and bool(sandbox.messages_to(bob.id))

        await eventually(both_answered, within=20)
        await sandbox.wait_idle()
        assert await stored() == 2 and sandbox.pending_updates == 0


async def test_a_request_without_the_secret_gets_401_and_is_not_processed(settings, encoder) -> None:
    live = webhook_settings(settings)
    async with running_bot(live, encoder, forum=False) as harness:
        harness.sandbox.add_chat(Chat.private(User(602, "Mallory")))
        forged = {
            "update_id": 987654,
            "message": {
                "message_id": 1,
                "date": 1_700_000_000,
                "chat": {"id": 602, "type": "private", "first_name": "Mallory"},
                "from": {"id": 602, "is_bot": False, "first_name": "Mallory"},
                "text": QUESTIONS[0],
            },
        }
        url = live.telegram.webhook_url
        assert await post(url, forged, secret=None) == 401
        assert await post(url, forged, secret="wrong-secret-wrong-secret") == 401
        await asyncio.sleep(0.3)
        async with harness.services.sessions() as session:
            assert await session.get(InboxUpdate, 987654) is None
        assert harness.sandbox.calls_to("sendMessage") == []
        assert await post(url, forged, secret=SECRET) == 200  # the right secret: taken
        await harness.sandbox.wait_for_bot_message(602)


@contextlib.asynccontextmanager
async def replica(settings, encoder, sandbox: BotAPISandbox, name: str, tmp_path) -> AsyncIterator[str]:
    """One more bot process, as a replica would be: its own engine, index and webhook server,
    the same database; yields its webhook URL."""
    live = webhook_settings(settings, instance=name, index=str(tmp_path / f"index-{name}"))
    live = live.model_copy(
        update={
            "telegram": live.telegram.model_copy(
                update={"api_url": sandbox.url, "token": SecretStr(sandbox.token)}
            )
        }
    )
    async with open_services(live, encoder=encoder) as services:
        bot = build_bot(live)
        try:
            async with polling(services, bot, pacing=Pacing.fast()):
                yield live.telegram.webhook_url
        finally:
            await bot.session.close()


async def test_replicas_given_the_same_updates_answer_each_once(settings, encoder, tmp_path) -> None:
    """Telegram retries a webhook delivery that timed out, possibly onto another replica: each
    update is posted to both replicas at once, and to the one the sandbox knows; one answer."""
    live = webhook_settings(settings, instance="replica-a")
    async with running_bot(live, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        async with replica(settings, encoder, sandbox, "replica-b", tmp_path) as url_b:
            url_a = live.telegram.webhook_url
            customers = [User(700 + n, f"Customer{n}") for n in range(20)]
            for n, customer in enumerate(customers):
                update = sandbox.send_message(
                    chat=customer.id, user=customer, text=QUESTIONS[n % len(QUESTIONS)]
                )
                statuses = await asyncio.gather(
                    post(url_a, update, secret=SECRET), post(url_b, update, secret=SECRET)
                )
                assert statuses == [200, 200]

            async def all_answered():
                return all(sandbox.messages_to(c.id) for c in customers)

            await eventually(all_answered, within=60)
            await sandbox.wait_idle(quiet=1.0, timeout=30)
        assert [len(sandbox.messages_to(c.id)) for c in customers] == [1] * len(customers)
        async with harness.services.sessions() as session:
            done = await session.scalar(
                select(func.count()).select_from(InboxUpdate).where(InboxUpdate.state == InboxState.DONE)
            )
        assert done == len(customers)


async def test_an_update_left_by_a_dead_replica_is_taken_over_after_its_lease(
    settings, encoder, tmp_path
) -> None:
    """Replica A claims an update and dies holding it; replica B processes it once A's lease ran
    out."""
    from bot import delivery

    live = webhook_settings(settings, instance="replica-b")
    live = live.model_copy(
        update={"delivery": live.delivery.model_copy(update={"instance": "replica-b", "lease_seconds": 1.5})}
    )
    async with running_bot(live, encoder, forum=False) as harness:
        sandbox = harness.sandbox
        ann = User(801, "Ann")
        sandbox.add_chat(Chat.private(ann))
        update = {  # posted to replica A only, which stored it and died before processing it
            "update_id": 555_000,
            "message": {
                "message_id": 1,
                "date": 1_700_000_000,
                "chat": {"id": ann.id, "type": "private", "first_name": ann.first_name},
                "from": {"id": ann.id, "is_bot": False, "first_name": ann.first_name},
                "text": QUESTIONS[1],
            },
        }
        dead = delivery.Inbox(harness.services.sessions, harness.dispatcher, None, live.delivery)  # type: ignore[arg-type]
        dead.owner = "replica-a"
        dead._start = lambda *args, **kw: None  # type: ignore[method-assign]
        await dead.accept([Update.model_validate(update)])
        await sandbox.wait_for_bot_message(ann.id, timeout=30)
        await sandbox.wait_idle(quiet=0.5)
        assert len(sandbox.messages_to(ann.id)) == 1
        async with harness.services.sessions() as session:
            row = await session.get(InboxUpdate, 555_000)
        assert row is not None and row.state == InboxState.DONE and row.attempts == 2
        assert row.update_id == update["update_id"]


async def test_webhook_mode_needs_its_url_and_secret() -> None:
    import pytest

    from bot.config import Settings

    with pytest.raises(ValueError, match="webhook_url"):
        Settings(telegram={"mode": "webhook"})
    with pytest.raises(ValueError, match="webhook_secret"):
        Settings(telegram={"mode": "webhook", "webhook_url": "https://bot.example.com/hook"})
    ok = Settings(
        telegram={"mode": "webhook", "webhook_url": "https://bot.example.com/hook", "webhook_secret": SECRET}
    )
    assert ok.telegram.webhook_secret.get_secret_value() == SECRET
    assert EXAMPLE_FAQ.exists()
