"""Editors' view of the knowledge base: list, history, rollback, retirement, consistency.

Every change bumps the KB revision, so running bots pick it up within ``kb.refresh_seconds``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import faiss
import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import store
from kb.errors import ArticleNotFoundError, VersionNotFoundError
from kb.models import Article, ArticleStatus, ArticleVersion, utcnow

NEAR_NEIGHBOURS = 5


@dataclass(frozen=True, slots=True)
class VersionInfo:
    number: int
    language: str
    is_current: bool
    question: str
    answer: str
    alt_questions: tuple[str, ...]
    source: str
    author: str
    created_at: datetime
    content_hash: str

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.number,
            "language": self.language,
            "current": self.is_current,
            "question": self.question,
            "alt_questions": list(self.alt_questions),
            "answer": self.answer,
            "source": self.source,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "content_hash": self.content_hash,
        }


@dataclass(frozen=True, slots=True)
class ArticleInfo:
    key: str
    status: str
    languages: tuple[str, ...]
    title: str
    current_version: int | None
    updated_at: datetime
    tags: tuple[str, ...]
    versions: tuple[VersionInfo, ...] = ()

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "key": self.key,
            "status": self.status,
            "languages": list(self.languages),
            "title": self.title,
            "current_version": self.current_version,
            "updated_at": self.updated_at.isoformat(),
            "tags": list(self.tags),
        }
        if self.versions:
            data["versions"] = [v.as_dict() for v in self.versions]
        return data


def _version_info(v: ArticleVersion) -> VersionInfo:
    source = f"{v.source_file}#{v.source_anchor}" if v.source_anchor else v.source_file
    return VersionInfo(
        v.number,
        v.language,
        v.is_current,
        v.question,
        v.answer,
        tuple(v.alt_questions),
        source,
        v.author,
        v.created_at,
        v.content_hash,
    )


def _article_info(article: Article, versions: list[ArticleVersion], *, with_history: bool) -> ArticleInfo:
    current = [v for v in versions if v.is_current]
    shown = next((v for v in current if v.language == article.language), None) or (
        current[0] if current else (versions[-1] if versions else None)
    )
    return ArticleInfo(
        key=article.key,
        status=article.status.value,
        languages=tuple(sorted({v.language for v in current})),
        title=shown.question if shown else "",
        current_version=shown.number if shown and shown.is_current else None,
        updated_at=article.updated_at,
        tags=tuple(article.tags),
        versions=tuple(_version_info(v) for v in versions) if with_history else (),
    )


async def list_articles(
    sessions: async_sessionmaker[AsyncSession], *, status: ArticleStatus | None = None
) -> list[ArticleInfo]:
    async with sessions() as session:
        articles = await store.list_articles(session, status=status)
        return [
            _article_info(a, await store.versions_of(session, article_id=a.id), with_history=False)
            for a in articles
        ]


async def show_article(sessions: async_sessionmaker[AsyncSession], key: str) -> ArticleInfo:
    async with sessions() as session:
        article = await store.find_article(session, key=key)
        if article is None:
            raise ArticleNotFoundError(key)
        versions = await store.versions_of(session, article_id=article.id)
        return _article_info(article, versions, with_history=True)


async def rollback(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    number: int,
    *,
    language: str | None = None,
    author: str = "rollback",
) -> int:
    """Make version ``number`` current again, as a new version (history stays linear).

    Returns the new version's number. The old vectors are reused: no model needed.
    """
    async with sessions() as session, session.begin():
        article = await store.find_article(session, key=key)
        if article is None:
            raise ArticleNotFoundError(key)
        versions = await store.versions_of(session, article_id=article.id)
        language = language or article.language
        old = next((v for v in versions if v.number == number and v.language == language), None)
        if old is None:
            raise VersionNotFoundError(key, number, language)
        new = await store.add_version(
            session,
            article=article,
            language=language,
            question=old.question,
            alt_questions=old.alt_questions,
            answer=old.answer,
            source_file=old.source_file,
            source_anchor=old.source_anchor,
            content_hash=old.content_hash,
            author=author,
        )
        await store.copy_embeddings(session, from_version=old.id, to_version=new.id)
        article.status = ArticleStatus.PUBLISHED
        article.updated_at = utcnow()
        await store.bump_revision(session)
        return new.number


async def retire(sessions: async_sessionmaker[AsyncSession], key: str) -> bool:
    """Stop answering from an article (kept in history); False when it was already retired."""
    async with sessions() as session, session.begin():
        article = await store.find_article(session, key=key)
        if article is None:
            raise ArticleNotFoundError(key)
        if article.status == ArticleStatus.RETIRED:
            return False
        article.status = ArticleStatus.RETIRED
        article.updated_at = utcnow()
        await store.bump_revision(session)
        return True


# -- consistency ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    first: str
    second: str
    similarity: float
    first_question: str
    second_question: str


@dataclass(frozen=True, slots=True)
class Contradiction:
    question: str
    keys: tuple[str, ...]


@dataclass(slots=True)
class Findings:
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    contradictions: list[Contradiction] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "near_duplicates": [
                {
                    "keys": [n.first, n.second],
                    "similarity": round(n.similarity, 4),
                    "questions": [n.first_question, n.second_question],
                }
                for n in self.near_duplicates
            ],
            "contradictions": [{"question": c.question, "keys": list(c.keys)} for c in self.contradictions],
        }


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


async def check_consistency(
    sessions: async_sessionmaker[AsyncSession], *, model_id: str, near_threshold: float
) -> Findings:
    """Near-duplicate questions (by their vectors) and same-question-different-answer pairs."""
    async with sessions() as session:
        rows = await store.question_vectors(session, model_id=model_id)
        live = await store.live_versions(session)
    findings = Findings()
    by_question: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for version, article in live:
        by_question[(version.language, normalise(version.question))][normalise(version.answer)].add(
            article.key
        )
    for (_, question), answers in sorted(by_question.items()):
        keys = sorted({key for group in answers.values() for key in group})
        if len(answers) > 1 and len(keys) > 1:
            findings.contradictions.append(Contradiction(question, tuple(keys)))
    if len(rows) < 2:
        return findings
    vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, neighbours = index.search(vectors, min(NEAR_NEIGHBOURS + 1, len(rows)))
    seen: set[tuple[str, str]] = set()
    for i, (row_scores, row_ids) in enumerate(zip(scores, neighbours, strict=True)):
        for score, j in zip(row_scores, row_ids, strict=True):
            if j < 0 or j == i or score < near_threshold:
                continue
            a, b = rows[i], rows[int(j)]
            if a[0] == b[0] or normalise(a[3]) == normalise(b[3]):
                continue  # same article, or an exact repeat (reported as a contradiction or merged)
            pair = tuple(sorted((a[1], b[1])))
            if pair in seen:
                continue
            seen.add(pair)
            first, second = (a, b) if a[1] == pair[0] else (b, a)
            findings.near_duplicates.append(
                NearDuplicate(pair[0], pair[1], float(score), first[3], second[3])
            )
    findings.near_duplicates.sort(key=lambda n: -n.similarity)
    return findings
