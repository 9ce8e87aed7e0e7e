"""kill -9 and SIGTERM of a real ``helpdesk run`` subprocess during a burst of customer messages.

The bot runs as its own process against the sandbox in this one; the sandbox holds one call of
the bot's at the chosen moment (``stall``) so each kill lands at a known point: mid-reply (the
customer's message stored, the answer not yet at Telegram), between two batches of updates (a
batch stored but not yet confirmed to Telegram), and while recovering after a restart. The
sandbox meanwhile fails 10% of the bot's calls with 429 or 500 and drops 1% of its connections.
After the last restart every message has its answer, in order; an answer is repeated only where
the bot logged the call as in doubt (sent to Telegram, the bot killed before it recorded the
answer), which no client of the Bot API can rule out: Telegram takes no idempotency key.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bot.sandbox import BotAPISandbox, User
from tests.conftest import EXAMPLE_FAQ, eventually
from tests.test_delivery import QUESTIONS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
IN_FLIGHT = 8  # the journal's bound on Bot API calls at once (bot.delivery.Journal.in_flight)


def write_config(tmp_path: Path, sandbox: BotAPISandbox) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[telegram]
token = "{sandbox.token}"
api_url = "{sandbox.url}"
poll_timeout = 1

[database]
url = "sqlite+aiosqlite:///{tmp_path}/helpdesk.db"

[kb]
index_dir = "{tmp_path}/index"
multilingual_model = ""

[delivery]
instance = "crash-test"
pacing = "none"
stop_timeout = 2

[security]
flood_burst = 1000
flood_per_minute = 6000
""",
        encoding="utf-8",
    )
    return path


