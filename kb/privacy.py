"""Customers control their data: everything stored about one (``/mydata``), its erasure
(``/forget``), the retention purge of old conversations, and the audit log of who touched it.

What belongs to a customer
    their ``customers`` row (identity, tags, agents' notes), their conversations and every message
    in them (theirs, the bot's, the agents' replies and internal notes), their feedback, their
    tickets and CSAT ratings, and the suggestions that quote them: made from their tickets, naming
    them, or whose question is one of their messages word for word (``helpdesk gaps --suggest``
    quotes customers).

What "derived from their text" means
    The only vectors made from a customer's words are those of KB article versions approved from
    a suggestion quoting them (the version's question is the customer's question; its embeddings
    encode it). Erasing a customer removes those versions and their embeddings; the article falls
    back to its previous version, or goes when none is left, and the KB revision is bumped so
    running bots drop the vectors within seconds. Versions ingested from editors' files never
    hold customers' words and stay.

The retention purge (``[privacy] retention_days``) removes, for conversations last active before
the cut-off (tickets still open keep theirs), the same rows; customers not seen since the cut-off
and left with no conversation go too. It keeps the KB entries editors approved: once the tickets
and suggestions behind them are gone they are tied to no one (their source link is scrubbed).

The audit log keeps the internal customer id, the actor, the action and the time; an erasure
empties the details of that customer's entries and adds one ``forgotten`` entry.

Services own their transactions; the keyword-only ``_`` helpers take the session and never
commit. Nothing here talks to Telegram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import store
from kb.models import (
    Article,
    ArticleVersion,
    AuditEntry,
    Author,
    Conversation,
    Csat,
    Customer,
    Embedding,
    Feedback,
    Message,
    OutboxCall,
    Suggestion,
    Ticket,
    TicketState,
    utcnow,
)

OPEN_STATES = (TicketState.WAITING, TicketState.ASSIGNED)


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A ticket of an erased customer that has a topic in the agents' forum."""

    ticket_id: int
    topic_id: int
    card_message_id: int | None
    was_open: bool


@dataclass(slots=True)
class Erased:
    """What an erasure or a purge removed (or, in a dry run, would remove)."""

    customers: int = 0
    conversations: int = 0
    messages: int = 0
    feedback: int = 0
    tickets: int = 0
    csat: int = 0
    suggestions: int = 0
    article_versions: int = 0
    articles: int = 0
    kb_changed: bool = False
    topics: list[TopicRef] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("topics")
        return data


# -- the audit log --------------------------------------------------------------------------------


async def audit(
    session: AsyncSession, *, actor: str, action: str, customer_id: int | None, detail: str = ""
) -> None:
    """Record an action on a customer's data (no commit: part of the caller's transaction)."""
    session.add(AuditEntry(actor=actor, action=action, customer_id=customer_id, detail=detail))


async def record(
    session: AsyncSession, *, actor: str, action: str, customer_id: int | None, detail: str = ""
) -> None:
    """The same, in a transaction of its own (for reads, such as an agent viewing a profile)."""
    async with session.begin():
        await audit(session, actor=actor, action=action, customer_id=customer_id, detail=detail)


