"""Shared fixtures: the real model (loaded once), throwaway databases and indexes, a stub encoder."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from bot.config import Settings
from bot.runtime import Services, open_services
from kb import db
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
def encoder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    """The bundled model as the bot runs it: queries on ONNX Runtime (kb.onnx_queries)."""
    return SentenceEncoder(onnx_cache=tmp_path_factory.mktemp("onnx"))


@pytest.fixture
def stub_encoder() -> StubEncoder:
    return StubEncoder()


# The database the tests run on: SQLite files by default; with HELPDESK_TEST_DATABASE_URL (e.g.
# postgresql+asyncpg://helpdesk:helpdesk@127.0.0.1:5432/helpdesk_test, a role that may CREATE
# DATABASE) every test that asks for one gets a database of its own on that server, copied from
# a template migrated once per session, and dropped when the test ends.
TEST_DATABASE_URL = os.environ.get("HELPDESK_TEST_DATABASE_URL", "").strip()


class ServerDatabases:
    """Throwaway databases on one PostgreSQL server, named after this process (``helpdesk_t_<pid>_<n>``).

    The admin statements run through asyncpg on a helper thread of their own, so fixtures and
    ``make_settings`` may call them from inside a running event loop.
    """

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        if self.url.get_backend_name() != "postgresql":
            raise pytest.UsageError(f"HELPDESK_TEST_DATABASE_URL must be a PostgreSQL URL, not {url!r}")
        self.prefix = f"helpdesk_t_{os.getpid()}_"
        self.template = f"helpdesk_tpl_{os.getpid()}"
        self._numbers = itertools.count(1)
        self._by_path: dict[Path, str] = {}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-databases")
        self._template_ready = False

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def database_for(self, tmp_path: Path) -> str:
        """The URL of the test's database (one per ``tmp_path``), created on first use."""
        if tmp_path not in self._by_path:
            if not self._template_ready:
                self._build_template()
            name = f"{self.prefix}{next(self._numbers)}"
            self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
            self._by_path[tmp_path] = name
        return self.url_of(self._by_path[tmp_path])

    def drop_test_databases(self) -> None:
        names, self._by_path = list(self._by_path.values()), {}
        for name in names:
            self._drop(name)

    def close(self) -> None:
        self.drop_test_databases()
        if self._template_ready:
            self._drop(self.template)
        self._thread.shutdown()

    def _drop(self, name: str, *, attempts: int = 5) -> None:
        """DROP ... WITH (FORCE) closes what a test left connected; a role without
        pg_signal_backend may not stop an autovacuum worker that way, but a plain DROP does
        (it waits for connections up to 5 s, so it is the second choice)."""
        import asyncpg

        for attempt in range(1, attempts + 1):
            try:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                try:
                    self._admin(f'DROP DATABASE IF EXISTS "{name}"')
                    return
                except asyncpg.ObjectInUseError:
                    if attempt == attempts:
                        raise
                    time.sleep(0.2 * attempt)

    def _build_template(self) -> None:
        self._drop_leftovers()
        self._drop(self.template)
        self._admin(f'CREATE DATABASE "{self.template}"')
        self._thread.submit(db.upgrade_sync, self.url_of(self.template)).result()
        self._template_ready = True

    def _drop_leftovers(self) -> None:
        """Databases of earlier test runs on this machine that died before cleaning up (a server
        elsewhere may serve other machines' runs: their process ids mean nothing here)."""
        if self.url.host not in (None, "", "127.0.0.1", "localhost", "::1"):
            return
        for (name,) in self._admin("SELECT datname FROM pg_database WHERE datname LIKE 'helpdesk%'"):
            match = re.fullmatch(r"helpdesk_(?:t_(\d+)_\d+|tpl_(\d+))", name)
            if match and not _process_alive(int(match.group(1) or match.group(2))):
                self._drop(name)

    def _admin(self, sql: str) -> list[tuple]:
        return self._thread.submit(asyncio.run, self._execute(sql)).result()

    async def _execute(self, sql: str) -> list[tuple]:
        import asyncpg

        u = self.url
        connection = await asyncpg.connect(
            user=u.username, password=u.password, host=u.host, port=u.port, database=u.database
        )
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_server = ServerDatabases(TEST_DATABASE_URL) if TEST_DATABASE_URL else None


