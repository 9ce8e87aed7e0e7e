"""Suggestions: what agents answered, proposed as KB entries; editors approve or reject them.

Approving writes a new article version (author = the editor, source = the ticket) with its
vectors and bumps the KB revision, so running bots answer from it within seconds.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import store
from kb.encoder import TextEncoder
from kb.errors import KbError
from kb.models import Article, ArticleStatus, Suggestion, SuggestionStatus, utcnow
from kb.privacy import audit
from kb.search import embed_versions
from kb.texts import content_hash


class SuggestionNotFoundError(KbError):
    def __init__(self, suggestion_id: int) -> None:
        self.suggestion_id = suggestion_id
        super().__init__(f"no suggestion #{suggestion_id} (see `helpdesk suggestions list`)")


class SuggestionClosedError(KbError):
    def __init__(self, suggestion_id: int, status: str) -> None:
        self.suggestion_id, self.status = suggestion_id, status
        super().__init__(f"suggestion #{suggestion_id} is already {status}")


@dataclass(frozen=True, slots=True)
class Approved:
    suggestion_id: int
    article_key: str
    version: int
    created: bool


def as_dict(s: Suggestion) -> dict[str, Any]:
    return {
        "id": s.id,
        "status": s.status.value,
        "question": s.question,
        "answer": s.answer,
        "ticket_id": s.ticket_id,
        "customer_id": s.customer_id,
        "agent_id": s.agent_id,
        "created_at": s.created_at.isoformat(),
    }


def suggestion_key(question: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", question).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80].rstrip("-") or "entry"
    return f"agents/{slug}"


async def list_suggestions(
    sessions: async_sessionmaker[AsyncSession], *, status: SuggestionStatus | None = SuggestionStatus.PENDING
) -> list[dict[str, Any]]:
    async with sessions() as session:
        query = select(Suggestion).order_by(Suggestion.id)
        if status is not None:
            query = query.where(Suggestion.status == status)
        return [as_dict(s) for s in (await session.scalars(query)).all()]


async def get_suggestion(sessions: async_sessionmaker[AsyncSession], suggestion_id: int) -> dict[str, Any]:
    async with sessions() as session:
        suggestion = await session.get(Suggestion, suggestion_id)
        if suggestion is None:
            raise SuggestionNotFoundError(suggestion_id)
        return as_dict(suggestion)


async def approve(
    sessions: async_sessionmaker[AsyncSession],
    encoder: TextEncoder,
    suggestion_id: int,
    *,
    editor: str,
    question: str | None = None,
    answer: str | None = None,
    language: str = "en",
) -> Approved:
    """Turn a suggestion into a KB entry (the editor may have edited question and answer)."""
    async with sessions() as session, session.begin():
        suggestion = await session.get(Suggestion, suggestion_id, with_for_update=True)
        if suggestion is None:
            raise SuggestionNotFoundError(suggestion_id)
        if suggestion.status is not SuggestionStatus.PENDING:
            raise SuggestionClosedError(suggestion_id, suggestion.status.value)
        question = (question or suggestion.question).strip()
        answer = (answer or suggestion.answer).strip()
        key = suggestion_key(question)
        article = await store.find_article(session, key=key)
        created = article is None
        if article is None:
            article = Article(key=key, language=language, tags=["from-agents"])
            session.add(article)
            await session.flush()
        article.status = ArticleStatus.PUBLISHED
        article.updated_at = utcnow()
        version = await store.add_version(
            session,
            article=article,
            language=language,
            question=question,
            alt_questions=[],
            answer=answer,
            source_file=f"ticket:{suggestion.ticket_id}"
            if suggestion.ticket_id
            else f"suggestion:{suggestion.id}",
            source_anchor=f"suggestion {suggestion.id}",
            content_hash=content_hash(question=question, alt_questions=[], answer=answer, tags=article.tags),
            author=editor,
        )
        await embed_versions(session, encoder, [version])
        suggestion.status = SuggestionStatus.APPROVED
        if suggestion.customer_id is not None:
            await audit(
                session,
                actor=editor,
                action="suggestion_approved",
                customer_id=suggestion.customer_id,
                detail=f"suggestion {suggestion.id} -> {key} v{version.number}",
            )
        await store.bump_revision(session)
        return Approved(suggestion.id, key, version.number, created)


async def reject(sessions: async_sessionmaker[AsyncSession], suggestion_id: int) -> None:
    async with sessions() as session, session.begin():
        suggestion = await session.get(Suggestion, suggestion_id, with_for_update=True)
        if suggestion is None:
            raise SuggestionNotFoundError(suggestion_id)
        if suggestion.status is not SuggestionStatus.PENDING:
            raise SuggestionClosedError(suggestion_id, suggestion.status.value)
        suggestion.status = SuggestionStatus.REJECTED


async def claim_unannounced(sessions: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    """Pending suggestions the editors in Telegram have not been sent yet, marked as sent now
    (whoever claims them sends them; a failed send is not retried)."""
    async with sessions() as session, session.begin():
        rows = list(
            (
                await session.scalars(
                    select(Suggestion)
                    .where(Suggestion.status == SuggestionStatus.PENDING, Suggestion.announced_at.is_(None))
                    .order_by(Suggestion.id)
                    .limit(50)
                )
            ).all()
        )
        now = utcnow()
        for suggestion in rows:
            suggestion.announced_at = now
        return [as_dict(s) for s in rows]


async def suggest_from_gaps(
    sessions: async_sessionmaker[AsyncSession], groups: list[dict[str, Any]]
) -> list[int]:
    """A pending suggestion for each gap group that agents answered and nobody suggested yet."""
    created: list[int] = []
    async with sessions() as session, session.begin():
        known = {(s.question.strip().lower()) for s in (await session.scalars(select(Suggestion))).all()}
        for group in groups:
            if not group["agent_answers"] or not group["examples"]:
                continue
            question = group["examples"][0]
            if question.strip().lower() in known:
                continue
            suggestion = Suggestion(
                question=question,
                answer=group["agent_answers"][0],
                ticket_id=group["tickets"][0] if group["tickets"] else None,
                agent_id=0,
            )
            session.add(suggestion)
            await session.flush()
            created.append(suggestion.id)
            known.add(question.strip().lower())
    return created
