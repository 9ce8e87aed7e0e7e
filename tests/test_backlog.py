"""Deferred embedding: ingest writes the primary model's vectors, the secondary model's follow.

Stub encoders where the models are beside the point (two hashing stubs with their own ids stand
for MiniLM and e5); the real routed pair for the cross-lingual search that catches up.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from bot.config import Settings
from bot.runtime import Services, open_services
from ingest.pipeline import IngestOptions, ingest_paths
from kb.backlog import Backfill, backfills, backlogs
from kb.e5onnx import MODEL_ID as E5_MODEL_ID
from kb.e5onnx import E5OnnxEncoder
from kb.encoder import RoutedEncoder, SentenceEncoder
from kb.models import Embedding, KbState
from tests.conftest import StubEncoder, eventually, running_bot

DEFERRED = IngestOptions(backfill=False)


class SecondStub(StubEncoder):
    """Another model: its own id and vectors (the words hashed with a salt)."""

    model_id = E5_MODEL_ID  # what `helpdesk kb stats` reports under the default configuration

    def encode(self, texts, *, kind: str = "passage") -> np.ndarray:
        return super().encode([f"{t} salt" for t in texts], kind=kind)


@pytest.fixture
def pair() -> RoutedEncoder:
    return RoutedEncoder(StubEncoder(), SecondStub())


@pytest.fixture
async def routed(settings: Settings, pair: RoutedEncoder) -> AsyncIterator[Services]:
    async with open_services(settings, encoder=pair) as services:
        yield services


def faq(tmp_path: Path, count: int, name: str = "faq.jsonl", prefix: str = "e") -> Path:
    path = tmp_path / name
    entries = [
        {
            "id": f"{prefix}{i}",
            "question": f"How do I use {prefix} feature {i} number{i}?",
            "answer": f"Open menu {i}.",
        }
        for i in range(count)
    ]
    path.write_text("\n".join(json.dumps(e) for e in entries), encoding="utf-8")
    return path


async def vectors_by_model(services: Services) -> Counter[str]:
    async with services.sessions() as session:
        rows = await session.execute(select(Embedding.model_id, func.count()).group_by(Embedding.model_id))
        return Counter(dict(rows.all()))


async def revision(services: Services) -> int:
    async with services.sessions() as session:
        return await session.scalar(select(KbState.revision)) or 0


async def pending(services: Services) -> int:
    return sum(b.pending for b in await backlogs(services.sessions, services.encoder))


async def test_ingest_answers_from_the_primary_model_and_leaves_the_rest_as_a_backlog(
    routed: Services, tmp_path: Path
) -> None:
    report = await ingest_paths(
        [faq(tmp_path, 12)], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED
    )
    assert (report.added, report.backfilled, report.pending) == (12, 0, 12)
    assert report.as_dict()["pending"] == 12
    counts = await vectors_by_model(routed)
    assert counts["stub-hashing-64"] == 24 and counts[E5_MODEL_ID] == 0  # question + answer each
    [backlog] = await backlogs(routed.sessions, routed.encoder)
    assert (backlog.model_id, backlog.pending, backlog.live, backlog.done) == (E5_MODEL_ID, 12, 12, 0)
    await routed.kb.sync(routed.sessions)
    hits = await routed.kb.search("How do I use e feature 7 number7?")
    assert hits[0].article_key == "e7" and hits[0].score > 0.99


async def test_by_default_ingest_works_the_backlog_off_before_it_returns(
    routed: Services, tmp_path: Path
) -> None:
    batches: list[int] = []
    report = await ingest_paths(
        [faq(tmp_path, 5)], sessions=routed.sessions, encoder=routed.encoder, on_backfill=batches.append
    )
    assert (report.added, report.backfilled, report.pending) == (5, 5, 0)
    assert batches == [5]
    assert (await vectors_by_model(routed))[E5_MODEL_ID] == 5  # questions only: no answer chunks
    # Whatever an earlier run left is worked off too, even when no file changed.
    await ingest_paths(
        [faq(tmp_path, 8, "more.jsonl", prefix="m")],
        sessions=routed.sessions,
        encoder=routed.encoder,
        options=DEFERRED,
    )
    assert await pending(routed) == 8
    again = await ingest_paths([tmp_path / "faq.jsonl"], sessions=routed.sessions, encoder=routed.encoder)
    assert (again.unchanged, again.backfilled, again.pending) == (5, 8, 0)


async def test_an_interrupted_backfill_keeps_its_batches_and_a_new_process_resumes(
    settings: Settings, routed: Services, tmp_path: Path
) -> None:
    await ingest_paths(
        [faq(tmp_path, 10)], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED
    )
    before = await revision(routed)
    crashing = Backfill(routed.encoder.multilingual, answers=False, batch=4, publish_every=3600)
    assert await crashing.step(routed.sessions) == 4  # ... and the process dies here
    assert await pending(routed) == 6
    assert await revision(routed) == before, (
        "an unfinished backlog is published at most every publish_every s"
    )

    # A new process: a bot's refresh (newest first, small batches) carries on where it stopped.
    async with open_services(settings, encoder=RoutedEncoder(StubEncoder(), SecondStub())) as fresh:
        assert await fresh.kb.catch_up(fresh.sessions) == 6
        assert await pending(fresh) == 0
        assert await revision(fresh) == before + 1, "the batch that empties the backlog publishes it"
        assert await fresh.kb.sync(fresh.sessions)
        assert await fresh.kb.catch_up(fresh.sessions) == 0
    assert (await vectors_by_model(routed))[E5_MODEL_ID] == 10


class Building(SecondStub):
    """A model whose first start is still exporting it (kb.encoder.building)."""

    ready = False

    def building(self) -> bool:
        return not self.ready

    def encode(self, texts, *, kind="passage"):  # type: ignore[no-untyped-def]
        assert self.ready, "nothing may wait behind a model that is being made ready"
        return super().encode(texts, kind=kind)


async def test_a_bots_refresh_leaves_a_model_being_made_ready_for_later(
    settings: Settings, routed: Services, tmp_path: Path
) -> None:
    """A first start exports the re-ranker for ONNX Runtime on a thread, and encodes wait for
    it: the refresh's backlog batch waits for a later refresh instead of a thread sitting behind
    the export (which a stop would then wait for too)."""
    await ingest_paths([faq(tmp_path, 4)], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED)
    second = Building()
    async with open_services(settings, encoder=RoutedEncoder(StubEncoder(), second)) as fresh:
        assert await fresh.kb.catch_up(fresh.sessions) == 0
        assert await pending(fresh) == 4
        second.ready = True
        assert await fresh.kb.catch_up(fresh.sessions) == 4


class Gated(SecondStub):
    """Holds every encode call at a gate: the test decides what happens meanwhile."""

    def __init__(self, parties: int = 1) -> None:
        self.gate = threading.Barrier(parties + 1, timeout=20)  # the callers and the test

    def encode(self, texts, *, kind: str = "passage") -> np.ndarray:
        self.gate.wait()  # arrived ...
        self.gate.wait()  # ... and let through
        return super().encode(texts, kind=kind)


async def test_two_workers_on_one_backlog_never_store_a_version_twice(
    routed: Services, tmp_path: Path
) -> None:
    await ingest_paths(
        [faq(tmp_path, 12)], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED
    )
    model = Gated(parties=2)
    oldest, newest = Backfill(model, answers=False), Backfill(model, answers=False, newest_first=True)
    both = asyncio.gather(oldest.step(routed.sessions), newest.step(routed.sessions))
    await asyncio.to_thread(model.gate.wait)  # both have read the same 12 versions and are encoding
    await asyncio.to_thread(model.gate.wait)
    assert await both == [12, 12]
    assert await pending(routed) == 0
    async with routed.sessions() as session:
        rows = (
            await session.execute(
                select(Embedding.version_id, Embedding.kind, Embedding.ordinal).where(
                    Embedding.model_id == E5_MODEL_ID
                )
            )
        ).all()
    assert len(rows) == len(set(rows)) == 12


async def test_versions_changed_or_retired_meanwhile_are_not_embedded(
    routed: Services, tmp_path: Path
) -> None:
    doc = faq(tmp_path, 3)
    await ingest_paths([doc], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED)
    model = Gated()
    step = asyncio.ensure_future(Backfill(model, answers=False).step(routed.sessions))
    await asyncio.to_thread(model.gate.wait)  # it has read e0, e1, e2 and is encoding them
    lines = doc.read_text().splitlines()
    changed = json.loads(lines[0]) | {"answer": "Open the new menu."}
    doc.write_text("\n".join([json.dumps(changed), lines[1]]))  # e0 changed, e2 gone
    report = await ingest_paths([doc], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED)
    assert (report.updated, report.retired, report.pending) == (1, 1, 2)
    await asyncio.to_thread(model.gate.wait)
    assert await step == 3
    assert (await vectors_by_model(routed))[E5_MODEL_ID] == 1, "e1 only: not the old e0, not e2"
    assert await pending(routed) == 1  # the new e0
    assert await backfills(routed.encoder)[0].run(routed.sessions) == 1


async def test_kb_rebuild_works_the_backlog_off(routed: Services, tmp_path: Path) -> None:
    await ingest_paths([faq(tmp_path, 6)], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED)
    await routed.kb.sync(routed.sessions, force=True)
    assert await pending(routed) == 0


async def test_kb_stats_shows_the_backlog(
    routed: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    await ingest_paths([faq(tmp_path, 3)], sessions=routed.sessions, encoder=routed.encoder, options=DEFERRED)
    monkeypatch.setenv("HELPDESK_DATABASE__URL", routed.settings.database.url)
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    runner = CliRunner()
    waiting = await asyncio.to_thread(runner.invoke, app, ["kb", "stats"])
    assert waiting.exit_code == 0, waiting.output
    assert f"vectors of {E5_MODEL_ID}: 0 of 3 live versions; 3 waiting" in " ".join(waiting.stdout.split())
    await backfills(routed.encoder)[0].run(routed.sessions)
    done = await asyncio.to_thread(runner.invoke, app, ["kb", "stats"])
    assert "3 of 3 live versions; none waiting" in " ".join(done.stdout.split())
    monkeypatch.setenv("HELPDESK_KB__MULTILINGUAL_MODEL", "")
    monkeypatch.setenv("HELPDESK_KB__RERANK_MODEL", "")
    single = await asyncio.to_thread(runner.invoke, app, ["kb", "stats"])
    assert "vectors of" not in single.stdout


async def test_a_running_bot_works_off_a_backlog_left_by_another_process(
    settings: Settings, pair: RoutedEncoder, tmp_path: Path
) -> None:
    async with running_bot(settings, pair, forum=False) as harness:
        services = harness.services
        report = await ingest_paths(
            [faq(tmp_path, 20)], sessions=services.sessions, encoder=services.encoder, options=DEFERRED
        )
        assert report.pending == 20

        async def worked_off() -> bool:
            return await pending(services) == 0

        await eventually(worked_off, within=services.settings.kb.refresh_seconds * 3 + 10)

        async def indexed() -> bool:  # and its own index follows at the next refresh
            return services.kb.vectors[1] == (await vectors_by_model(services))[E5_MODEL_ID]

        await eventually(indexed, within=services.settings.kb.refresh_seconds * 2 + 5)


# -- the real models: a cross-lingual question finds a new entry once the backlog is worked off --


@pytest.fixture(scope="module")
def nano() -> E5OnnxEncoder:
    return E5OnnxEncoder()


@pytest.mark.slow
async def test_cross_lingual_search_catches_up(
    settings: Settings, encoder: SentenceEncoder, nano: E5OnnxEncoder, tmp_path: Path
) -> None:
    doc = tmp_path / "faq.jsonl"
    doc.write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                {
                    "id": "refund",
                    "question": "How do I get a refund for my order?",
                    "answer": "Press 'Refund'.",
                },
                {
                    "id": "hours",
                    "question": "When is your customer support open?",
                    "answer": "9:00 to 18:00.",
                },
            ]
        )
    )
    czech = "Jak dostanu zpět peníze za svou objednávku?"
    async with open_services(settings, encoder=RoutedEncoder(encoder, nano)) as services:
        await ingest_paths([doc], sessions=services.sessions, encoder=services.encoder, options=DEFERRED)
        await services.kb.sync(services.sessions)
        english = await services.kb.search("I want my money back for an order")
        assert english[0].article_key == "refund"
        assert not any(hit.matched != "lexical" for hit in await services.kb.search(czech))
        assert await services.kb.catch_up(services.sessions) == 2
        assert await services.kb.sync(services.sessions)
        hits = await services.kb.search(czech)
        assert hits[0].article_key == "refund" and hits[0].matched == "question"
