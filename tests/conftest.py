"""Shared fixtures: the real model (loaded once), throwaway databases and indexes, a stub encoder."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from bot.config import Settings
from bot.runtime import Services, open_services
from kb.encoder import SentenceEncoder, TextEncoder

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLE_FAQ = ROOT / "examples" / "faq.md"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip with the reason when it is absent."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is missing (clone ../shared beside the repo)")
    return path


class StubEncoder:
    """Deterministic bag-of-words hashing: for tests where the model is beside the point."""

    model_id = "stub-hashing-64"
    dim = 64

    def encode(self, texts: Sequence[str], *, kind: str = "passage") -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[row, bucket % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


@pytest.fixture(scope="session")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.fixture
def stub_encoder() -> StubEncoder:
    return StubEncoder()


def make_settings(tmp_path: Path, **kb: object) -> Settings:
    return Settings(
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/helpdesk.db"},
        kb={"index_dir": str(tmp_path / "index"), **kb},
        telegram={"token": "100000001:TEST", "poll_timeout": 1},
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def services(settings: Settings, encoder: TextEncoder) -> AsyncIterator[Services]:
    async with open_services(settings, encoder=encoder) as opened:
        yield opened


async def eventually(check, *, within: float = 5.0, interval: float = 0.02):
    """Poll an async ``check`` until it returns a truthy value (the bot writes after it sends)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s: last result {result!r}")
        await asyncio.sleep(interval)


AGENTS_CHAT_ID = -1001000000001


def _people():
    from bot.sandbox import Chat, User

    return Chat.forum(AGENTS_CHAT_ID, "Helpdesk agents"), User(
        7001, "Alice", "Smith", username="alice_agent", language_code="en"
    )


class BotHarness:
    """The real dispatcher long-polling the sandbox over HTTP, plus the services behind it.

    The agents' forum (``forum``) is configured with one agent (``agent``), unless a test asks
    for something else through ``make_harness``.
    """

    def __init__(self, sandbox, services: Services, dispatcher=None, forum=None, agent=None) -> None:
        self.sandbox = sandbox
        self.services = services
        self.dispatcher = dispatcher
        self.forum = forum
        self.agent = agent

    @property
    def desk(self):
        return self.dispatcher["desk"]

    async def say(self, user, text: str):
        """A customer writes; returns the bot's next message to them."""
        before = len(self.sandbox.messages_to(user.id))
        self.sandbox.send_message(chat=user.id, user=user, text=text)
        return await self.sandbox.wait_for_bot_message(user.id, after=before)

    async def topic_of(self, ticket_id: int, *, within: float = 10.0) -> int:
        """The forum topic of a ticket, once the bot has created it and posted the card."""
        from kb.models import Ticket

        async def ready():
            async with self.services.sessions() as session:
                ticket = await session.get(Ticket, ticket_id)
                return ticket.topic_id if ticket and ticket.card_message_id else None

        return await eventually(ready, within=within)

    def in_topic(self, thread_id: int):
        """The bot's messages in a topic, as they are now."""
        return self.sandbox.messages_to(self.forum.id, thread_id=thread_id)


def live_settings(settings: Settings, sandbox, **telegram: object) -> Settings:
    return settings.model_copy(
        update={
            "telegram": settings.telegram.model_copy(
                update={"api_url": sandbox.url, "token": SecretStr(sandbox.token), **telegram}
            )
        }
    )


@contextlib.asynccontextmanager
async def running_bot(
    settings: Settings,
    encoder: TextEncoder,
    *,
    forum=True,
    agents: list[int] | None = None,
    helpdesk: dict | None = None,
    pacing=None,
    prepare=None,
) -> AsyncIterator[BotHarness]:
    """The bot against a fresh sandbox. ``forum``: True for the standard agents' forum with one
    agent, a sandbox ``Chat`` for another agents' chat, False for no hand-over. ``prepare(sandbox)``
    runs before the bot starts (e.g. to take rights away)."""
    from bot.app import build_bot, polling
    from bot.pacing import Pacing
    from bot.sandbox import BotAPISandbox
    from ingest.pipeline import ingest_paths

    standard_forum, agent = _people()
    async with BotAPISandbox() as sandbox:
        chat = None
        telegram: dict[str, object] = {}
        if forum:
            chat = standard_forum if forum is True else forum
            sandbox.add_chat(chat, admins=[agent])
            telegram = {"agents_chat_id": chat.id, "agents": [agent.id] if agents is None else agents}
        if prepare is not None:
            prepare(sandbox)
        live = live_settings(settings, sandbox, **telegram)
        if helpdesk:
            live = live.model_copy(update={"helpdesk": live.helpdesk.model_copy(update=helpdesk)})
        async with open_services(live, encoder=encoder) as services:
            report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=encoder)
            assert report.added > 0 and not report.failed
            await services.kb.sync(services.sessions)
            bot = build_bot(live)
            try:
                async with polling(services, bot, pacing=pacing or Pacing.fast()) as dp:
                    yield BotHarness(sandbox, services, dp, chat, agent)
            finally:
                await bot.session.close()


@pytest.fixture
async def harness(settings: Settings, encoder: TextEncoder) -> AsyncIterator[BotHarness]:
    async with running_bot(settings, encoder) as running:
        yield running


@pytest.fixture
def make_harness(settings: Settings, encoder: TextEncoder):
    """``async with make_harness(**options) as harness``: see :func:`running_bot`."""

    def make(**options: object):
        return running_bot(settings, encoder, **options)

    return make