def database_url(tmp_path: Path) -> str:
    """The test's database: a SQLite file in ``tmp_path``, or its own database on the test server."""
    if _server is None:
        return f"sqlite+aiosqlite:///{tmp_path}/helpdesk.db"
    return _server.database_for(tmp_path)


@pytest.fixture(autouse=True, scope="session")
def _test_server() -> Iterator[None]:
    yield
    if _server is not None:
        _server.close()


@pytest.fixture(autouse=True, scope="session")
def _shared_onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX export (and int8 copy) per model for the whole run (``kb.onnx_dir``, read from
    the environment by every Settings, the CLI's child processes included), as a deployment keeps
    them across restarts: all-mpnet-base-v2's export and quantizing take ~30 s, which in every
    test on the default settings would dominate the suite. Tests of the export pass folders of
    their own. Under pytest-xdist the workers share one folder, whose graphs the first to need
    them makes (kb.files.one_maker: the others wait for it, as replicas do)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "onnx-exports"  # the run's, not the worker's
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("onnx-exports")
    before = os.environ.get("HELPDESK_KB__ONNX_DIR")
    os.environ["HELPDESK_KB__ONNX_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("HELPDESK_KB__ONNX_DIR", None)
    else:
        os.environ["HELPDESK_KB__ONNX_DIR"] = before


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if _server is not None:
        _server.drop_test_databases()


def pytest_report_header() -> str:
    if _server is None:
        return "database: SQLite files (set HELPDESK_TEST_DATABASE_URL for PostgreSQL)"
    return f"database: {_server.url.render_as_string(hide_password=True)} (a database per test)"


class RecordingEncoder:
    """The real model, recording the texts of each call (``calls``: their sizes, ``texts``: all
    of them); a batch holding the text ``refuse`` raises ``error`` instead."""

    def __init__(
        self, real: TextEncoder, *, refuse: str | None = None, error: type[Exception] = RuntimeError
    ) -> None:
        self.real = real
        self.model_id = real.model_id
        self.dim = real.dim
        self.refuse = refuse
        self.error = error
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    @property
    def texts(self) -> list[str]:
        return [text for batch in self.batches for text in batch]

    def clear(self) -> None:
        with self._lock:
            self.batches.clear()

    def encode(self, texts: Sequence[str], *, kind: str = "passage") -> np.ndarray:
        with self._lock:
            self.batches.append(list(texts))
        if self.refuse is not None and self.refuse in texts:
            raise self.error(f"refused {self.refuse!r}")
        return self.real.encode(texts, kind=kind)  # type: ignore[arg-type]


def make_settings(tmp_path: Path, **kb: object) -> Settings:
    return Settings(
        database={"url": database_url(tmp_path)},
        kb={"index_dir": str(tmp_path / "index"), **kb},
        telegram={"token": "100000001:TEST", "poll_timeout": 1},
        # A scenario plays a customer's minutes in seconds: the default flood limits (8 at once,
        # 30 a minute) would refuse the tenth update of a long one on a fast machine. Flood
        # control is tested with the default limits in test_security.
        security={"flood_burst": 1000, "flood_per_minute": 6000},
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

    async def settle(self, *, quiet: float = 0.3, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Until the bot has taken every update sent so far, handled each one with its
        follow-ups, and the sandbox has been quiet for ``quiet`` seconds since: what the bot does
        in reply is over, however slow the machine (a quiet spell alone may only be the bot
        thinking)."""
        inbox = self.dispatcher["inbox"]
        async with asyncio.timeout(timeout):
            while True:
                await self.sandbox.wait_idle(quiet=quiet, timeout=timeout)  # taken (offset confirmed)
                if not inbox.busy:
                    return
                await inbox.wait_idle()

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