# -- /mydata ---------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def export_customer(
    session: AsyncSession, *, telegram_id: int, actor: str = "customer"
) -> dict[str, Any] | None:
    """Everything stored about the customer, as JSON-ready data; None when nothing is."""
    async with session.begin():
        customer = await session.scalar(select(Customer).where(Customer.telegram_id == telegram_id))
        if customer is None:
            return None
        scope = await _scope(session, customer_ids=[customer.id])
        conversations = (
            await session.scalars(
                select(Conversation).where(Conversation.id.in_(scope.conversations)).order_by(Conversation.id)
            )
        ).all()
        messages = (
            await session.scalars(select(Message).where(Message.id.in_(scope.messages)).order_by(Message.id))
        ).all()
        titles = dict(
            (
                await session.execute(
                    select(ArticleVersion.id, ArticleVersion.question).where(
                        ArticleVersion.id.in_({m.version_id for m in messages if m.version_id})
                    )
                )
            ).all()
        )
        feedback = (
            await session.scalars(
                select(Feedback).where(Feedback.customer_id == customer.id).order_by(Feedback.id)
            )
        ).all()
        tickets = (
            await session.scalars(select(Ticket).where(Ticket.id.in_(scope.tickets)).order_by(Ticket.id))
        ).all()
        csat = (
            await session.scalars(select(Csat).where(Csat.customer_id == customer.id).order_by(Csat.id))
        ).all()
        suggestions = (
            await session.scalars(
                select(Suggestion).where(Suggestion.id.in_(scope.suggestions)).order_by(Suggestion.id)
            )
        ).all()
        entries = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.customer_id == customer.id).order_by(AuditEntry.id)
            )
        ).all()
        await audit(session, actor=actor, action="exported", customer_id=customer.id)
        by_conversation: dict[int, list[dict[str, Any]]] = {c.id: [] for c in conversations}
        for m in messages:
            by_conversation.setdefault(m.conversation_id, []).append(
                {
                    "id": m.id,
                    "time": m.created_at.isoformat(),
                    "direction": m.direction.value,
                    "author": m.author.value,
                    "content_type": m.content_type,
                    "text": m.text,
                    "decision": m.decision,
                    "article": titles.get(m.version_id) if m.version_id else None,
                    "score": m.score,
                    "hits": m.hits,
                    "ticket_id": m.ticket_id,
                    "telegram_message_id": m.telegram_message_id,
                }
            )
        return {
            "exported_at": utcnow().isoformat(),
            "profile": {
                "id": customer.id,
                "telegram_id": customer.telegram_id,
                "first_name": customer.first_name,
                "last_name": customer.last_name,
                "username": customer.username,
                "language": customer.language,
                "first_seen": _iso(customer.first_seen),
                "last_seen": _iso(customer.last_seen),
                "tags": list(customer.tags),
                "notes": customer.notes,
            },
            "conversations": [
                {
                    "id": c.id,
                    "started_at": _iso(c.started_at),
                    "last_message_at": _iso(c.last_message_at),
                    "closed_at": _iso(c.closed_at),
                    "outcome": c.outcome,
                    "messages": by_conversation.get(c.id, []),
                }
                for c in conversations
            ],
            "feedback": [
                {"message_id": f.message_id, "helpful": f.helpful, "time": _iso(f.created_at)}
                for f in feedback
            ],
            "tickets": [
                {
                    "id": t.id,
                    "state": t.state.value,
                    "outcome": t.outcome,
                    "reason": t.reason,
                    "question": t.question,
                    "agent": t.agent_name,
                    "opened_at": _iso(t.opened_at),
                    "first_response_at": _iso(t.first_response_at),
                    "resolved_at": _iso(t.resolved_at),
                }
                for t in tickets
            ],
            "csat": [{"ticket_id": c.ticket_id, "score": c.score, "time": _iso(c.created_at)} for c in csat],
            "suggestions": [
                {
                    "id": s.id,
                    "status": s.status.value,
                    "question": s.question,
                    "answer": s.answer,
                    "ticket_id": s.ticket_id,
                    "created_at": _iso(s.created_at),
                }
                for s in suggestions
            ],
            "access_log": [
                {"time": _iso(e.at), "who": e.actor, "action": e.action, "detail": e.detail} for e in entries
            ],
        }


# -- /forget and the purge --------------------------------------------------------------------------


@dataclass(slots=True)
class _Scope:
    customers: list[int]
    conversations: list[int]
    tickets: list[int]
    messages: list[int]
    suggestions: list[int]


async def _ids(session: AsyncSession, query: Any) -> list[int]:
    return list((await session.scalars(query)).all())


async def _scope(
    session: AsyncSession, *, customer_ids: Sequence[int] = (), conversation_ids: Sequence[int] = ()
) -> _Scope:
    """The rows that hang off some customers (all of theirs) or some conversations."""
    customers = list(customer_ids)
    conversations = set(conversation_ids)
    if customers:
        conversations |= set(
            await _ids(session, select(Conversation.id).where(Conversation.customer_id.in_(customers)))
        )
    tickets: set[int] = set()
    if customers:
        tickets |= set(await _ids(session, select(Ticket.id).where(Ticket.customer_id.in_(customers))))
    if conversations:
        tickets |= set(
            await _ids(session, select(Ticket.id).where(Ticket.conversation_id.in_(conversations)))
        )
    messages = set()
    if conversations or tickets:
        messages = set(
            await _ids(
                session,
                select(Message.id).where(
                    or_(Message.conversation_id.in_(conversations), Message.ticket_id.in_(tickets))
                ),
            )
        )
    # Their words: what they wrote and the questions of their tickets.
    quoted = {
        " ".join(text.split()).lower()
        for text in await _ids(
            session,
            select(Message.text).where(
                Message.id.in_(messages), Message.author == Author.CUSTOMER, Message.text.is_not(None)
            ),
        )
        if text and text.strip()
    }
    quoted |= {
        " ".join(q.split()).lower()
        for q in await _ids(session, select(Ticket.question).where(Ticket.id.in_(tickets)))
        if q and q.strip()
    }
    suggestions = []
    for sid, question, ticket_id, customer_id in (
        await session.execute(
            select(Suggestion.id, Suggestion.question, Suggestion.ticket_id, Suggestion.customer_id)
        )
    ).all():
        if customer_id in customers or ticket_id in tickets or " ".join(question.split()).lower() in quoted:
            suggestions.append(sid)
    return _Scope(customers, sorted(conversations), sorted(tickets), sorted(messages), suggestions)


