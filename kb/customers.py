"""Knowledge about customers: who they are, what they asked, what they were told, how it ended."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb.models import Article, ArticleVersion, Conversation, Csat, Customer, Feedback, Message, Ticket


def _identity(customer: Customer) -> dict[str, Any]:
    name = " ".join(part for part in (customer.first_name, customer.last_name) if part)
    return {
        "id": customer.id,
        "telegram_id": customer.telegram_id,
        "name": name,
        "username": customer.username,
        "language": customer.language,
        "first_seen": customer.first_seen.isoformat(),
        "last_seen": customer.last_seen.isoformat(),
        "tags": list(customer.tags),
        "notes": customer.notes,
    }


async def list_customers(
    sessions: async_sessionmaker[AsyncSession], *, search: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Customers, most recently seen first; ``search`` matches name, @username or Telegram id."""
    async with sessions() as session:
        query = select(Customer).order_by(Customer.last_seen.desc()).limit(limit)
        if search:
            pattern = f"%{search.strip().lstrip('@').lower()}%"
            clauses = [
                func.lower(Customer.first_name).like(pattern),
                func.lower(func.coalesce(Customer.last_name, "")).like(pattern),
                func.lower(func.coalesce(Customer.username, "")).like(pattern),
            ]
            if search.strip().isdigit():
                clauses.append(Customer.telegram_id == int(search.strip()))
            query = query.where(or_(*clauses))
        customers = list((await session.scalars(query)).all())
        ids = [c.id for c in customers]
        conversations = await _counts(session, Conversation.customer_id, ids)
        tickets = await _counts(session, Ticket.customer_id, ids)
    return [
        {**_identity(c), "conversations": conversations.get(c.id, 0), "tickets": tickets.get(c.id, 0)}
        for c in customers
    ]


async def _counts(session: AsyncSession, column: Any, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = await session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column))
    return {owner: count for owner, count in rows}


async def find_customer(session: AsyncSession, *, ref: int) -> Customer | None:
    """By internal id, else by Telegram id."""
    return await session.get(Customer, ref) or await session.scalar(
        select(Customer).where(Customer.telegram_id == ref)
    )


async def customer_profile(sessions: async_sessionmaker[AsyncSession], ref: int) -> dict[str, Any] | None:
    """The profile and the whole history of one customer (internal or Telegram id)."""
    async with sessions() as session:
        customer = await find_customer(session, ref=ref)
        if customer is None:
            return None
        conversations = list(
            (
                await session.scalars(
                    select(Conversation)
                    .where(Conversation.customer_id == customer.id)
                    .order_by(Conversation.id)
                )
            ).all()
        )
        messages = list(
            (
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id.in_([c.id for c in conversations] or [0]))
                    .order_by(Message.id)
                )
            ).all()
        )
        tickets = list(
            (
                await session.scalars(
                    select(Ticket).where(Ticket.customer_id == customer.id).order_by(Ticket.id)
                )
            ).all()
        )
        ratings = {
            c.ticket_id: c.score
            for c in (await session.scalars(select(Csat).where(Csat.customer_id == customer.id))).all()
        }
        votes = {
            f.message_id: f.helpful
            for f in (
                await session.scalars(select(Feedback).where(Feedback.customer_id == customer.id))
            ).all()
        }
        shown_ids = [m.version_id for m in messages if m.version_id]
        titles = {
            vid: (key, question, number)
            for vid, key, question, number in await session.execute(
                select(ArticleVersion.id, Article.key, ArticleVersion.question, ArticleVersion.number)
                .join(Article, Article.id == ArticleVersion.article_id)
                .where(ArticleVersion.id.in_(shown_ids or [0]))
            )
        }
    shown = Counter(m.version_id for m in messages if m.version_id)
    by_conversation: dict[int, list[dict[str, Any]]] = {c.id: [] for c in conversations}
    for m in messages:
        by_conversation[m.conversation_id].append(
            {
                "time": m.created_at.isoformat(),
                "author": m.author.value,
                "content_type": m.content_type,
                "text": m.text,
                "decision": m.decision,
                "article": titles[m.version_id][1] if m.version_id in titles else None,
                "score": m.score,
                "feedback": {True: "helped", False: "didn't help"}.get(votes.get(m.id)),  # type: ignore[arg-type]
            }
        )
    return {
        **_identity(customer),
        "conversations": [
            {"id": c.id, "started_at": c.started_at.isoformat(), "messages": by_conversation[c.id]}
            for c in conversations
        ],
        "tickets": [
            {
                "id": t.id,
                "state": t.state.value,
                "reason": t.reason,
                "question": t.question,
                "opened_at": t.opened_at.isoformat(),
                "resolved_at": t.resolved_at.isoformat() if t.resolved_at else None,
                "csat": ratings.get(t.id),
            }
            for t in tickets
        ],
        "articles_shown": [
            {"article": titles[v][0], "title": titles[v][1], "version": titles[v][2], "times": n}
            for v, n in shown.most_common()
            if v in titles
        ],
    }
