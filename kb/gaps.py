"""Knowledge from customers: what the KB could not answer, grouped by meaning.

A question is a gap when the bot escalated it (no answer good enough), when the customer said
the answer did not help, or when it led to a ticket. Gaps are clustered with the same
embeddings the KB uses and ranked by how many different customers asked; each group carries
example wordings, the article the bot tried, and what agents answered in those tickets.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb.encoder import TextEncoder
from kb.models import Article, ArticleVersion, Author, Conversation, Feedback, Message, Ticket

SAME_MEANING = 0.55  # cosine similarity at which two questions join one group
EXAMPLES = 5


@dataclass(slots=True)
class _Gap:
    text: str
    customer_id: int
    reason: str  # no_answer / not_helpful / escalated
    tried_version: int | None = None
    ticket_id: int | None = None


@dataclass(slots=True)
class GapGroup:
    questions: list[_Gap] = field(default_factory=list)
    centroid: np.ndarray | None = None

    def as_dict(self, titles: dict[int, str], agent_answers: dict[int, list[str]]) -> dict[str, Any]:
        wordings = list(dict.fromkeys(g.text for g in self.questions))
        tried = Counter(g.tried_version for g in self.questions if g.tried_version)
        answers = [a for g in self.questions if g.ticket_id for a in agent_answers.get(g.ticket_id, [])]
        return {
            "customers": len({g.customer_id for g in self.questions}),
            "asked": len(self.questions),
            "examples": wordings[:EXAMPLES],
            "reasons": dict(Counter(g.reason for g in self.questions)),
            "article_tried": titles.get(tried.most_common(1)[0][0]) if tried else None,
            "agent_answers": list(dict.fromkeys(answers))[:EXAMPLES],
            "tickets": sorted({g.ticket_id for g in self.questions if g.ticket_id}),
        }


async def _collect(
    session: AsyncSession, since: datetime
) -> tuple[list[_Gap], dict[int, str], dict[int, list[str]]]:
    conversations = {
        c.id: c
        for c in (
            await session.scalars(select(Conversation).where(Conversation.last_message_at >= since))
        ).all()
    }
    messages = list(
        (
            await session.scalars(
                select(Message)
                .where(Message.conversation_id.in_(list(conversations) or [0]))
                .order_by(Message.id)
            )
        ).all()
    )
    unhelpful = {
        f.message_id
        for f in (await session.scalars(select(Feedback).where(Feedback.helpful.is_(False)))).all()
    }
    tickets = list(
        (await session.scalars(select(Ticket).where(Ticket.opened_at >= since).order_by(Ticket.id))).all()
    )
    gaps: list[_Gap] = []
    last_question: dict[int, Message] = {}
    for m in messages:
        if m.author is Author.CUSTOMER and m.content_type == "text" and m.text and not m.text.startswith("/"):
            last_question[m.conversation_id] = m
            continue
        asked = last_question.get(m.conversation_id)
        if m.author is not Author.BOT or asked is None:
            continue
        customer_id = conversations[m.conversation_id].customer_id
        if m.decision == "escalate":
            gaps.append(_Gap(asked.text or "", customer_id, "no_answer"))
        elif m.id in unhelpful:
            gaps.append(_Gap(asked.text or "", customer_id, "not_helpful", tried_version=m.version_id))
    for t in tickets:
        if t.question:
            gaps.append(_Gap(t.question, t.customer_id, "escalated", ticket_id=t.id))
    titles = {
        vid: question
        for vid, question in await session.execute(
            select(ArticleVersion.id, ArticleVersion.question).join(
                Article, Article.id == ArticleVersion.article_id
            )
        )
    }
    agent_answers: dict[int, list[str]] = defaultdict(list)
    ticket_ids = [t.id for t in tickets]
    for start in range(0, len(ticket_ids), 500):
        rows = await session.scalars(
            select(Message)
            .where(
                Message.ticket_id.in_(ticket_ids[start : start + 500]),
                Message.author == Author.AGENT,
                Message.decision.in_(("relay", "agent_kb")),  # what reached the customer, not notes
            )
            .order_by(Message.id)
        )
        for m in rows:
            if m.text and m.ticket_id:
                agent_answers[m.ticket_id].append(m.text)
    return gaps, titles, agent_answers


def cluster(vectors: np.ndarray, *, threshold: float = SAME_MEANING) -> list[list[int]]:
    """Greedy single-pass clustering on normalised vectors: join the nearest group above the bound."""
    groups: list[list[int]] = []
    centroids: list[np.ndarray] = []
    for i, vector in enumerate(vectors):
        if centroids:
            similarities = np.stack(centroids) @ vector
            best = int(np.argmax(similarities))
            if similarities[best] >= threshold:
                groups[best].append(i)
                mean = vectors[groups[best]].mean(axis=0)
                centroids[best] = mean / (np.linalg.norm(mean) or 1.0)
                continue
        groups.append([i])
        centroids.append(vector)
    return groups


async def knowledge_gaps(
    sessions: async_sessionmaker[AsyncSession], encoder: TextEncoder, *, since_days: int = 30
) -> list[dict[str, Any]]:
    since = datetime.now(UTC) - timedelta(days=since_days)
    async with sessions() as session:
        gaps, titles, agent_answers = await _collect(session, since)
    if not gaps:
        return []
    vectors = await asyncio.to_thread(encoder.encode, [g.text for g in gaps])
    groups = [GapGroup([gaps[i] for i in members]) for members in cluster(vectors)]
    result = [g.as_dict(titles, agent_answers) for g in groups]
    result.sort(key=lambda g: (-g["customers"], -g["asked"]))
    return result
