"""The app-wide services, built once from the settings and shared by the CLI and the bot."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from kb import db
from kb.decision import Thresholds
from kb.encoder import SentenceEncoder, TextEncoder
from kb.search import KnowledgeBase

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    encoder: TextEncoder
    kb: KnowledgeBase

    @property
    def thresholds(self) -> Thresholds:
        kb = self.settings.kb
        return Thresholds(answer=kb.answer_threshold, suggest=kb.suggest_threshold, margin=kb.answer_margin)


@asynccontextmanager
async def open_services(
    settings: Settings, *, encoder: TextEncoder | None = None, upgrade: bool = True, sync: bool = True
) -> AsyncIterator[Services]:
    """Migrate the database, load the model and bring the index up to date."""
    if upgrade:
        await db.upgrade(settings.database.url)
    engine = db.create_engine(settings.database.url, echo=settings.database.echo)
    try:
        sessions = db.session_factory(engine)
        encoder = encoder or SentenceEncoder(settings.kb.model)
        knowledge = KnowledgeBase(
            encoder,
            settings.kb.index_dir,
            default_language=settings.kb.default_language,
            lexical_weight=settings.kb.lexical_weight,
        )
        services = Services(settings, engine, sessions, encoder, knowledge)
        if sync:
            await knowledge.sync(sessions)
        yield services
    finally:
        await engine.dispose()
