"""Data access for the knowledge base: keyword-only functions over an open session.

They never commit: the calling service owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Integer, Select, String, exists, func, insert, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from kb.models import Article, ArticleStatus, ArticleVersion, Embedding, EmbeddingKind, KbState, utcnow

_STATE_ID = 1


async def get_revision(session: AsyncSession) -> int:
    revision = await session.scalar(select(KbState.revision).where(KbState.id == _STATE_ID))
    return revision or 0


async def lock_state(session: AsyncSession) -> None:
    """Take the KB's write lock for the rest of the transaction, before reading anything: an
    UPDATE of the state row as the first statement (PostgreSQL: a row lock; SQLite: its one write
    lock, so what the transaction reads next cannot go stale). Check-then-insert writers (the
    backfill of vectors) serialise on it."""
    result = await session.execute(
        update(KbState).where(KbState.id == _STATE_ID).values(revision=KbState.revision)
    )
    if not result.rowcount:
        session.add(KbState(id=_STATE_ID, revision=0))
        await session.flush()


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


async def current_sources(session: AsyncSession, *, keys: Sequence[str]) -> dict[tuple[str, str], str]:
    """(key, language) -> the source file of the current version, for the given article keys."""
    rows = await session.execute(
        select(Article.key, ArticleVersion.language, ArticleVersion.source_file)
        .join(ArticleVersion, ArticleVersion.article_id == Article.id)
        .where(Article.key.in_(list(keys)), ArticleVersion.is_current.is_(True))
    )
    return {(key, lang): source for key, lang, source in rows}


async def move_source(session: AsyncSession, *, pairs: Sequence[tuple[str, str]], source_file: str) -> None:
    """Record ``source_file`` as the source of the current versions of these (key, language) pairs
    (their file moved there)."""
    for key, language in pairs:
        article = select(Article.id).where(Article.key == key).scalar_subquery()
        await session.execute(
            update(ArticleVersion)
            .where(
                ArticleVersion.article_id == article,
                ArticleVersion.language == language,
                ArticleVersion.is_current.is_(True),
            )
            .values(source_file=source_file)
        )


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


# -- bulk writes (a first ingest of thousands of entries): Core statements, no unit of work -------

_CHUNK = 500  # rows per IN list: within every backend's limits


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def article_ids(session: AsyncSession, *, keys: Iterable[str]) -> dict[str, int]:
    """key -> id of the articles that exist among ``keys``."""
    found: dict[str, int] = {}
    for chunk in chunks(sorted(set(keys))):
        rows = await session.execute(select(Article.key, Article.id).where(Article.key.in_(chunk)))
        found.update((key, article_id) for key, article_id in rows)
    return found


async def insert_articles(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Insert new articles (``key``, ``language``, ``tags``) in bulk; returns key -> id."""
    if not rows:
        return {}
    now = utcnow()
    # RETURNING without sort_by_parameter_order: SQLite then takes many rows per statement (with
    # the order guaranteed it inserts them one by one); the unique key maps the ids back.
    result = await session.execute(
        insert(Article).returning(Article.key, Article.id),
        [{"status": ArticleStatus.PUBLISHED, "created_at": now, "updated_at": now, **row} for row in rows],
    )
    return {key: article_id for key, article_id in result}


async def republish_articles(session: AsyncSession, *, tags: Mapping[int, Sequence[str]]) -> None:
    """Publish existing articles again (article id -> its tags): they have a new version."""
    if tags:
        now = utcnow()
        await session.execute(
            update(Article),
            [
                {"id": article_id, "status": ArticleStatus.PUBLISHED, "tags": list(t), "updated_at": now}
                for article_id, t in tags.items()
            ],
        )


