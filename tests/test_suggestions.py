"""Editors review what agents answered: approve (optionally edited) into the KB, or reject."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bot.cli import app
from bot.runtime import Services
from kb.models import Customer, Suggestion, SuggestionStatus
from kb.suggestions import SuggestionClosedError, approve, reject


async def add_suggestion(services: Services, question: str, answer: str) -> int:
    async with services.sessions() as session, session.begin():
        customer = Customer(telegram_id=555, first_name="S")
        session.add(customer)
        await session.flush()
        suggestion = Suggestion(question=question, answer=answer, customer_id=customer.id, agent_id=42)
        session.add(suggestion)
        await session.flush()
        return suggestion.id


async def test_approving_puts_the_answer_in_the_kb(services: Services) -> None:
    sid = await add_suggestion(services, "Do you sell gift cards?", "Yes, in every shop and online.")
    approved = await approve(services.sessions, services.encoder, sid, editor="erin")
    assert (
        approved.created and approved.article_key == "agents/do-you-sell-gift-cards" and approved.version == 1
    )
    await services.kb.sync(services.sessions)
    [top, *_] = await services.kb.search("can I buy a gift card?")
    assert top.title == "Do you sell gift cards?"
    with pytest.raises(SuggestionClosedError):
        await reject(services.sessions, sid)


async def test_the_command_line_review(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await add_suggestion(services, "What is your phone number?", "Call +420 123 456 789.")
    async with services.sessions() as session, session.begin():
        session.add(Suggestion(question="Is there parking?", answer="No.", agent_id=42))
    monkeypatch.setenv("HELPDESK_DATABASE__URL", services.settings.database.url)
    monkeypatch.setenv("HELPDESK_KB__INDEX_DIR", str(services.settings.kb.index_dir))
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    runner = CliRunner()

    listed = await asyncio.to_thread(runner.invoke, app, ["suggestions", "list", "--json"])
    assert [row["question"] for row in json.loads(listed.stdout)] == [
        "What is your phone number?",
        "Is there parking?",
    ]

    monkeypatch.setenv("EDITOR", "sed -i 's/Call /Call us on /'")
    approved = await asyncio.to_thread(
        runner.invoke, app, ["suggestions", "approve", str(first), "--edit", "--editor", "erin"]
    )
    assert approved.exit_code == 0, approved.output
    assert "created agents/what-is-your-phone-number v1" in approved.stdout
    shown = await asyncio.to_thread(
        runner.invoke, app, ["kb", "show", "agents/what-is-your-phone-number", "--json"]
    )
    [version] = json.loads(shown.stdout)["versions"]
    assert version["answer"] == "Call us on +420 123 456 789." and version["author"] == "erin"

    rejected = await asyncio.to_thread(runner.invoke, app, ["suggestions", "reject", str(first + 1)])
    assert rejected.exit_code == 0
    again = await asyncio.to_thread(runner.invoke, app, ["suggestions", "reject", str(first + 1)])
    assert again.exit_code == 1 and "already rejected" in again.stderr
    pending = await asyncio.to_thread(runner.invoke, app, ["suggestions", "list", "--json"])
    assert json.loads(pending.stdout) == []
    async with services.sessions() as session:
        statuses = [s.status for s in (await session.scalars(select(Suggestion))).all()]
    assert statuses == [SuggestionStatus.APPROVED, SuggestionStatus.REJECTED]
