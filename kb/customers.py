"""Knowledge about customers: who they are, what they asked, what they were told, how it ended."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb.models import (
    Article,
    ArticleVersion,
    Conversation,
    Csat,
    Customer,
    Feedback,
    Message,
    Ticket,
    utcnow,
)
from kb.privacy import audit


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


# -- what agents add to a profile (``/tag``, ``/note`` in a ticket's topic) ----------------------

MAX_TAGS = 30
TAG_CHARS = 40


def clean_tags(words: list[str]) -> tuple[list[str], list[str]]:
    """``/tag vip -angry #billing``: the tags to add and those to remove (``-tag``), normalised."""
    add: list[str] = []
    remove: list[str] = []
    for word in words:
        target = remove if word.startswith("-") else add
        tag = word.lstrip("-#").strip(",;").lower()[:TAG_CHARS]
        if tag and tag not in target:
            target.append(tag)
    return add, remove


async def tag_customer(
    session: AsyncSession, *, customer_id: int, add: list[str], remove: list[str], actor: str
) -> list[str] | None:
    """Add and remove tags on a customer's profile; returns the tags now (None: no such customer)."""
    async with session.begin():
        customer = await session.get(Customer, customer_id)
        if customer is None:
            return None
        tags = [t for t in customer.tags if t not in remove]
        tags += [t for t in add if t not in tags]
        customer.tags = tags[:MAX_TAGS]
        detail = " ".join([*(f"+{t}" for t in add), *(f"-{t}" for t in remove)])
        await audit(session, actor=actor, action="tagged", customer_id=customer_id, detail=detail)
        return list(customer.tags)


async def note_customer(
    session: AsyncSession, *, customer_id: int, text: str, author: str, actor: str
) -> None:
    """Append an agent's note to the customer's profile: ``YYYY-MM-DD HH:MM author: text``."""
    async with session.begin():
        customer = await session.get(Customer, customer_id)
        if customer is None:
            return
        line = f"{utcnow():%Y-%m-%d %H:%M} {author}: {' '.join(text.split())}"
        customer.notes = f"{customer.notes}\n{line}".strip() if customer.notes else line
        await audit(session, actor=actor, action="noted", customer_id=customer_id)


def profile_summary(profile: dict[str, Any]) -> dict[str, Any]:
    """The short form of :func:`customer_profile` for ``/profile``: counts, outcomes, CSAT."""
    tickets = profile["tickets"]
    ratings = [t["csat"] for t in tickets if t["csat"] is not None]
    outcomes = Counter(t["state"] for t in tickets)
    messages = [m for c in profile["conversations"] for m in c["messages"]]
    return {
        "conversations": len(profile["conversations"]),
        "questions": sum(1 for m in messages if m["author"] == "customer"),
        "answers": sum(1 for m in messages if m["decision"] in ("answer", "picked")),
        "helped": sum(1 for m in messages if m["feedback"] == "helped"),
        "not_helped": sum(1 for m in messages if m["feedback"] == "didn't help"),
        "tickets": len(tickets),
        "outcomes": dict(outcomes),
        "csat_average": round(sum(ratings) / len(ratings), 2) if ratings else None,
        "csat_n": len(ratings),
    }
