"""The service report and article usefulness, from rows with known times; the HTML report renders."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.report_html import render_report
from bot.runtime import Services
from kb.analytics import article_usefulness, service_report
from kb.models import (
    Article,
    ArticleVersion,
    Author,
    Conversation,
    Csat,
    Customer,
    Direction,
    Feedback,
    Message,
    Ticket,
    TicketState,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


async def seed(services: Services) -> None:
    """Three conversations: one self-served (helped), one escalated after a bad answer, one unanswered."""
    async with services.sessions() as session, session.begin():
        article = Article(key="pw", language="en")
        session.add(article)
        await session.flush()
        version = ArticleVersion(
            article_id=article.id, number=1, language="en", question="How do I reset my password?",
            answer="Use the link.", content_hash="x",
        )  # fmt: skip
        session.add(version)
        customers = [Customer(telegram_id=100 + i, first_name=f"C{i}") for i in range(3)]
        session.add_all(customers)
        await session.flush()
        start = NOW - timedelta(days=1)
        conversations = [
            Conversation(customer_id=c.id, chat_id=c.telegram_id, started_at=start, last_message_at=start)
            for c in customers
        ]
        session.add_all(conversations)
        await session.flush()

        def msg(conv: Conversation, author: Author, text: str, decision: str | None = None, **kw) -> Message:
            direction = Direction.IN if author is Author.CUSTOMER else Direction.OUT
            return Message(conversation_id=conv.id, direction=direction, author=author, chat_id=conv.chat_id,
                           text=text, decision=decision, created_at=start, **kw)  # fmt: skip

        good = msg(conversations[0], Author.BOT, "Use the link.", "answer", version_id=version.id)
        bad = msg(conversations[1], Author.BOT, "Use the link.", "answer", version_id=version.id)
        session.add_all([
            msg(conversations[0], Author.CUSTOMER, "forgot password"), good,
            msg(conversations[1], Author.CUSTOMER, "password reset link expired"), bad,
            msg(conversations[2], Author.CUSTOMER, "do you sell gift cards?"),
            msg(conversations[2], Author.BOT, "", "escalate"),
        ])  # fmt: skip
        await session.flush()
        session.add_all([
            Feedback(message_id=good.id, customer_id=customers[0].id, version_id=version.id, helpful=True,
                     created_at=start),
            Feedback(message_id=bad.id, customer_id=customers[1].id, version_id=version.id, helpful=False,
                     created_at=start),
        ])  # fmt: skip
        ticket = Ticket(
            customer_id=customers[1].id, conversation_id=conversations[1].id, state=TicketState.RESOLVED,
            opened_at=start + timedelta(minutes=1), first_response_at=start + timedelta(minutes=5),
            resolved_at=start + timedelta(minutes=31),
        )  # fmt: skip
        session.add(ticket)
        await session.flush()
        session.add(Csat(ticket_id=ticket.id, customer_id=customers[1].id, score=4, created_at=start))


async def test_service_report_figures(services: Services) -> None:
    await seed(services)
    figures = await service_report(services.sessions, since_days=7, now=NOW)
    assert figures["conversations"] == 3
    assert figures["self_service_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert figures["escalation_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert figures["first_response"] == {"n": 1, "median_s": 240.0, "p90_s": 240.0}
    assert figures["resolution"]["median_s"] == 1800.0
    assert figures["csat"] == {"n": 1, "average": 4, "distribution": {"1": 0, "2": 0, "3": 0, "4": 1, "5": 0}}
    assert figures["feedback_rate"] == 1.0
    assert figures["top_articles"] == [{"article": "pw", "title": "How do I reset my password?", "shown": 2}]
    assert figures["top_gaps"] == [{"question": "do you sell gift cards?", "asked": 1}]
    [yesterday] = [d for d in figures["per_day"] if d["day"] == "2026-11-19"]
    assert (yesterday["conversations"], yesterday["self_served"], yesterday["escalated"]) == (3, 1, 1)
    assert len(figures["per_day"]) == 8


async def test_article_usefulness(services: Services) -> None:
    await seed(services)
    [row] = await article_usefulness(services.sessions)
    assert row == {
        "article": "pw", "title": "How do I reset my password?", "version": 1, "shown": 2, "helped": 1,
        "not_helped": 1, "escalated_after": 1, "self_served_rate": 0.5,
    }  # fmt: skip


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium is not installed (apt-get install chromium; .ci/run installs it)")


def _screenshot(chromium: str, page: Path, tmp_path: Path) -> Path:
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path}/prof",
         f"--screenshot={shot}", "--window-size=800,1400", page.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return shot


async def test_the_html_report_renders_its_charts(services: Services, tmp_path: Path) -> None:
    await seed(services)
    page = tmp_path / "report.html"
    page.write_text(render_report(await service_report(services.sessions, since_days=7, now=NOW)))
    html = page.read_text()
    assert html.count("<svg") == 4 and "<script" not in html and "http" not in html.split("</style>")[0]
    shot = await asyncio.to_thread(_screenshot, _chromium(), page, tmp_path)
    image = Image.open(shot).convert("RGB")
    colours = {image.getpixel((x, y)) for x in range(0, image.width, 4) for y in range(0, image.height, 4)}
    # The bars' colours are on the page: the charts drew, the screenshot is not blank.
    assert (0x40, 0x63, 0xD8) in colours and (0x2E, 0x9E, 0x5B) in colours and (0xD4, 0xA2, 0x0B) in colours


async def test_customer_profiles_from_the_command_line(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from bot.cli import app

    await seed(services)
    monkeypatch.setenv("HELPDESK_DATABASE__URL", services.settings.database.url)
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    runner = CliRunner()

    listed = await asyncio.to_thread(runner.invoke, app, ["customers", "list", "--search", "c1", "--json"])
    assert listed.exit_code == 0, listed.output
    [one] = json.loads(listed.stdout)
    assert (one["name"], one["conversations"], one["tickets"]) == ("C1", 1, 1)

    shown = await asyncio.to_thread(
        runner.invoke, app, ["customers", "show", str(one["telegram_id"]), "--json"]
    )
    profile = json.loads(shown.stdout)
    assert profile["tickets"][0]["csat"] == 4
    texts = [m["text"] for m in profile["conversations"][0]["messages"]]
    assert texts == ["password reset link expired", "Use the link."]
    assert profile["conversations"][0]["messages"][1]["feedback"] == "didn't help"
    assert profile["articles_shown"] == [
        {"article": "pw", "title": "How do I reset my password?", "version": 1, "times": 1}
    ]
    readable = await asyncio.to_thread(runner.invoke, app, ["customers", "show", str(one["id"])])
    assert "password reset link expired" in readable.stdout and "didn't help" in readable.stdout

    missing = await asyncio.to_thread(runner.invoke, app, ["customers", "show", "999999"])
    assert missing.exit_code == 1

    report = await asyncio.to_thread(
        runner.invoke, app, ["report", "--since", "3650", "--html", str(tmp_path / "r.html"), "--json"]
    )
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["conversations"] == 3
    assert (tmp_path / "r.html").read_text().count("<svg") == 4
    stats = await asyncio.to_thread(runner.invoke, app, ["kb", "stats", "--json"])
    assert json.loads(stats.stdout)[0]["not_helped"] == 1


async def test_knowledge_gaps_group_by_meaning(services: Services) -> None:
    from kb.gaps import knowledge_gaps

    await seed(services)
    async with services.sessions() as session, session.begin():
        customers = [Customer(telegram_id=200 + i, first_name=f"G{i}") for i in range(3)]
        session.add_all(customers)
        await session.flush()
        for customer, text in zip(
            customers, ["Do you sell gift cards?", "can I buy a gift voucher", "What is your phone number?"],
            strict=True,
        ):  # fmt: skip
            conversation = Conversation(customer_id=customer.id, chat_id=customer.telegram_id)
            session.add(conversation)
            await session.flush()
            session.add_all([
                Message(conversation_id=conversation.id, direction=Direction.IN, author=Author.CUSTOMER,
                        chat_id=customer.telegram_id, text=text),
                Message(conversation_id=conversation.id, direction=Direction.OUT, author=Author.BOT,
                        chat_id=customer.telegram_id, decision="escalate"),
            ])  # fmt: skip
    groups = await knowledge_gaps(services.sessions, services.encoder, since_days=3650)
    top = groups[0]
    assert top["customers"] == 3, groups  # the seeded "gift cards" customer and the two new ones
    assert {"Do you sell gift cards?", "can I buy a gift voucher"} <= set(top["examples"])
    assert any(g["examples"] == ["What is your phone number?"] for g in groups)
    unhelpful = next(g for g in groups if "password reset link expired" in g["examples"])
    assert unhelpful["article_tried"] == "How do I reset my password?"


async def test_exports_for_a_crm(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from bot.cli import app
    from kb.export import COLUMNS

    await seed(services)
    monkeypatch.setenv("HELPDESK_DATABASE__URL", services.settings.database.url)
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    runner = CliRunner()
    tickets = await asyncio.to_thread(runner.invoke, app, ["export", "tickets", "--format", "csv"])
    assert tickets.exit_code == 0, tickets.output
    rows = list(csv.DictReader(io.StringIO(tickets.stdout)))
    assert tuple(rows[0]) == COLUMNS["tickets"]
    assert (rows[0]["state"], rows[0]["csat"]) == ("resolved", "4")
    customers = await asyncio.to_thread(runner.invoke, app, ["export", "customers", "--format", "jsonl"])
    lines = [json.loads(line) for line in customers.stdout.splitlines()]
    assert len(lines) == 3 and tuple(lines[0]) == COLUMNS["customers"]
    conversations = await asyncio.to_thread(
        runner.invoke, app, ["export", "conversations", "--since", "3650"]
    )
    assert sum(row["escalated"] == "True" for row in csv.DictReader(io.StringIO(conversations.stdout))) == 1
    bad = await asyncio.to_thread(runner.invoke, app, ["export", "orders"])
    assert bad.exit_code == 2
    absurd = await asyncio.to_thread(runner.invoke, app, ["report", "--since", "-5"])
    assert absurd.exit_code == 2


async def test_a_report_over_an_empty_database(services: Services) -> None:
    figures = await service_report(services.sessions, since_days=7)
    assert figures["conversations"] == 0 and figures["self_service_rate"] is None
    assert render_report(figures).count("<svg") == 4
