"""Data access for the knowledge base: keyword-only functions over an open session.

They never commit: the calling service owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kb.models import Article, ArticleStatus, ArticleVersion, Embedding, EmbeddingKind, KbState, utcnow

_STATE_ID = 1


async def get_revision(session: AsyncSession) -> int:
    revision = await session.scalar(select(KbState.revision).where(KbState.id == _STATE_ID))
    return revision or 0


async def bump_revision(session: AsyncSession) -> int:
    state = await session.get(KbState, _STATE_ID, with_for_update=True)
    if state is None:
        state = KbState(id=_STATE_ID, revision=0)
        session.add(state)
    state.revision += 1
    state.updated_at = utcnow()
    await session.flush()
    return state.revision


async def find_article(session: AsyncSession, *, key: str) -> Article | None:
    return await session.scalar(select(Article).where(Article.key == key))


async def current_version(session: AsyncSession, *, article_id: int, language: str) -> ArticleVersion | None:
    return await session.scalar(
        select(ArticleVersion).where(
            ArticleVersion.article_id == article_id,
            ArticleVersion.language == language,
            ArticleVersion.is_current.is_(True),
        )
    )


async def current_hashes(session: AsyncSession, *, keys: Sequence[str]) -> dict[tuple[str, str], str]:
    """(key, language) -> content hash of the current version, for the given article keys."""
    rows = await session.execute(
        select(Article.key, ArticleVersion.language, ArticleVersion.content_hash, Article.status)
        .join(ArticleVersion, ArticleVersion.article_id == Article.id)
        .where(Article.key.in_(list(keys)), ArticleVersion.is_current.is_(True))
    )
    return {
        (key, lang): (digest if status == ArticleStatus.PUBLISHED else "")
        for key, lang, digest, status in rows
    }


async def add_version(
    session: AsyncSession,
    *,
    article: Article,
    language: str,
    question: str,
    alt_questions: Sequence[str],
    answer: str,
    source_file: str,
    source_anchor: str,
    content_hash: str,
    author: str,
) -> ArticleVersion:
    """Make a new current version of ``article`` in ``language``; the old one stays in history."""
    last = await session.scalar(
        select(ArticleVersion.number)
        .where(ArticleVersion.article_id == article.id, ArticleVersion.language == language)
        .order_by(ArticleVersion.number.desc())
        .limit(1)
    )
    await session.execute(
        update(ArticleVersion)
        .where(ArticleVersion.article_id == article.id, ArticleVersion.language == language)
        .values(is_current=False)
    )
    version = ArticleVersion(
        article_id=article.id,
        number=(last or 0) + 1,
        language=language,
        is_current=True,
        question=question,
        alt_questions=list(alt_questions),
        answer=answer,
        source_file=source_file,
        source_anchor=source_anchor,
        content_hash=content_hash,
        author=author,
    )
    session.add(version)
    await session.flush()
    return version


async def add_embeddings(
    session: AsyncSession,
    *,
    version_id: int,
    model_id: str,
    items: Sequence[tuple[EmbeddingKind, int, str]],
    vectors: np.ndarray,
) -> list[Embedding]:
    rows = [
        Embedding(
            version_id=version_id,
            kind=kind,
            ordinal=ordinal,
            text=text,
            model_id=model_id,
            dim=int(vector.shape[0]),
            vector=np.asarray(vector, dtype=np.float32).tobytes(),
        )
        for (kind, ordinal, text), vector in zip(items, vectors, strict=True)
    ]
    session.add_all(rows)
    await session.flush()
    return rows


async def live_versions(session: AsyncSession) -> list[tuple[ArticleVersion, Article]]:
    """Current versions of published articles: what the bot may answer from."""
    rows = await session.execute(
        select(ArticleVersion, Article)
        .join(Article, ArticleVersion.article_id == Article.id)
        .where(ArticleVersion.is_current.is_(True), Article.status == ArticleStatus.PUBLISHED)
    )
    return [(version, article) for version, article in rows]


async def embeddings_of(
    session: AsyncSession, *, model_id: str, version_ids: Sequence[int]
) -> list[Embedding]:
    if not version_ids:
        return []
    rows: list[Embedding] = []
    ids = list(version_ids)
    for start in range(0, len(ids), 500):  # keep the IN list within every backend's limits
        chunk = ids[start : start + 500]
        result = await session.scalars(
            select(Embedding)
            .where(Embedding.model_id == model_id, Embedding.version_id.in_(chunk))
            .order_by(Embedding.id)
        )
        rows.extend(result)
    return rows


async def get_version(session: AsyncSession, *, version_id: int) -> ArticleVersion | None:
    return await session.get(ArticleVersion, version_id)


async def sources_current(session: AsyncSession, *, source_file: str) -> list[tuple[Article, ArticleVersion]]:
    """Live current versions that came from ``source_file``."""
    rows = await session.execute(
        select(Article, ArticleVersion)
        .join(ArticleVersion, ArticleVersion.article_id == Article.id)
        .where(
            ArticleVersion.is_current.is_(True),
            ArticleVersion.source_file == source_file,
            Article.status == ArticleStatus.PUBLISHED,
        )
    )
    return [(article, version) for article, version in rows]


async def live_by_question(
    session: AsyncSession, *, questions: Sequence[str]
) -> list[tuple[Article, ArticleVersion]]:
    """Live current versions whose question equals one of ``questions`` (case-insensitively)."""
    found: list[tuple[Article, ArticleVersion]] = []
    lowered = sorted({q.lower() for q in questions})
    for start in range(0, len(lowered), 500):
        rows = await session.execute(
            select(Article, ArticleVersion)
            .join(ArticleVersion, ArticleVersion.article_id == Article.id)
            .where(
                ArticleVersion.is_current.is_(True),
                Article.status == ArticleStatus.PUBLISHED,
                func.lower(ArticleVersion.question).in_(lowered[start : start + 500]),
            )
        )
        found.extend((article, version) for article, version in rows)
    return found


async def retire_version(session: AsyncSession, *, article: Article, version: ArticleVersion) -> bool:
    """Take one language version out of answers; retire the article when none is left.

    Returns True when the whole article was retired.
    """
    version.is_current = False
    await session.flush()
    remaining = await session.scalar(
        select(func.count())
        .select_from(ArticleVersion)
        .where(ArticleVersion.article_id == article.id, ArticleVersion.is_current.is_(True))
    )
    if not remaining:
        article.status = ArticleStatus.RETIRED
        article.updated_at = utcnow()
        return True
    return False


async def list_articles(session: AsyncSession, *, status: ArticleStatus | None = None) -> list[Article]:
    query = select(Article).order_by(Article.key)
    if status is not None:
        query = query.where(Article.status == status)
    return list((await session.scalars(query)).all())


async def versions_of(session: AsyncSession, *, article_id: int) -> list[ArticleVersion]:
    return list(
        (
            await session.scalars(
                select(ArticleVersion)
                .where(ArticleVersion.article_id == article_id)
                .order_by(ArticleVersion.language, ArticleVersion.number)
            )
        ).all()
    )


async def copy_embeddings(session: AsyncSession, *, from_version: int, to_version: int) -> int:
    """Reuse the vectors of an identical older version (rollback): no model needed."""
    rows = (await session.scalars(select(Embedding).where(Embedding.version_id == from_version))).all()
    session.add_all(
        Embedding(
            version_id=to_version,
            kind=r.kind,
            ordinal=r.ordinal,
            text=r.text,
            model_id=r.model_id,
            dim=r.dim,
            vector=r.vector,
        )
        for r in rows
    )
    await session.flush()
    return len(rows)


async def question_vectors(session: AsyncSession, *, model_id: str) -> list[tuple[int, str, str, str, bytes]]:
    """(article id, key, language, question, vector) of every live current version's question."""
    rows = await session.execute(
        select(Article.id, Article.key, ArticleVersion.language, ArticleVersion.question, Embedding.vector)
        .join(ArticleVersion, ArticleVersion.article_id == Article.id)
        .join(Embedding, Embedding.version_id == ArticleVersion.id)
        .where(
            ArticleVersion.is_current.is_(True),
            Article.status == ArticleStatus.PUBLISHED,
            Embedding.model_id == model_id,
            Embedding.kind == EmbeddingKind.QUESTION,
        )
        .order_by(Article.key)
    )
    return [tuple(row) for row in rows]
