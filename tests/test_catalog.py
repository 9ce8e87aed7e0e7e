"""The catalog of live versions cached beside the index (kb.catalog): a restart reads it instead
of every version; a stale, foreign or damaged one is rebuilt from the database. The real model,
real FAISS and a real database throughout."""

from __future__ import annotations

import gc
import logging
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.runtime import Services
from ingest.pipeline import ingest_paths
from kb import heap, store
from kb.files import current_folder
from kb.index import read_meta
from kb.search import KnowledgeBase
from tests.conftest import EXAMPLE_FAQ
from tests.test_batching import QUESTIONS


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many live versions each read of every one of them returned."""
    counts: list[int] = []
    read = store.live_versions

    async def counting(session):  # type: ignore[no-untyped-def]
        rows = await read(session)
        counts.append(len(rows))
        return rows

    monkeypatch.setattr(store, "live_versions", counting)
    return counts


async def _synced(services: Services, **options: object) -> KnowledgeBase:
    kb = KnowledgeBase(services.encoder, services.settings.kb.index_dir, batch_window=None, **options)  # type: ignore[arg-type]
    await kb.sync(services.sessions)
    return kb


def _answers(kb: KnowledgeBase) -> list[list[tuple[str, str, int, str, float]]]:
    return [
        [(h.article_key, h.title, h.version, h.matched, round(h.score, 5)) for h in hits]
        for hits in kb.search_sync(QUESTIONS, k=3)
    ]


async def test_a_restart_reads_the_catalog_not_every_version(services: Services, reads: list[int]) -> None:
    report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    assert report.added > 5
    reads.clear()  # the ingest's consistency check reads them too
    built = await _synced(services)
    assert reads == [report.added], "the first start reads every live version"
    assert (current_folder(built.catalog_path) / "meta.json").exists()

    again = await _synced(services)
    assert reads == [report.added], "a restart at the same revision reads none"
    assert again.size == built.size
    assert _answers(again) == _answers(built)
    for question in ("PayPal", "two-factor authentication recovery codes"):  # the lexical channel
        assert again._snapshot.catalog.lexical.top([question], 5) == built._snapshot.catalog.lexical.top(
            [question], 5
        )


async def test_a_catalog_of_another_revision_language_or_database_is_rebuilt(
    services: Services, reads: list[int]
) -> None:
    await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    reads.clear()
    built = await _synced(services)
    key = built.search_sync(["How do I reset my password?"])[0][0].article_key
    assert len(reads) == 1

    await _synced(services, default_language="cs")
    assert len(reads) == 2, "another default language ranks other versions: rebuilt"

    # The database changed under the same revision (restored from a backup, swapped by hand):
    # the live versions' count and ids tell.
    async with services.sessions() as session:
        await session.execute(text("UPDATE articles SET status = 'retired' WHERE key = :key"), {"key": key})
        await session.commit()
    before = read_meta(services.settings.kb.index_dir)
    swapped = await _synced(services)
    assert len(reads) == 3 and swapped.size == built.size - 1
    after = read_meta(services.settings.kb.index_dir)
    assert before is not None and after is not None and after.revision == before.revision
    assert after.live != before.live, "the vector index is rebuilt for the changed live versions too"
    assert swapped.vectors[0] < built.vectors[0]
    assert key not in {h.article_key for h in swapped.search_sync(["How do I reset my password?"])[0]}


async def test_a_damaged_catalog_is_rebuilt_and_logged(
    services: Services, reads: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    reads.clear()
    built = await _synced(services)
    folder = current_folder(built.catalog_path)
    (folder / "arrays.npz").write_bytes(b"not a numpy archive")
    with caplog.at_level(logging.WARNING, logger="kb.catalog"):
        again = await _synced(services)
    assert "unreadable" in caplog.text and len(reads) == 2
    assert _answers(again) == _answers(built)
    assert current_folder(built.catalog_path) != folder, "the rebuilt catalog is saved anew"
    await _synced(services)
    assert len(reads) == 2, "the rebuilt catalog is read at the next start"


async def test_a_catalog_that_cannot_be_saved_costs_only_the_next_start(
    services: Services, reads: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    reads.clear()
    blocked = Path(services.settings.kb.index_dir) / "catalog"
    shutil.rmtree(blocked)  # the empty KB's, saved when the services opened
    blocked.write_text("a file where the catalog's folder goes")
    with caplog.at_level(logging.WARNING, logger="kb.search"):
        kb = await _synced(services)
    assert "could not be saved" in caplog.text
    assert kb.search_sync(["How do I reset my password?"])[0], "the bot answers all the same"
    await _synced(services)
    assert len(reads) == 2


def test_the_collector_is_paused_until_the_last_pause_ends_and_then_restored() -> None:
    assert gc.isenabled()
    with heap.collector_paused():
        with heap.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heap.collector_paused():
            pass
        assert not gc.isenabled(), "a collector off before stays off"
    finally:
        gc.enable()
