"""Data access for the knowledge base: keyword-only functions over an open session.

They never commit: the calling service owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select, update
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