def _derived_versions_query(scope: _Scope) -> Any:
    """Article versions approved from the scope's suggestions (or sourced from its tickets)."""
    anchors = [f"suggestion {sid}" for sid in scope.suggestions]
    sources = [f"ticket:{tid}" for tid in scope.tickets]
    return select(ArticleVersion).where(
        or_(ArticleVersion.source_anchor.in_(anchors), ArticleVersion.source_file.in_(sources))
    )


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _erase(session: AsyncSession, scope: _Scope, *, knowledge: str, dry_run: bool) -> Erased:
    """Delete the scope's rows. ``knowledge``: "drop" removes the article versions derived from
    its suggestions (an erasure), "keep" only unlinks them (the retention purge)."""
    erased = Erased(
        customers=len(scope.customers),
        conversations=len(scope.conversations),
        messages=len(scope.messages),
        tickets=len(scope.tickets),
        suggestions=len(scope.suggestions),
    )
    erased.feedback = await _count(
        session,
        Feedback,
        or_(Feedback.message_id.in_(scope.messages), Feedback.customer_id.in_(scope.customers)),
    )
    erased.csat = await _count(
        session, Csat, or_(Csat.ticket_id.in_(scope.tickets), Csat.customer_id.in_(scope.customers))
    )
    versions = list((await session.scalars(_derived_versions_query(scope))).all())
    for ticket in (await session.scalars(select(Ticket).where(Ticket.id.in_(scope.tickets)))).all():
        if ticket.topic_id is not None:
            erased.topics.append(
                TopicRef(ticket.id, ticket.topic_id, ticket.card_message_id, ticket.state in OPEN_STATES)
            )
    if knowledge == "drop":
        erased.article_versions = len(versions)
    if dry_run:
        if knowledge == "drop":
            erased.articles = len(await _orphaned_articles(session, versions))
        return erased

    if knowledge == "drop" and versions:
        erased.articles = await _drop_versions(session, versions)
        erased.kb_changed = True
    elif versions:
        for version in versions:
            version.source_file, version.source_anchor = "agents", ""
    await session.execute(
        delete(Feedback).where(
            or_(Feedback.message_id.in_(scope.messages), Feedback.customer_id.in_(scope.customers))
        )
    )
    await session.execute(
        delete(Csat).where(or_(Csat.ticket_id.in_(scope.tickets), Csat.customer_id.in_(scope.customers)))
    )
    await session.execute(delete(Suggestion).where(Suggestion.id.in_(scope.suggestions)))
    # Anything else pointing at the tickets (another customer's suggestion from a gap group...)
    await session.execute(
        update(Suggestion).where(Suggestion.ticket_id.in_(scope.tickets)).values(ticket_id=None)
    )
    # The delivery journal of calls into their chat (ids and dates only, but keyed by the chat)
    chats = set(
        await _ids(session, select(Conversation.chat_id).where(Conversation.id.in_(scope.conversations)))
    )
    chats |= set(await _ids(session, select(Customer.telegram_id).where(Customer.id.in_(scope.customers))))
    await session.execute(delete(OutboxCall).where(OutboxCall.chat_id.in_(sorted(chats))))
    await session.execute(delete(Message).where(Message.id.in_(scope.messages)))
    await session.execute(delete(Ticket).where(Ticket.id.in_(scope.tickets)))
    await session.execute(delete(Conversation).where(Conversation.id.in_(scope.conversations)))
    await session.execute(delete(Customer).where(Customer.id.in_(scope.customers)))
    return erased


