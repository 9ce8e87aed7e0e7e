"""/metrics and /healthz over HTTP: counters move with the bot's work, health follows its parts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bot.app import build_bot
from bot.config import Settings
from bot.metrics import BotApiCheck, MetricsServer, Unhealthy, metrics_server
from bot.runtime import Services
from bot.sandbox import BotAPISandbox, User
from bot.texts import EN
from tests.conftest import BotHarness, eventually, live_settings

ANN = User(601, "Ann", language_code="en")
BEN = User(602, "Ben", language_code="en")
CARL = User(603, "Carl", language_code="en")
TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
DB_PASSWORD = "pw-5ecret-of-the-database"
METRICS = (
    "helpdesk_updates_received_total",
    "helpdesk_updates_processed_total",
    "helpdesk_answer_latency_seconds",
    "helpdesk_decisions_total",
    "helpdesk_outbox_depth",
    "helpdesk_send_retries_total",
    "helpdesk_escalations_total",
    "helpdesk_errors_total",
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_metrics(settings: Settings, *, max_outbox_depth: int = 1000) -> Settings:
    metrics = settings.metrics.model_copy(
        update={"listen": f"127.0.0.1:{free_port()}", "max_outbox_depth": max_outbox_depth}
    )
    return settings.model_copy(update={"metrics": metrics})


async def fetch(url: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of a GET."""
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def health(server: MetricsServer) -> tuple[int, dict]:
    status, content_type, body = await fetch(f"{server.url}/healthz")
    assert content_type.startswith("application/json")
    return status, json.loads(body)


async def scrape(server: MetricsServer) -> Samples:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    status, content_type, body = await fetch(f"{server.url}/metrics")
    assert status == 200 and content_type == CONTENT_TYPE_LATEST
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def moved(server: MetricsServer, name: str, before: Samples, **labels: str) -> Samples:
    """The next scrape in which ``name`` went up (the handler counts after its reply is sent)."""

    async def check() -> Samples | None:
        samples = await scrape(server)
        return samples if value(samples, name, **labels) > value(before, name, **labels) else None

    return await eventually(check)


@contextlib.asynccontextmanager
async def serving(harness: BotHarness, **options: object) -> AsyncIterator[MetricsServer]:
    """The metrics server beside the harness's bot (a Bot of its own on the same sandbox)."""
    live = with_metrics(harness.services.settings)
    bot = build_bot(live)
    try:
        async with metrics_server(live, harness.services, bot, **options) as server:
            assert server is not None and server.url.startswith("http://127.0.0.1:")
            yield server
    finally:
        await bot.session.close()


async def test_counters_move_when_customers_ask_escalate_and_fail(make_harness) -> None:
    async with make_harness() as harness, serving(harness) as server:
        status, content_type, body = await fetch(f"{server.url}/metrics")
        assert status == 200 and content_type == CONTENT_TYPE_LATEST
        for name in METRICS:
            assert f"# HELP {name} " in body, name
        before = await scrape(server)

        reply = await harness.say(ANN, "How do I reset my password?")
        assert "Source:" in reply.plain_text
        after = await moved(server, "helpdesk_decisions_total", before, kind="answer")
        assert (
            value(after, "helpdesk_decisions_total", kind="answer")
            == value(before, "helpdesk_decisions_total", kind="answer") + 1
        )
        assert value(after, "helpdesk_decisions_total", kind="escalate") == value(
            before, "helpdesk_decisions_total", kind="escalate"
        )
        count = "helpdesk_answer_latency_seconds_count"
        assert value(after, count) == value(before, count) + 1
        took = value(after, "helpdesk_answer_latency_seconds_sum") - value(
            before, "helpdesk_answer_latency_seconds_sum"
        )
        assert 0 < took < 5

        await harness.say(BEN, "/human")  # a new ticket...
        after_human = await moved(server, "helpdesk_escalations_total", after)
        escalations = value(after_human, "helpdesk_escalations_total")
        assert escalations == value(after, "helpdesk_escalations_total") + 1
        await harness.say(BEN, "/human")  # ...asked for again: the same ticket, not a new escalation
        await harness.settle()
        again = await scrape(server)
        assert value(again, "helpdesk_escalations_total") == escalations

        await harness.sandbox.wait_idle(quiet=1.0)  # nothing else in flight takes the failure
        harness.sandbox.fail_next("sendMessage", error_code=400, description="Bad Request: chat not found")
        reply = await harness.say(CARL, "How do I reset my password?")  # the answer fails; the apology
        assert reply.plain_text == EN.error
        failed = await moved(server, "helpdesk_errors_total", again, type="TelegramBadRequest")
        assert value(failed, "helpdesk_errors_total", type="TelegramBadRequest") == 1 + value(
            again, "helpdesk_errors_total", type="TelegramBadRequest"
        )


