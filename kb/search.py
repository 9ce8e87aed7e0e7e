"""Search at run time: the encoder plus the on-disk index, kept in step with the database.

:class:`KnowledgeBase` answers ``search`` with typed :class:`Hit` s (one per article, its best
score over the question, alternatives and answer chunks). ``sync`` brings the in-memory index
to the database's KB revision: from the on-disk cache when that is current, else from the
``embeddings`` rows (encoding what the configured model has not embedded yet), then saved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import store
from kb.encoder import TextEncoder
from kb.errors import IndexMissingError
from kb.index import Row, VectorIndex, read_meta
from kb.models import Article, ArticleVersion
from kb.texts import embedding_items

log = logging.getLogger(__name__)

CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class Hit:
    article_id: int
    article_key: str
    version_id: int
    version: int
    title: str
    language: str
    score: float
    matched: str  # question / alternative / answer

    def as_log(self) -> dict[str, object]:
        return {
            "article": self.article_key,
            "version_id": self.version_id,
            "version": self.version,
            "score": round(self.score, 4),
            "matched": self.matched,
        }


@dataclass(frozen=True, slots=True)
class _Version:
    id: int
    article_id: int
    key: str
    number: int
    question: str
    language: str


class KnowledgeBase:
    """Encoder + index + the live versions' titles; safe to share across handlers."""

    def __init__(self, encoder: TextEncoder, index_dir: Path | str, *, default_language: str = "en") -> None:
        self.encoder = encoder
        self.index_dir = Path(index_dir)
        self.default_language = default_language
        self._index = VectorIndex(model_id=encoder.model_id, dim=encoder.dim)
        self._versions: dict[int, _Version] = {}
        self._by_article: dict[int, dict[str, _Version]] = {}
        self._sync_lock = asyncio.Lock()

    @property
    def revision(self) -> int:
        return self._index.revision

    @property
    def size(self) -> int:
        return len(self._by_article)

    # -- keeping up with the database ---------------------------------------------------------

    async def sync(self, sessions: async_sessionmaker[AsyncSession], *, force: bool = False) -> bool:
        """Bring the index to the database's revision; True when something changed."""
        async with self._sync_lock:
            async with sessions() as session:
                revision = await store.get_revision(session)
                if not force and revision == self._index.revision and self._versions:
                    return False
                live = await store.live_versions(session)
                index = None if force else self._load_cached(revision)
                if index is None:
                    index = await self._build(session, live, revision)
                    await session.commit()
                    await asyncio.to_thread(index.save, self.index_dir)
            self._install(index, live)
            log.info("knowledge base at revision %d: %d articles", revision, self.size)
            return True

    def _load_cached(self, revision: int) -> VectorIndex | None:
        meta = read_meta(self.index_dir)
        if meta is None or meta.revision != revision:
            return None
        try:
            # A model or dimension mismatch raises IndexMismatchError: the caller must rebuild.
            return VectorIndex.load(self.index_dir, model_id=self.encoder.model_id, dim=self.encoder.dim)
        except IndexMissingError:
            return None

    async def _build(
        self, session: AsyncSession, live: list[tuple[ArticleVersion, Article]], revision: int
    ) -> VectorIndex:
        version_ids = [v.id for v, _ in live]
        rows = await store.embeddings_of(session, model_id=self.encoder.model_id, version_ids=version_ids)
        embedded = {r.version_id for r in rows}
        missing = [(v, a) for v, a in live if v.id not in embedded]
        if missing:
            log.info("embedding %d versions for model %s", len(missing), self.encoder.model_id)
            rows.extend(await embed_versions(session, self.encoder, [v for v, _ in missing]))
        by_id = {v.id: (v, a) for v, a in live}
        vectors = np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32).reshape(
            len(rows), self.encoder.dim
        )
        index_rows = [
            Row(r.id, r.version_id, by_id[r.version_id][1].id, by_id[r.version_id][0].language, r.kind.value)
            for r in rows
        ]
        return VectorIndex.build(
            model_id=self.encoder.model_id,
            dim=self.encoder.dim,
            vectors=vectors,
            rows=index_rows,
            revision=revision,
        )

    def _install(self, index: VectorIndex, live: list[tuple[ArticleVersion, Article]]) -> None:
        versions = {v.id: _Version(v.id, a.id, a.key, v.number, v.question, v.language) for v, a in live}
        by_article: dict[int, dict[str, _Version]] = {}
        for v in versions.values():
            by_article.setdefault(v.article_id, {})[v.language] = v
        # Swap all three at once: a search running in between sees either the old or the new.
        self._index, self._versions, self._by_article = index, versions, by_article

    # -- searching ----------------------------------------------------------------------------

    async def search(self, text: str, *, k: int = 5, language: str | None = None) -> list[Hit]:
        vectors = await asyncio.to_thread(self.encoder.encode, [text])
        return self.rank(vectors, k=k, language=language)[0]

    def search_sync(
        self, texts: Sequence[str], *, k: int = 5, language: str | None = None
    ) -> list[list[Hit]]:
        return self.rank(self.encoder.encode(texts), k=k, language=language)

    def rank(self, vectors: np.ndarray, *, k: int, language: str | None = None) -> list[list[Hit]]:
        index, versions, by_article = self._index, self._versions, self._by_article
        results = []
        for candidates in index.search_batch(vectors, CANDIDATES):
            best: dict[int, tuple[float, str]] = {}
            for row, score in candidates:
                if row.version_id not in versions:
                    continue
                if row.article_id not in best or score > best[row.article_id][0]:
                    best[row.article_id] = (score, row.kind)
            ranked = sorted(best.items(), key=lambda item: item[1][0], reverse=True)[:k]
            hits = []
            for article_id, (score, kind) in ranked:
                v = self._pick_language(by_article[article_id], language)
                hits.append(Hit(article_id, v.key, v.id, v.number, v.question, v.language, score, kind))
            results.append(hits)
        return results

    def _pick_language(self, translations: dict[str, _Version], language: str | None) -> _Version:
        for lang in (language, self.default_language):
            if lang and lang in translations:
                return translations[lang]
        return next(iter(translations.values()))


async def embed_versions(
    session: AsyncSession, encoder: TextEncoder, versions: Sequence[ArticleVersion]
) -> list:
    """Encode and store the embedding rows of ``versions`` for ``encoder``'s model (no commit)."""
    plans = [
        embedding_items(question=v.question, alt_questions=v.alt_questions, answer=v.answer) for v in versions
    ]
    texts = [text for plan in plans for _, _, text in plan]
    vectors = await asyncio.to_thread(encoder.encode, texts)
    rows = []
    offset = 0
    for version, plan in zip(versions, plans, strict=True):
        rows += await store.add_embeddings(
            session,
            version_id=version.id,
            model_id=encoder.model_id,
            items=plan,
            vectors=vectors[offset : offset + len(plan)],
        )
        offset += len(plan)
    return rows