async def version_state(
    session: AsyncSession, *, article_ids: Iterable[int]
) -> dict[tuple[int, str], tuple[int, bool]]:
    """(article id, language) -> (highest version number, whether one version is current)."""
    state: dict[tuple[int, str], tuple[int, bool]] = {}
    for chunk in chunks(sorted(set(article_ids))):
        rows = await session.execute(
            select(
                ArticleVersion.article_id,
                ArticleVersion.language,
                func.max(ArticleVersion.number),
                func.max(ArticleVersion.is_current.cast(Integer)),
            )
            .where(ArticleVersion.article_id.in_(chunk))
            .group_by(ArticleVersion.article_id, ArticleVersion.language)
        )
        state.update(((a, lang), (number, bool(current))) for a, lang, number, current in rows)
    return state


async def supersede(session: AsyncSession, *, pairs: Iterable[tuple[int, str]]) -> None:
    """The current versions of these (article id, language) pairs stop being current."""
    by_language: dict[str, list[int]] = {}
    for article_id, language in pairs:
        by_language.setdefault(language, []).append(article_id)
    for language, ids in by_language.items():
        for chunk in chunks(sorted(ids)):
            await session.execute(
                update(ArticleVersion)
                .where(
                    ArticleVersion.article_id.in_(chunk),
                    ArticleVersion.language == language,
                    ArticleVersion.is_current.is_(True),
                )
                .values(is_current=False)
                .execution_options(synchronize_session=False)
            )


async def insert_versions(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert current versions in bulk (every column but ``id``, ``is_current`` and ``created_at``),
    at most one per (article, language); returns their ids in the order of ``rows``."""
    if not rows:
        return []
    now = utcnow()
    result = await session.execute(
        insert(ArticleVersion).returning(
            ArticleVersion.article_id, ArticleVersion.language, ArticleVersion.id
        ),
        [{"is_current": True, "created_at": now, **row} for row in rows],
    )
    ids = {(article_id, language): version_id for article_id, language, version_id in result}
    return [ids[(row["article_id"], row["language"])] for row in rows]


def embedding_rows(
    *, version_id: int, model_id: str, items: Sequence[tuple[EmbeddingKind, int, str]], vectors: np.ndarray
) -> list[dict[str, Any]]:
    """The ``embeddings`` rows of one version's items and their vectors, for :func:`insert_embeddings`."""
    return [
        {
            "version_id": version_id,
            "kind": kind,
            "ordinal": ordinal,
            "text": text,
            "model_id": model_id,
            "dim": int(vector.shape[0]),
            "vector": np.asarray(vector, dtype=np.float32).tobytes(),
        }
        for (kind, ordinal, text), vector in zip(items, vectors, strict=True)
    ]


async def insert_embeddings(session: AsyncSession, *, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Embedding), list(rows))


# -- vectors a model still owes (deferred embedding) ------------------------------------------------


def _lacking(model_id: str) -> Any:
    """Live current versions without a vector of ``model_id``."""
    return (
        select(ArticleVersion)
        .join(Article, ArticleVersion.article_id == Article.id)
        .where(
            ArticleVersion.is_current.is_(True),
            Article.status == ArticleStatus.PUBLISHED,
            ~exists().where(Embedding.version_id == ArticleVersion.id, Embedding.model_id == model_id),
        )
    )


async def versions_lacking(
    session: AsyncSession, *, model_id: str, limit: int, newest_first: bool = False
) -> list[ArticleVersion]:
    """Up to ``limit`` live current versions that ``model_id`` has not embedded, by id."""
    order = ArticleVersion.id.desc() if newest_first else ArticleVersion.id
    return list((await session.scalars(_lacking(model_id).order_by(order).limit(limit))).all())


async def count_lacking(session: AsyncSession, *, model_id: str) -> int:
    subquery = _lacking(model_id).with_only_columns(ArticleVersion.id).subquery()
    return await session.scalar(select(func.count()).select_from(subquery)) or 0


async def count_live(session: AsyncSession) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(ArticleVersion)
            .join(Article, ArticleVersion.article_id == Article.id)
            .where(ArticleVersion.is_current.is_(True), Article.status == ArticleStatus.PUBLISHED)
        )
        or 0
    )


