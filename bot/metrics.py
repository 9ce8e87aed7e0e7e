"""Prometheus metrics, and the ``/metrics`` and ``/healthz`` endpoints (``[metrics] listen``).

The metrics live in prometheus_client's default registry (one set per process); how code moves
them, and the names as scraped::

    UPDATES_RECEIVED.inc()                          helpdesk_updates_received_total
    UPDATES_PROCESSED.labels(outcome="ok").inc()    helpdesk_updates_processed_total{outcome}
    answered(reply.action)                          helpdesk_decisions_total{kind}
                                                    helpdesk_answer_latency_seconds (histogram)
    OUTBOX_DEPTH.set(n)                             helpdesk_outbox_depth (also refreshed per scrape)
    SEND_RETRIES.labels(reason="retry_after").inc() helpdesk_send_retries_total{reason}
    escalated(new=True)                             helpdesk_escalations_total
    count_error(exc)                                helpdesk_errors_total{type}

Label values are a few short words each (every value is a time series of its own): outcomes
such as ``ok`` / ``failed`` / ``given_up``, reasons such as ``retry_after`` / ``server`` /
``network``, decision kinds from :class:`kb.decision.Action`, error types by class name. The
answer latency runs from the update reaching the dispatcher (:func:`bot.logs.update_started`)
to the answer sent, so it includes waiting for the chat's earlier messages.

The endpoints, for the run loop::

    async with metrics_server(settings, services, bot, outbox_depth=depth):
        ...  # serve updates

``GET /metrics`` is the text exposition. ``GET /healthz`` runs every check at once, each within
``check_timeout`` seconds, and answers 200 ``{"status": "ok", "checks": {"database": {"status":
"ok", "ms": 1.2}, ...}}``, or 503 with ``"status": "fail"``, the failing checks' ``reason`` and
their names in ``failing``. The checks: ``database`` (``SELECT 1``), ``bot_api`` (``getMe``, its
result kept for a few seconds so probes do not hammer Telegram) and ``outbox`` (depth at most
``[metrics] max_outbox_depth``) when the run loop gives the depth. A check fails by raising;
reasons are masked like log lines (no token, no webhook secret).

Errors: :class:`Unhealthy` (a :class:`bot.errors.HelpdeskError`), what a check raises on a bad
figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import delivery
from bot.errors import HelpdeskError
from bot.logs import redact, secrets_of, update_started

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.runtime import Services

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
Depth = Callable[[], Awaitable[int]]

UPDATES_RECEIVED = Counter("helpdesk_updates_received", "Updates received from Telegram.")
UPDATES_PROCESSED = Counter(
    "helpdesk_updates_processed", "Updates processed, by outcome.", labelnames=["outcome"]
)
ANSWER_LATENCY = Histogram(
    "helpdesk_answer_latency_seconds",
    "From a customer's question reaching the dispatcher to the bot's reply sent.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DECISIONS = Counter("helpdesk_decisions", "The bot's decisions on customers' questions.", labelnames=["kind"])
OUTBOX_DEPTH = Gauge("helpdesk_outbox_depth", "Bot API calls waiting to be made.")
SEND_RETRIES = Counter("helpdesk_send_retries", "Bot API calls retried, by reason.", labelnames=["reason"])
ESCALATIONS = Counter("helpdesk_escalations", "Tickets opened for agents.")
ERRORS = Counter("helpdesk_errors", "Updates that failed, by exception type.", labelnames=["type"])

for _kind in ("answer", "suggest", "escalate"):  # the series exist (at 0) before the first question
    DECISIONS.labels(kind=_kind)


class Unhealthy(HelpdeskError):
    """A health check's figure is out of bounds; the message says which and by how much."""


# -- moving the metrics -------------------------------------------------------------------------


def answered(kind: str) -> None:
    """A customer's question got the decision ``kind`` and its reply is sent: counted, timed,
    and logged as one line (with the update's context: update, customer)."""
    kind = str(kind)
    DECISIONS.labels(kind=kind).inc()
    started = update_started()
    if started is None:
        log.info("question answered: %s", kind, extra={"decision": kind})
        return
    latency = time.monotonic() - started
    ANSWER_LATENCY.observe(latency)
    log.info("question answered: %s", kind, extra={"decision": kind, "latency_ms": round(latency * 1000, 1)})


def escalated(*, new: bool) -> None:
    """A hand-over to agents: counted when it opened a ticket (not when one was open already)."""
    if new:
        ESCALATIONS.inc()


def count_error(exc: BaseException) -> None:
    ERRORS.labels(type=type(exc).__name__).inc()


# -- checks -------------------------------------------------------------------------------------


def database_check(sessions: async_sessionmaker[AsyncSession]) -> Check:
    """Fails when the database does not answer ``SELECT 1``."""

    async def check() -> None:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))

    return check


