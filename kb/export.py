"""Exports for a CRM: customers, conversations and tickets as flat rows with stable column names.

The column lists below are the contract (documented in the README); add columns at the end only.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb.models import Author, Conversation, Csat, Customer, Message, Ticket

COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "telegram_id", "first_name", "last_name", "username", "language",
                  "first_seen", "last_seen", "tags", "notes", "conversations", "tickets"),
    "conversations": ("conversation_id", "customer_id", "started_at", "last_message_at", "messages",
                      "customer_messages", "bot_answers", "escalated"),
    "tickets": ("ticket_id", "customer_id", "conversation_id", "state", "reason", "question", "opened_at",
                "first_response_at", "resolved_at", "agent_id", "agent_name", "outcome", "csat"),
}  # fmt: skip


def _time(value: datetime | None) -> str:
    return value.isoformat() if value else ""


async def export_rows(
    sessions: async_sessionmaker[AsyncSession], what: str, *, since_days: int | None = None
) -> list[dict[str, Any]]:
    if what not in COLUMNS:
        raise ValueError(f"unknown export {what!r}: choose {', '.join(COLUMNS)}")
    since = datetime.now(UTC) - timedelta(days=since_days) if since_days else None
    async with sessions() as session:
        return await {"customers": _customers, "conversations": _conversations, "tickets": _tickets}[what](
            session, since
        )


async def _customers(session: AsyncSession, since: datetime | None) -> list[dict[str, Any]]:
    query = select(Customer).order_by(Customer.id)
    if since:
        query = query.where(Customer.last_seen >= since)
    customers = (await session.scalars(query)).all()
    conversations = Counter((await session.scalars(select(Conversation.customer_id))).all())
    tickets = Counter((await session.scalars(select(Ticket.customer_id))).all())
    return [
        {
            "customer_id": c.id,
            "telegram_id": c.telegram_id,
            "first_name": c.first_name,
            "last_name": c.last_name or "",
            "username": c.username or "",
            "language": c.language or "",
            "first_seen": _time(c.first_seen),
            "last_seen": _time(c.last_seen),
            "tags": ";".join(c.tags),
            "notes": c.notes,
            "conversations": conversations[c.id],
            "tickets": tickets[c.id],
        }
        for c in customers
    ]


async def _conversations(session: AsyncSession, since: datetime | None) -> list[dict[str, Any]]:
    query = select(Conversation).order_by(Conversation.id)
    if since:
        query = query.where(Conversation.last_message_at >= since)
    conversations = (await session.scalars(query)).all()
    ids = [c.id for c in conversations]
    counts: Counter[tuple[int, str]] = Counter()
    for start in range(0, len(ids), 500):
        for m in await session.scalars(
            select(Message).where(Message.conversation_id.in_(ids[start : start + 500]))
        ):
            counts[(m.conversation_id, "all")] += 1
            if m.author is Author.CUSTOMER:
                counts[(m.conversation_id, "customer")] += 1
            if m.author is Author.BOT and m.decision in ("answer", "picked"):
                counts[(m.conversation_id, "answers")] += 1
    escalated = set((await session.scalars(select(Ticket.conversation_id))).all())
    return [
        {
            "conversation_id": c.id,
            "customer_id": c.customer_id,
            "started_at": _time(c.started_at),
            "last_message_at": _time(c.last_message_at),
            "messages": counts[(c.id, "all")],
            "customer_messages": counts[(c.id, "customer")],
            "bot_answers": counts[(c.id, "answers")],
            "escalated": c.id in escalated,
        }
        for c in conversations
    ]


async def _tickets(session: AsyncSession, since: datetime | None) -> list[dict[str, Any]]:
    query = select(Ticket).order_by(Ticket.id)
    if since:
        query = query.where(Ticket.opened_at >= since)
    tickets = (await session.scalars(query)).all()
    ratings = {c.ticket_id: c.score for c in (await session.scalars(select(Csat))).all()}
    return [
        {
            "ticket_id": t.id,
            "customer_id": t.customer_id,
            "conversation_id": t.conversation_id or "",
            "state": t.state.value,
            "reason": t.reason,
            "question": t.question or "",
            "opened_at": _time(t.opened_at),
            "first_response_at": _time(t.first_response_at),
            "resolved_at": _time(t.resolved_at),
            "agent_id": t.agent_id or "",
            "agent_name": t.agent_name or "",
            "outcome": t.outcome or "",
            "csat": ratings.get(t.id, ""),
        }
        for t in tickets
    ]