async def still_lacking(session: AsyncSession, *, model_id: str, version_ids: Sequence[int]) -> set[int]:
    """Which of ``version_ids`` are still live and still without a vector of ``model_id``."""
    found: set[int] = set()
    for chunk in chunks(list(version_ids)):
        found.update(
            await session.scalars(
                _lacking(model_id).with_only_columns(ArticleVersion.id).where(ArticleVersion.id.in_(chunk))
            )
        )
    return found


class LiveVersion(NamedTuple):
    """A live current version as the index and the consistency check read it: plain values (a
    tuple: a big KB's sync makes one per version)."""

    id: int
    article_id: int
    number: int
    language: str
    question: str
    alt_questions: list[str]
    answer: str


class LiveArticle(NamedTuple):
    id: int
    key: str


def _live() -> Select[Any]:
    """The ids of the live versions: current versions of published articles."""
    return (
        select(ArticleVersion.id)
        .join(Article, ArticleVersion.article_id == Article.id)
        .where(ArticleVersion.is_current.is_(True), Article.status == ArticleStatus.PUBLISHED)
    )


async def live_versions(session: AsyncSession) -> list[tuple[LiveVersion, LiveArticle]]:
    """Current versions of published articles: what the bot may answer from (plain rows read
    through the Core connection, not ORM objects: a sync of a big KB reads every one of them;
    the alternatives' JSON is decoded here, most being an empty list)."""
    connection = await session.connection()
    rows = await connection.execute(
        _live().with_only_columns(
            ArticleVersion.id,
            ArticleVersion.article_id,
            ArticleVersion.number,
            ArticleVersion.language,
            ArticleVersion.question,
            type_coerce(ArticleVersion.alt_questions, String),
            ArticleVersion.answer,
            Article.key,
        )
    )
    return [
        (LiveVersion(vid, aid, number, language, question, _json_list(alts), answer), LiveArticle(aid, key))
        for vid, aid, number, language, question, alts, answer, key in rows
    ]


def _json_list(value: Any) -> list[Any]:
    if not value or value == "[]":
        return []
    return list(json.loads(value) if isinstance(value, str | bytes) else value)


async def live_fingerprint(session: AsyncSession) -> tuple[int, int]:
    """How many live versions there are and the sum of their ids: with the revision, what a
    cache of them is checked against (a database restored or swapped under the same revision
    shows here)."""
    live = _live().subquery()
    count, total = (await session.execute(select(func.count(), func.coalesce(func.sum(live.c.id), 0)))).one()
    return int(count), int(total)


async def embeddings_of(session: AsyncSession, *, model_id: str, version_ids: Sequence[int]) -> list[Any]:
    """The stored vectors of ``model_id`` for ``version_ids``: rows with ``id``, ``version_id``,
    ``kind`` and ``vector`` (plain rows, not ORM objects: a sync of a big KB reads tens of thousands)."""
    rows: list[Any] = []
    for chunk in chunks(list(version_ids)):
        result = await session.execute(
            select(Embedding.id, Embedding.version_id, Embedding.kind, Embedding.vector)
            .where(Embedding.model_id == model_id, Embedding.version_id.in_(chunk))
            .order_by(Embedding.id)
        )
        rows.extend(result)
    return rows


async def get_version(session: AsyncSession, *, version_id: int) -> ArticleVersion | None:
    return await session.get(ArticleVersion, version_id)


async def sources_current(session: AsyncSession, *, source_file: str) -> list[tuple[int, str, int, str]]:
    """(article id, key, version id, language) of the live current versions from ``source_file``."""
    rows = await session.execute(
        select(Article.id, Article.key, ArticleVersion.id, ArticleVersion.language)
        .join(ArticleVersion, ArticleVersion.article_id == Article.id)
        .where(
            ArticleVersion.is_current.is_(True),
            ArticleVersion.source_file == source_file,
            Article.status == ArticleStatus.PUBLISHED,
        )
    )
    return [tuple(row) for row in rows]


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
