"""The app-wide services, built once from the settings and shared by the CLI and the bot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from ingest.pipeline import MB, IngestOptions
from kb import db, language
from kb.decision import Thresholds
from kb.encoder import TextEncoder, make_kb_encoder
from kb.index import IndexOptions
from kb.search import KnowledgeBase

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    encoder: TextEncoder
    kb: KnowledgeBase
    writes: db.GroupCommit  # small, frequent writes, committed together (see kb.db)

    @property
    def thresholds(self) -> Thresholds:
        return thresholds_of(self.settings)


def thresholds_of(settings: Settings) -> Thresholds:
    """The decision's thresholds as configured (``[kb]``)."""
    kb = settings.kb
    return Thresholds(
        answer=kb.answer_threshold,
        suggest=kb.suggest_threshold,
        margin=kb.answer_margin,
        margin_floor=kb.margin_floor,
        cross_lingual_suggest=kb.cross_lingual_suggest_threshold,
    )


@asynccontextmanager
async def open_services(
    settings: Settings, *, encoder: TextEncoder | None = None, upgrade: bool = True, sync: bool = True
) -> AsyncIterator[Services]:
    """Migrate the database, load the model and bring the index up to date."""
    # The language identifier loads in a thread meanwhile (it used to delay the first answer).
    languages = asyncio.ensure_future(asyncio.to_thread(language.load))
    engine: AsyncEngine | None = None
    try:
        if upgrade:
            await db.upgrade(settings.database.url)
        engine = db.create_engine(settings.database.url, echo=settings.database.echo)
        sessions = db.session_factory(engine)
        encoder = encoder or make_kb_encoder(
            settings.kb.model,
            settings.kb.multilingual_model,
            languages=settings.kb.model_languages,
            onnx_cache=settings.kb.onnx_cache if settings.kb.onnx_queries else None,
            int8_queries=settings.kb.int8_queries,
            rerank_model=settings.kb.rerank_model,
        )
        knowledge = KnowledgeBase(
            encoder,
            settings.kb.index_dir,
            default_language=settings.kb.default_language,
            lexical_weight=settings.kb.lexical_weight,
            batch_window=settings.kb.batch_window_ms / 1000 if settings.kb.batch_queries else None,
            index_options=IndexOptions(
                hnsw_above=settings.kb.hnsw_above, ef_search=settings.kb.hnsw_ef_search
            ),
            query_cache=settings.kb.query_cache_size,
            rerank_max_batch=settings.kb.rerank_max_batch,
        )
        services = Services(settings, engine, sessions, encoder, knowledge, db.GroupCommit(sessions))
        if sync:
            await knowledge.sync(sessions)
        await languages
        yield services
    finally:
        await asyncio.gather(languages, return_exceptions=True)
        if engine is not None:
            await engine.dispose()


def ingest_options(
    settings: Settings, *, keep_missing: bool = False, author: str = "ingest"
) -> IngestOptions:
    """The pipeline's options from the configuration (the CLI and editors in Telegram share them)."""
    return IngestOptions(
        default_language=settings.kb.default_language,
        author=author,
        keep_missing=keep_missing,
        max_file_bytes=int(settings.ingest.max_file_mb * MB),
        near_duplicate_threshold=settings.ingest.near_duplicate_threshold,
        detect_languages=settings.ingest.detect_languages,
    )