async def _orphaned_articles(session: AsyncSession, versions: list[ArticleVersion]) -> set[int]:
    doomed = {v.id for v in versions}
    orphaned = set()
    for article_id in {v.article_id for v in versions}:
        left = await _ids(session, select(ArticleVersion.id).where(ArticleVersion.article_id == article_id))
        if set(left) <= doomed:
            orphaned.add(article_id)
    return orphaned


async def _drop_versions(session: AsyncSession, versions: list[ArticleVersion]) -> int:
    """Remove versions and their vectors; the article falls back to its newest remaining version
    in that language, or is deleted when none is left. Returns the number of articles deleted."""
    ids = [v.id for v in versions]
    orphaned = await _orphaned_articles(session, versions)
    await session.execute(update(Message).where(Message.version_id.in_(ids)).values(version_id=None))
    await session.execute(update(Feedback).where(Feedback.version_id.in_(ids)).values(version_id=None))
    await session.execute(delete(Embedding).where(Embedding.version_id.in_(ids)))
    await session.execute(delete(ArticleVersion).where(ArticleVersion.id.in_(ids)))
    for article_id, language in {(v.article_id, v.language) for v in versions}:
        if article_id in orphaned:
            continue
        newest = await session.scalar(
            select(ArticleVersion)
            .where(ArticleVersion.article_id == article_id, ArticleVersion.language == language)
            .order_by(ArticleVersion.number.desc())
            .limit(1)
        )
        current = await session.scalar(
            select(func.count()).where(
                ArticleVersion.article_id == article_id,
                ArticleVersion.language == language,
                ArticleVersion.is_current.is_(True),
            )
        )
        if newest is not None and not current:
            newest.is_current = True
    if orphaned:
        await session.execute(delete(Article).where(Article.id.in_(orphaned)))
    await store.bump_revision(session)
    return len(orphaned)


async def forget_customer(
    session: AsyncSession, *, telegram_id: int, actor: str = "customer"
) -> Erased | None:
    """Erase everything stored about a customer (see the module's docstring); None when nothing
    was stored (never known, or already forgotten)."""
    async with session.begin():
        customer = await session.scalar(select(Customer).where(Customer.telegram_id == telegram_id))
        if customer is None:
            return None
        customer_id = customer.id
        scope = await _scope(session, customer_ids=[customer_id])
        erased = await _erase(session, scope, knowledge="drop", dry_run=False)
        await session.execute(
            update(AuditEntry).where(AuditEntry.customer_id == customer_id).values(detail="")
        )
        summary = ", ".join(f"{key} {value}" for key, value in erased.as_dict().items() if value)
        await audit(session, actor=actor, action="forgotten", customer_id=customer_id, detail=summary)
        return erased


async def purge(
    sessions: async_sessionmaker[AsyncSession],
    *,
    older_than_days: int,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Erased:
    """Remove conversations last active more than ``older_than_days`` ago, with what hangs off
    them; then customers not seen since and left with nothing. A ticket still open keeps its
    conversation."""
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    async with sessions() as session, session.begin():
        open_conversations = select(Ticket.conversation_id).where(
            Ticket.state.in_(OPEN_STATES), Ticket.conversation_id.is_not(None)
        )
        old = await _ids(
            session,
            select(Conversation.id).where(
                Conversation.last_message_at < cutoff, Conversation.id.not_in(open_conversations)
            ),
        )
        customers = await _ids(
            session,
            select(Customer.id).where(
                Customer.last_seen < cutoff,
                Customer.id.not_in(
                    select(Conversation.customer_id).where(Conversation.id.not_in(old or [0]))
                ),
                Customer.id.not_in(select(Ticket.customer_id).where(Ticket.state.in_(OPEN_STATES))),
            ),
        )
        scope = await _scope(session, customer_ids=customers, conversation_ids=old)
        erased = await _erase(session, scope, knowledge="keep", dry_run=dry_run)
        if not dry_run and scope.customers:
            await session.execute(
                update(AuditEntry).where(AuditEntry.customer_id.in_(scope.customers)).values(detail="")
            )
        if not dry_run and (scope.conversations or scope.customers):
            await audit(
                session,
                actor="system",
                action="purged",
                customer_id=None,
                detail=f"older than {older_than_days} days: "
                + ", ".join(f"{key} {value}" for key, value in erased.as_dict().items() if value),
            )
        return erased