class BotProcess:
    """``python -m bot run`` in a subprocess, its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "HELPDESK_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1"}
        env.pop("HELPDESK_TEST_DATABASE_URL", None)
        with self.log.open("ab") as out:
            out.write(f"\n----- start {self.starts + 1} -----\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> tuple[int, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> BotProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def prepare(config: Path, encoder) -> None:
    """The database with the example FAQ, as `helpdesk ingest examples/faq.md` leaves it."""
    from bot.config import load_settings
    from bot.runtime import open_services
    from ingest.pipeline import ingest_paths
    from kb.encoder import members

    settings = load_settings(config)
    async with open_services(settings, encoder=encoder, sync=False) as services:
        report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=encoder)
        assert report.added > 0 and not report.failed
    # ...and the configured models as an ingest leaves them: their ONNX exports made, the
    # re-ranker's vectors embedded. These tests are about updates in flight; a first start's
    # export or a backlog batch under way when a stop comes is finished first (seconds).
    async with open_services(settings, sync=False) as services:
        for model, _ in members(services.encoder):
            getattr(model, "onnx_queries", lambda: None)()
        while await services.kb.catch_up(services.sessions):
            pass


async def started(sandbox: BotAPISandbox, bot: BotProcess, *, count: int, within: float = 120.0) -> None:
    """The bot process is receiving (its start-up calls deleteWebhook once per start)."""

    async def up():
        if bot.proc is not None and bot.proc.poll() is not None:
            raise AssertionError(f"the bot exited with {bot.proc.returncode}:\n{bot.tail()}")
        return len(sandbox.calls_to("deleteWebhook")) >= count

    await eventually(up, within=within, interval=0.1)


async def hold_and_kill(sandbox: BotAPISandbox, bot: BotProcess, method: str) -> None:
    """Hold the bot's next ``method`` call, kill -9 the bot while it waits, then let the held
    request go: Telegram never acted on it (the caller is gone)."""
    held = sandbox.stall(method)
    await asyncio.wait_for(held.reached.wait(), 120)
    bot.kill()
    await asyncio.sleep(0.3)  # the sandbox notices the closed connection
    held.release.set()


def replies(sandbox: BotAPISandbox, customers: list[User]) -> int:
    return sum(len(sandbox.messages_to(c.id)) for c in customers)


async def test_three_kill_9_restarts_during_a_thousand_messages_lose_and_double_nothing(
    tmp_path, encoder
) -> None:
    async with BotAPISandbox() as sandbox:
        config = write_config(tmp_path, sandbox)
        await prepare(config, encoder)
        with BotProcess(config, tmp_path / "bot.log") as bot:
            bot.start()
            await started(sandbox, bot, count=1)
            asked = 10
            questions = QUESTIONS[:asked]
            reference_user = User(9_999, "Ref")
            reference = []
            for question in questions:
                before = len(sandbox.messages_to(reference_user.id))
                sandbox.send_message(chat=reference_user.id, user=reference_user, text=question)
                reference.append((await sandbox.wait_for_bot_message(reference_user.id, after=before)).text)
            assert len(set(reference)) == asked

            sandbox.chaos(failures=0.10, drops=0.01, seed=9)
            customers = [User(20_000 + n, f"Customer{n}") for n in range(100)]
            for turn in range(asked):
                for n, customer in enumerate(customers):
                    sandbox.send_message(chat=customer.id, user=customer, text=questions[(n + turn) % asked])
            total = asked * len(customers)

            # 1: mid-reply, once 150 answers are out
            await eventually(lambda: _at_least(sandbox, customers, 150), within=180, interval=0.2)
            await hold_and_kill(sandbox, bot, "sendMessage")
            killed_at = [replies(sandbox, customers)]
            # 2: while recovering, the first answer after the restart
            held = sandbox.stall("sendMessage")
            bot.start()
            await asyncio.wait_for(held.reached.wait(), 180)
            bot.kill()
            await asyncio.sleep(0.3)
            held.release.set()
            killed_at.append(replies(sandbox, customers))
            # 3: between two batches of updates (one stored, not yet confirmed), after 450 answers
            bot.start()
            await eventually(lambda: _at_least(sandbox, customers, 450), within=240, interval=0.2)
            await hold_and_kill(sandbox, bot, "getUpdates")
            killed_at.append(replies(sandbox, customers))

            bot.start()
            try:
                await eventually(lambda: _at_least(sandbox, customers, total), within=400, interval=0.5)
                await sandbox.wait_idle(quiet=2.0, timeout=60)
            except AssertionError:
                raise AssertionError(
                    f"answers: {replies(sandbox, customers)}/{total}\n{bot.tail()}"
                ) from None
            sandbox.chaos(failures=0, drops=0)
            code, _ = bot.stop()
            assert code == 0, bot.tail()

        assert killed_at[0] < killed_at[2] < total, killed_at  # the kills were in the middle
        log = (tmp_path / "bot.log").read_text(errors="replace")
        assert "left from the last run" in log  # the restarts recovered unfinished updates
        assert sandbox.token not in log
        # None lost, in order; a repeat only where the bot says a call was in doubt (Telegram had
        # acted on it, the bot died before recording that): the one gap Telegram's API leaves.
        in_doubt = log.count("was in flight when the bot stopped")
        extra = 0
        for n, customer in enumerate(customers):
            got = [m.text for m in sandbox.messages_to(customer.id)]
            distinct = [text for i, text in enumerate(got) if i == 0 or text != got[i - 1]]
            assert distinct == [reference[(n + turn) % asked] for turn in range(asked)], customer
            extra += len(got) - len(distinct)
        print(f"kill -9 x3 during {total} messages: {extra} repeated answers, {in_doubt} calls in doubt")
        # (a call in doubt at one restart and killed again is counted again at the next)
        assert extra <= min(in_doubt, 3 * IN_FLIGHT), (extra, in_doubt)  # at most 8 per kill


async def _at_least(sandbox: BotAPISandbox, customers: list[User], count: int) -> bool:
    return replies(sandbox, customers) >= count


async def test_sigterm_finishes_or_keeps_in_flight_work_within_ten_seconds(tmp_path, encoder) -> None:
    async with BotAPISandbox() as sandbox:
        config = write_config(tmp_path, sandbox)
        await prepare(config, encoder)
        customers = [User(30_000 + n, f"Customer{n}") for n in range(20)]
        with BotProcess(config, tmp_path / "bot.log") as bot:
            bot.start()
            await started(sandbox, bot, count=1)
            held = sandbox.stall("sendMessage")  # one answer hangs at Telegram
            for n, customer in enumerate(customers):
                sandbox.send_message(chat=customer.id, user=customer, text=QUESTIONS[n % len(QUESTIONS)])
            await asyncio.wait_for(held.reached.wait(), 60)
            code, took = await asyncio.to_thread(bot.stop)
            held.release.set()
            assert code == 0 and took < 10, (code, took, bot.tail())
            answered = replies(sandbox, customers)
            assert answered < len(customers)  # the held one (at least) was left for the next start

            bot.start()
            await started(sandbox, bot, count=2)
            await eventually(lambda: _at_least(sandbox, customers, len(customers)), within=120, interval=0.2)
            await sandbox.wait_idle(quiet=1.0, timeout=30)
            code, _ = await asyncio.to_thread(bot.stop)
            assert code == 0
        assert Counter(len(sandbox.messages_to(c.id)) for c in customers) == {1: len(customers)}