async def test_healthz_follows_the_database_and_the_bot_api(make_harness) -> None:
    async with make_harness(forum=False) as harness, serving(harness, bot_api_ttl=0) as server:
        status, body = await health(server)
        assert status == 200, body
        assert body["status"] == "ok" and set(body["checks"]) == {"database", "bot_api"}
        assert all(check["status"] == "ok" for check in body["checks"].values())

        await harness.sandbox.stop()  # Telegram is down
        status, body = await health(server)
        assert status == 503 and body["status"] == "fail" and body["failing"] == ["bot_api"]
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["bot_api"]["reason"].startswith("TelegramNetworkError")
        assert harness.sandbox.token not in json.dumps(body)

        await harness.sandbox.start()  # back, on the same port
        status, body = await health(server)
        assert status == 200, body


async def test_healthz_fails_when_the_database_is_unreachable(make_harness) -> None:
    url = f"postgresql+asyncpg://helpdesk:{DB_PASSWORD}@127.0.0.1:{free_port()}/helpdesk"
    engine = create_async_engine(url)
    async with make_harness(forum=False) as harness:
        live = with_metrics(harness.services.settings)
        live = live.model_copy(update={"database": live.database.model_copy(update={"url": url})})
        unreachable = dataclasses.replace(
            harness.services, settings=live, engine=engine, sessions=async_sessionmaker(engine)
        )
        bot = build_bot(live)
        try:
            async with metrics_server(live, unreachable, bot) as server:
                assert server is not None
                status, _, text = await fetch(f"{server.url}/healthz")
                body = json.loads(text)
                assert status == 503 and body["failing"] == ["database"], body
                assert body["checks"]["bot_api"]["status"] == "ok"
                assert body["checks"]["database"]["reason"]
                assert DB_PASSWORD not in text
                assert await scrape(server)  # /metrics still answers
        finally:
            await bot.session.close()
            await engine.dispose()


async def test_the_outbox_check_fails_above_the_bound_and_sets_the_gauge(services: Services) -> None:
    waiting = [2]

    async def outbox_depth() -> int:
        return waiting[0]

    async with BotAPISandbox() as sandbox:
        live = with_metrics(live_settings(services.settings, sandbox), max_outbox_depth=3)
        bot = build_bot(live)
        try:
            async with metrics_server(live, services, bot, outbox_depth=outbox_depth) as server:
                assert server is not None
                status, body = await health(server)
                assert status == 200 and body["checks"]["outbox"]["status"] == "ok"
                assert value(await scrape(server), "helpdesk_outbox_depth") == 2
                waiting[0] = 5
                assert value(await scrape(server), "helpdesk_outbox_depth") == 5  # refreshed per scrape
                status, body = await health(server)
                assert status == 503 and body["failing"] == ["outbox"]
                reason = body["checks"]["outbox"]["reason"]
                assert reason == "5 calls wait in the outbox, more than 3"
        finally:
            await bot.session.close()


async def test_the_bot_api_check_asks_telegram_once_per_ttl() -> None:
    async with BotAPISandbox() as sandbox:
        settings = live_settings(Settings(), sandbox)
        bot = build_bot(settings)
        try:
            cached = BotApiCheck(bot, ttl=60)
            await cached()
            await cached()
            assert len(sandbox.calls_to("getMe")) == 1
            await sandbox.stop()
            await cached()  # still the answer of a moment ago
            fresh = BotApiCheck(bot, ttl=0)
            try:
                await fresh()
            except Unhealthy as exc:
                assert str(exc).startswith("TelegramNetworkError")
            else:
                raise AssertionError("getMe against a stopped Bot API passed")
        finally:
            await bot.session.close()


async def test_a_check_that_hangs_or_leaks_fails_alone_in_time() -> None:
    async def hangs() -> None:
        await asyncio.sleep(30)

    async def leaks() -> None:
        raise RuntimeError(f"GET http://127.0.0.1/bot{TOKEN}/getMe failed, secret hunter2-secret")

    async def fine() -> None:
        return None

    server = MetricsServer(
        "127.0.0.1",
        0,
        checks={"hangs": hangs, "leaks": leaks, "fine": fine},
        check_timeout=0.2,
        secrets=["hunter2-secret"],
    )
    async with server:
        started = time.monotonic()
        status, body = await health(server)
        assert time.monotonic() - started < 2
    assert status == 503 and body["failing"] == ["hangs", "leaks"]
    assert body["checks"]["hangs"]["reason"] == "no answer within 0.2 s"
    assert body["checks"]["fine"] == {"status": "ok", "ms": body["checks"]["fine"]["ms"]}
    reason = body["checks"]["leaks"]["reason"]
    assert reason.startswith("RuntimeError: GET") and TOKEN not in reason and "hunter2" not in reason


async def test_no_listen_address_no_server(services: Services) -> None:
    assert services.settings.metrics.listen == ""
    bot = build_bot(services.settings)
    try:
        async with metrics_server(services.settings, services, bot) as server:
            assert server is None
    finally:
        await bot.session.close()
