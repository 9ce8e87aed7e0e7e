"""Vectors the KB still owes: the deferred embedding of articles by its secondary models.

Ingest embeds entries with the primary model (all-MiniLM-L6-v2) inside each file's transaction,
so the KB answers in the primary model's languages as soon as the file is written. The other
models of a :class:`~kb.encoder.RoutedEncoder` (the multilingual e5, several times slower per
text) are paid afterwards: their *backlog* is the live current versions without a vector of
that model. The database is the only record of it (no queue, no flag), so it survives a crash
and whoever runs next carries on:

- ``helpdesk ingest`` works the whole backlog off after its files (oldest versions first);
- a running bot works on it for a few seconds per refresh (newest first, so it meets an ingest
  process working oldest first at the end of the backlog, not at every batch);
- ``helpdesk kb rebuild`` works it off before rebuilding; ``helpdesk kb stats`` shows it.

Until a version is embedded by a model, queries routed to that model alone (another language)
do not find it; queries in the primary model's languages are not affected.

Each batch is encoded outside any transaction and written in one of its own, which first takes
the KB's write lock (:func:`kb.store.lock_state`), skips versions that gained vectors (another
process) or went away meanwhile, and inserts the rest. The KB revision is bumped by the batch
that empties the backlog and, before that, at most every ``publish_every`` seconds, so running
bots rebuild their indexes a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import store
from kb.encoder import TextEncoder, deferred, encode_distinct
from kb.models import ArticleVersion
from kb.texts import embedding_items

log = logging.getLogger(__name__)

BATCH = 256  # versions per transaction when working the backlog off
PUBLISH_EVERY = 30.0  # seconds between revision bumps while a backlog is being worked off


@dataclass(frozen=True, slots=True)
class Backlog:
    """How far one model is behind: live current versions it has not embedded yet."""

    model_id: str
    pending: int
    live: int

    @property
    def done(self) -> int:
        return self.live - self.pending

    def as_dict(self) -> dict[str, object]:
        return {"model_id": self.model_id, "pending": self.pending, "live": self.live}


async def backlog_of(session: AsyncSession, *, model_ids: Sequence[str]) -> list[Backlog]:
    """The backlog of each of ``model_ids`` (no model needs to be loaded)."""
    if not model_ids:
        return []
    live = await store.count_live(session)
    return [
        Backlog(model_id, await store.count_lacking(session, model_id=model_id), live)
        for model_id in model_ids
    ]


async def backlogs(sessions: async_sessionmaker[AsyncSession], encoder: TextEncoder) -> list[Backlog]:
    """The backlog of every deferred model of ``encoder`` (none for a single model)."""
    async with sessions() as session:
        return await backlog_of(session, model_ids=[model.model_id for model, _ in deferred(encoder)])


class Backfill:
    """Works off one model's backlog, ``batch`` versions per transaction."""

    def __init__(
        self,
        model: TextEncoder,
        *,
        answers: bool,
        batch: int = BATCH,
        newest_first: bool = False,
        publish_every: float = PUBLISH_EVERY,
    ) -> None:
        self.model = model
        self.answers = answers
        self.batch = batch
        self.newest_first = newest_first
        self.publish_every = publish_every
        self._published = time.monotonic()

    async def step(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Embed and store one batch; returns how many versions it took (0: nothing pending)."""
        async with sessions() as session:
            versions = await store.versions_lacking(
                session, model_id=self.model.model_id, limit=self.batch, newest_first=self.newest_first
            )
        if not versions:
            return 0
        rows = await asyncio.to_thread(self._embed, versions)
        async with sessions() as session, session.begin():
            await store.lock_state(session)
            wanted = await store.still_lacking(
                session, model_id=self.model.model_id, version_ids=[v.id for v in versions]
            )
            await store.insert_embeddings(session, rows=[r for r in rows if r["version_id"] in wanted])
            now = time.monotonic()
            if now - self._published >= self.publish_every or not await store.count_lacking(
                session, model_id=self.model.model_id
            ):
                await store.bump_revision(session)
                self._published = now
        return len(versions)

    def _embed(self, versions: Sequence[ArticleVersion]) -> list[dict[str, object]]:
        plans = [
            embedding_items(
                question=v.question, alt_questions=v.alt_questions, answer=v.answer, answers=self.answers
            )
            for v in versions
        ]
        vectors = encode_distinct(self.model, [text for plan in plans for _, _, text in plan])
        rows: list[dict[str, object]] = []
        offset = 0
        for version, plan in zip(versions, plans, strict=True):
            rows += store.embedding_rows(
                version_id=version.id,
                model_id=self.model.model_id,
                items=plan,
                vectors=vectors[offset : offset + len(plan)],
            )
            offset += len(plan)
        return rows

    async def run(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        budget: float | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Work the backlog off (or for about ``budget`` seconds); returns the versions embedded."""
        started = time.monotonic()
        total = 0
        while budget is None or time.monotonic() - started < budget:
            done = await self.step(sessions)
            if not done:
                break
            total += done
            if on_batch is not None:
                on_batch(done)
        if total:
            log.info("embedded %d versions for model %s", total, self.model.model_id)
        return total


def backfills(
    encoder: TextEncoder,
    *,
    batch: int = BATCH,
    newest_first: bool = False,
    publish_every: float = PUBLISH_EVERY,
) -> list[Backfill]:
    """One :class:`Backfill` per deferred model of ``encoder``."""
    return [
        Backfill(model, answers=answers, batch=batch, newest_first=newest_first, publish_every=publish_every)
        for model, answers in deferred(encoder)
    ]
