"""What the conversations add up to: the service report and the usefulness of each article.

Computed from the stored rows (messages, feedback, tickets, CSAT) over a window of days, in
Python after a few plain queries, so it reads the same on SQLite and PostgreSQL.

Definitions
    conversation      a customer's run of messages (a silence of 12 h starts a new one) in which
                      the customer wrote something
    self-served       a conversation with at least one bot answer and no ticket
    escalated         a conversation in which a ticket was opened
    first response    ticket opened -> the first agent message relayed to the customer
    resolution        ticket opened -> resolved
    feedback rate     answers with a "Helped"/"Didn't help" press / answers given
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb.models import (
    Article,
    ArticleVersion,
    Author,
    Conversation,
    Csat,
    Feedback,
    Message,
    Ticket,
    TicketState,
)

ANSWERED = ("answer", "picked")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _summary(seconds: list[float]) -> dict[str, float | None]:
    return {
        "n": len(seconds),
        "median_s": round(statistics.median(seconds), 1) if seconds else None,
        "p90_s": round(p, 1) if (p := _percentile(seconds, 0.9)) is not None else None,
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True, slots=True)
class _Rows:
    conversations: list[Conversation]
    messages: list[Message]
    tickets: list[Ticket]
    csat: list[Csat]
    feedback: list[Feedback]
    titles: dict[int, tuple[str, str, int]]  # version id -> (article key, title, number)


async def _load(session: AsyncSession, since: datetime) -> _Rows:
    conversations = list(
        (
            await session.scalars(
                select(Conversation).where(Conversation.last_message_at >= since).order_by(Conversation.id)
            )
        ).all()
    )
    ids = [c.id for c in conversations]
    messages: list[Message] = []
    tickets: list[Ticket] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        # In id order on every database (PostgreSQL returns rows in no particular order), so
        # ties in the top lists below come out the same everywhere.
        messages += (
            await session.scalars(
                select(Message).where(Message.conversation_id.in_(chunk)).order_by(Message.id)
            )
        ).all()
        tickets += (
            await session.scalars(select(Ticket).where(Ticket.conversation_id.in_(chunk)).order_by(Ticket.id))
        ).all()
    csat = list((await session.scalars(select(Csat).where(Csat.created_at >= since))).all())
    feedback = list((await session.scalars(select(Feedback).where(Feedback.created_at >= since))).all())
    titles = {
        version_id: (key, question, number)
        for version_id, key, question, number in await session.execute(
            select(ArticleVersion.id, Article.key, ArticleVersion.question, ArticleVersion.number).join(
                Article, Article.id == ArticleVersion.article_id
            )
        )
    }
    return _Rows(conversations, messages, tickets, csat, feedback, titles)


async def service_report(
    sessions: async_sessionmaker[AsyncSession], *, since_days: int = 30, now: datetime | None = None
) -> dict[str, Any]:
    """The figures of ``helpdesk report`` (and ``/stats``), overall and per day."""
    now = now or datetime.now(UTC)
    since = now - timedelta(days=since_days)
    async with sessions() as session:
        rows = await _load(session, since)

    by_conversation: dict[int, list[Message]] = defaultdict(list)
    for message in rows.messages:
        by_conversation[message.conversation_id].append(message)
    escalated_ids = {t.conversation_id for t in rows.tickets}
    active = [
        c for c in rows.conversations if any(m.author is Author.CUSTOMER for m in by_conversation[c.id])
    ]
    answered_ids = {c.id for c in active if any(m.decision in ANSWERED for m in by_conversation[c.id])}
    self_served = [c for c in active if c.id in answered_ids and c.id not in escalated_ids]
    escalated = [c for c in active if c.id in escalated_ids]

    first_response = [
        (t.first_response_at - t.opened_at).total_seconds() for t in rows.tickets if t.first_response_at
    ]
    resolution = [
        (t.resolved_at - t.opened_at).total_seconds()
        for t in rows.tickets
        if t.resolved_at and t.state is not TicketState.WAITING
    ]
    scores = [c.score for c in rows.csat]
    answers = [m for m in rows.messages if m.author is Author.BOT and m.decision in ANSWERED]
    rated = {f.message_id for f in rows.feedback}
    shown = Counter(m.version_id for m in answers if m.version_id)
    gaps = Counter(
        (m.text or "").strip().lower()
        for m in rows.messages
        if m.author is Author.CUSTOMER and m.content_type == "text" and m.text
        and _next_bot_decision(by_conversation[m.conversation_id], m) == "escalate"
    )  # fmt: skip

    days: dict[date, dict[str, Any]] = {}
    for offset in range(since_days, -1, -1):
        day = (now - timedelta(days=offset)).date()
        days[day] = {"day": day.isoformat(), "conversations": 0, "self_served": 0, "escalated": 0,
                     "first_response_s": [], "csat": []}  # fmt: skip
    for c in active:
        day = c.started_at.date()
        if day in days:
            days[day]["conversations"] += 1
            days[day]["self_served"] += c in self_served
            days[day]["escalated"] += c in escalated
    for t in rows.tickets:
        if t.first_response_at and t.opened_at.date() in days:
            days[t.opened_at.date()]["first_response_s"].append(
                (t.first_response_at - t.opened_at).total_seconds()
            )
    for c in rows.csat:
        if c.created_at.date() in days:
            days[c.created_at.date()]["csat"].append(c.score)
    per_day = [
        {
            **{k: v for k, v in d.items() if k not in ("first_response_s", "csat")},
            "first_response_median_s": round(statistics.median(d["first_response_s"]), 1)
            if d["first_response_s"]
            else None,
            "csat_average": round(statistics.mean(d["csat"]), 2) if d["csat"] else None,
        }
        for d in days.values()
    ]
    return {
        "since": since.isoformat(),
        "until": now.isoformat(),
        "days": since_days,
        "conversations": len(active),
        "self_service_rate": _rate(len(self_served), len(active)),
        "escalation_rate": _rate(len(escalated), len(active)),
        "tickets": len(rows.tickets),
        "first_response": _summary(first_response),
        "resolution": _summary(resolution),
        "csat": {
            "n": len(scores),
            "average": round(statistics.mean(scores), 2) if scores else None,
            "distribution": {str(score): scores.count(score) for score in range(1, 6)},
        },
        "answers": len(answers),
        "feedback_rate": _rate(len([m for m in answers if m.id in rated]), len(answers)),
        "top_articles": [
            {"article": rows.titles[v][0], "title": rows.titles[v][1], "shown": n}
            for v, n in shown.most_common(10)
            if v in rows.titles
        ],
        "top_gaps": [{"question": q, "asked": n} for q, n in gaps.most_common(10)],
        "per_day": per_day,
    }


def _next_bot_decision(messages: list[Message], message: Message) -> str | None:
    later = [m for m in messages if m.id > message.id and m.author is Author.BOT and m.decision]
    return min(later, key=lambda m: m.id).decision if later else None


async def article_usefulness(
    sessions: async_sessionmaker[AsyncSession], *, since_days: int | None = None
) -> list[dict[str, Any]]:
    """Per article version: shown, helped, didn't help, escalations right after, self-served share.

    Worst first: most "didn't help" and escalations relative to how often it was shown.
    """
    since = datetime.now(UTC) - timedelta(days=since_days) if since_days else datetime.min.replace(tzinfo=UTC)
    async with sessions() as session:
        rows = await _load(session, since)
    by_conversation: dict[int, list[Message]] = defaultdict(list)
    for message in rows.messages:
        by_conversation[message.conversation_id].append(message)
    tickets_by_conversation: dict[int, list[Ticket]] = defaultdict(list)
    for ticket in rows.tickets:
        tickets_by_conversation[ticket.conversation_id].append(ticket)
    votes: dict[int, Counter[bool]] = defaultdict(Counter)
    for f in rows.feedback:
        if f.version_id:
            votes[f.version_id][f.helpful] += 1

    stats: dict[int, dict[str, Any]] = {}
    for message in rows.messages:
        if message.author is not Author.BOT or message.decision not in ANSWERED or not message.version_id:
            continue
        entry = stats.setdefault(
            message.version_id, {"shown": 0, "escalated_after": 0, "conversations": set(), "escalated": set()}
        )
        entry["shown"] += 1
        entry["conversations"].add(message.conversation_id)
        if any(t.opened_at >= message.created_at for t in tickets_by_conversation[message.conversation_id]):
            entry["escalated_after"] += 1
            entry["escalated"].add(message.conversation_id)
    result = []
    for version_id, entry in stats.items():
        key, title, number = rows.titles.get(version_id, ("?", "?", 0))
        shown = entry["shown"]
        conversations = len(entry["conversations"])
        result.append(
            {
                "article": key,
                "title": title,
                "version": number,
                "shown": shown,
                "helped": votes[version_id][True],
                "not_helped": votes[version_id][False],
                "escalated_after": entry["escalated_after"],
                "self_served_rate": _rate(conversations - len(entry["escalated"]), conversations),
            }
        )
    result.sort(key=lambda r: (-(r["not_helped"] + r["escalated_after"]) / max(r["shown"], 1), -r["shown"]))
    return result
