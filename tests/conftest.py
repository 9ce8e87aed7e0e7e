"""Shared fixtures: the real model (loaded once), throwaway databases and indexes, a stub encoder."""

from __future__ import annotations

import asyncio
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

    def encode(self, texts: Sequence[str]) -> np.ndarray:
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


class BotHarness:
    """The real dispatcher long-polling the sandbox over HTTP, plus the services behind it."""

    def __init__(self, sandbox, services: Services) -> None:
        self.sandbox = sandbox
        self.services = services

    async def say(self, user, text: str):
        """A customer writes; returns the bot's next message to them."""
        before = len(self.sandbox.messages_to(user.id))
        self.sandbox.send_message(chat=user.id, user=user, text=text)
        return await self.sandbox.wait_for_bot_message(user.id, after=before)


@pytest.fixture
async def harness(settings: Settings, encoder: TextEncoder) -> AsyncIterator[BotHarness]:
    from bot.app import build_bot, polling
    from bot.sandbox import BotAPISandbox
    from ingest.pipeline import ingest_paths

    async with BotAPISandbox() as sandbox:
        live = settings.model_copy(
            update={
                "telegram": settings.telegram.model_copy(
                    update={"api_url": sandbox.url, "token": SecretStr(sandbox.token)}
                )
            }
        )
        async with open_services(live, encoder=encoder) as services:
            report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=encoder)
            assert report.added > 0 and not report.failed
            await services.kb.sync(services.sessions)
            bot = build_bot(live)
            try:
                async with polling(services, bot):
                    yield BotHarness(sandbox, services)
            finally:
                await bot.session.close()