class BotApiCheck:
    """Fails when ``getMe`` fails; its outcome is kept ``ttl`` seconds (one call per ``ttl``)."""

    def __init__(self, bot: Bot, *, ttl: float = 5.0) -> None:
        self.bot = bot
        self.ttl = ttl
        self._checked_at = -math.inf
        self._problem: str | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.ttl:
                self._problem = await self._ask()
                self._checked_at = time.monotonic()
        if self._problem is not None:
            raise Unhealthy(self._problem)

    async def _ask(self) -> str | None:
        try:
            with delivery.probing():  # one try, no retries: the truth, now
                await self.bot.get_me()
        except TelegramAPIError as exc:  # TelegramNetworkError included: Telegram unreachable
            return f"{type(exc).__name__}: {exc}"
        return None


def outbox_check(depth: Depth, bound: int) -> Check:
    """Fails when more than ``bound`` Bot API calls wait in the outbox; sets the gauge."""

    async def check() -> None:
        waiting = await depth()
        OUTBOX_DEPTH.set(waiting)
        if waiting > bound:
            raise Unhealthy(f"{waiting} calls wait in the outbox, more than {bound}")

    return check


async def run_checks(
    checks: Mapping[str, Check], *, within: float, secrets: Iterable[str] = ()
) -> dict[str, dict[str, object]]:
    """Every check at once, each given ``within`` seconds:
    ``{name: {"status": "ok" | "fail", "ms": ..., "reason": ... (when it fails)}}``."""
    names = list(checks)
    outcomes = await asyncio.gather(*(_outcome(checks[name], within) for name in names))
    results: dict[str, dict[str, object]] = {}
    for name, (problem, elapsed) in zip(names, outcomes, strict=True):
        result: dict[str, object] = {"status": "ok" if problem is None else "fail", "ms": round(elapsed, 1)}
        if problem is not None:
            result["reason"] = redact(problem, secrets)
        results[name] = result
    return results


async def _outcome(check: Check, within: float) -> tuple[str | None, float]:
    """(None or the reason it failed, milliseconds it took)."""
    started = time.perf_counter()
    problem: str | None = None
    try:
        async with asyncio.timeout(within):
            await check()
    except TimeoutError:
        problem = f"no answer within {within:g} s"
    except Unhealthy as exc:
        problem = str(exc)
    except Exception as exc:  # a check fails by raising anything: reported, never fatal to the probe
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return problem, (time.perf_counter() - started) * 1000


# -- the server ---------------------------------------------------------------------------------


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` on ``host:port`` (port 0: any free one, see ``url``).

    ``refresh`` hooks run before each scrape (to set gauges such as the outbox depth); one that
    fails is logged and the scrape goes on with the last value.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        checks: Mapping[str, Check],
        refresh: Iterable[Check] = (),
        check_timeout: float = 3.0,
        secrets: Iterable[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.checks = dict(checks)
        self.refresh = list(refresh)
        self.check_timeout = check_timeout
        self.secrets = [s for s in secrets if s]
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._failing: set[str] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        log.info("metrics on %s/metrics, health on %s/healthz", self.url, self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        for hook in self.refresh:
            problem, _ = await _outcome(hook, self.check_timeout)
            if problem is not None:
                log.warning("metrics: a gauge could not be refreshed: %s", redact(problem, self.secrets))
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        results = await run_checks(self.checks, within=self.check_timeout, secrets=self.secrets)
        failing = sorted(name for name, result in results.items() if result["status"] != "ok")
        self._note_changes(results, failing)
        body: dict[str, object] = {"status": "fail" if failing else "ok", "checks": results}
        if failing:
            body["failing"] = failing
        return web.json_response(body, status=503 if failing else 200)

    def _note_changes(self, results: Mapping[str, Mapping[str, object]], failing: list[str]) -> None:
        """Log a check when it starts failing and when it recovers (not on every probe)."""
        for name in set(failing) - self._failing:
            log.warning("health check %s fails: %s", name, results[name]["reason"])
        for name in self._failing - set(failing):
            log.info("health check %s passes again", name)
        self._failing = set(failing)


@contextlib.asynccontextmanager
async def metrics_server(
    settings: Settings,
    services: Services,
    bot: Bot,
    *,
    outbox_depth: Depth | None = None,
    bot_api_ttl: float = 5.0,
    check_timeout: float = 3.0,
) -> AsyncIterator[MetricsServer | None]:
    """Serve ``/metrics`` and ``/healthz`` on ``[metrics] listen`` for the body of the ``with``;
    nothing (``None``) when it is empty. ``outbox_depth`` adds the outbox check and gauge."""
    listen = settings.metrics.listen
    if not listen:
        yield None
        return
    host, _, port = listen.rpartition(":")
    checks: dict[str, Check] = {
        "database": database_check(services.sessions),
        "bot_api": BotApiCheck(bot, ttl=bot_api_ttl),
    }
    refresh: list[Check] = []
    if outbox_depth is not None:
        checks["outbox"] = outbox_check(outbox_depth, settings.metrics.max_outbox_depth)
        refresh.append(_gauge_refresh(outbox_depth))
    server = MetricsServer(
        host.strip("[]"),
        int(port),
        checks=checks,
        refresh=refresh,
        check_timeout=check_timeout,
        secrets=secrets_of(settings),
    )
    async with server:
        yield server


def _gauge_refresh(depth: Depth) -> Check:
    async def refresh() -> None:
        OUTBOX_DEPTH.set(await depth())

    return refresh
