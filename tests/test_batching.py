"""Micro-batched searches (kb/batching.py) with the real bundled model on the example FAQ."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from bot.runtime import Services
from ingest.pipeline import ingest_paths
from kb.batching import QueryBatcher
from kb.encoder import TextEncoder
from kb.errors import KbError
from kb.search import Hit, KnowledgeBase
from tests.conftest import EXAMPLE_FAQ, RecordingEncoder

QUESTIONS = [
    "how do I reset my password",
    "I forgot my password, what now?",
    "can I get my money back",
    "how do I change my email address",
    "where is my invoice",
    "how can I delete my account",
    "do you ship abroad",
    "how do I contact support",
]


class PoisonError(KbError):
    """Raised by the encoder for the text it refuses."""


async def _kb(services: Services, encoder: TextEncoder, **options: object) -> KnowledgeBase:
    kb = KnowledgeBase(encoder, services.settings.kb.index_dir, **options)  # type: ignore[arg-type]
    await kb.sync(services.sessions)
    return kb


@pytest.fixture
async def faq(services: Services) -> Services:
    report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    assert report.added > 5 and not report.failed
    await services.kb.sync(services.sessions)
    return services


def _same(batched: list[Hit], alone: list[Hit]) -> None:
    assert [h.article_key for h in batched] == [h.article_key for h in alone]
    assert [h.version_id for h in batched] == [h.version_id for h in alone]
    assert [h.matched for h in batched] == [h.matched for h in alone]
    assert [h.score for h in batched] == pytest.approx([h.score for h in alone], abs=1e-4)


async def test_concurrent_searches_share_one_encode_and_match_one_by_one(
    faq: Services, encoder: TextEncoder
) -> None:
    counting = RecordingEncoder(encoder)
    kb = await _kb(faq, counting, batch_window=0.05)
    alone = [faq.kb.search_sync([q], k=5)[0] for q in QUESTIONS]
    counting.clear()

    batched = await asyncio.gather(*(kb.search(q, k=5) for q in QUESTIONS))

    assert counting.calls == [len(QUESTIONS)]  # one encode for all eight customers
    assert kb._batcher is not None and kb._batcher.stats.largest == len(QUESTIONS)
    for got, want in zip(batched, alone, strict=True):
        assert got, "every question finds something in the example FAQ"
        _same(got, want)


async def test_each_caller_gets_its_own_k_and_language(faq: Services, encoder: TextEncoder) -> None:
    kb = await _kb(faq, encoder, batch_window=0.05)
    one, three, five = await asyncio.gather(
        kb.search(QUESTIONS[0], k=1, language="de"),
        kb.search(QUESTIONS[2], k=3),
        kb.search(QUESTIONS[4], k=5, language="fr"),
    )
    assert kb._batcher is not None and kb._batcher.stats.batches == 1
    assert (len(one), len(three)) == (1, 3) and 3 < len(five) <= 5
    _same(one, faq.kb.search_sync([QUESTIONS[0]], k=1, language="de")[0])
    _same(three, faq.kb.search_sync([QUESTIONS[2]], k=3)[0])
    _same(five, faq.kb.search_sync([QUESTIONS[4]], k=5, language="fr")[0])


async def test_searches_arriving_while_the_encoder_works_form_the_next_batch(
    faq: Services, encoder: TextEncoder
) -> None:
    counting = RecordingEncoder(encoder)
    kb = await _kb(faq, counting, batch_window=0.0)
    first = asyncio.create_task(kb.search(QUESTIONS[0]))
    await asyncio.sleep(0)  # the batcher starts on the first one alone
    rest = [asyncio.create_task(kb.search(q)) for q in QUESTIONS[1:]]
    results = await asyncio.gather(first, *rest)

    assert all(results)
    assert counting.calls == [1, len(QUESTIONS) - 1]


async def test_an_error_reaches_only_the_caller_whose_text_caused_it(
    faq: Services, encoder: TextEncoder
) -> None:
    poison = "this text breaks the encoder"
    poisoned = RecordingEncoder(encoder, refuse=poison, error=PoisonError)
    kb = await _kb(faq, poisoned, batch_window=0.05)
    texts = [QUESTIONS[0], poison, QUESTIONS[2]]

    results = await asyncio.gather(*(kb.search(t) for t in texts), return_exceptions=True)

    assert isinstance(results[1], PoisonError)
    _same(results[0], faq.kb.search_sync([QUESTIONS[0]])[0])  # type: ignore[arg-type]
    _same(results[2], faq.kb.search_sync([QUESTIONS[2]])[0])  # type: ignore[arg-type]
    assert kb._batcher is not None and kb._batcher.stats.retried_alone == 3
    # The batcher is still serving afterwards.
    assert await kb.search(QUESTIONS[3])


async def test_a_failure_of_the_whole_batch_reaches_every_caller() -> None:
    def broken(texts: Sequence[str], k: int, languages: Sequence[str | None]) -> list[list[str]]:
        raise PoisonError("index gone")

    batcher: QueryBatcher[str] = QueryBatcher(broken, window=0.01)
    results = await asyncio.gather(*(batcher.search(t) for t in "abc"), return_exceptions=True)
    assert [type(r) for r in results] == [PoisonError] * 3


async def test_large_bursts_are_split_into_batches_of_at_most_max_batch() -> None:
    sizes: list[int] = []

    def echo(texts: Sequence[str], k: int, languages: Sequence[str | None]) -> list[list[str]]:
        sizes.append(len(texts))
        return [[t] * k for t in texts]

    batcher: QueryBatcher[str] = QueryBatcher(echo, window=0.01, max_batch=4)
    results = await asyncio.gather(*(batcher.search(str(i), k=2) for i in range(10)))
    assert results == [[str(i)] * 2 for i in range(10)]
    assert sizes == [4, 4, 2]


async def test_switched_off_the_search_runs_alone(faq: Services, encoder: TextEncoder) -> None:
    counting = RecordingEncoder(encoder)
    kb = await _kb(faq, counting, batch_window=None)
    await asyncio.gather(*(kb.search(q) for q in QUESTIONS[:3]))
    assert kb._batcher is None and counting.calls == [1, 1, 1]


async def test_a_search_started_early_is_taken_over_not_made_twice(
    faq: Services, encoder: TextEncoder
) -> None:
    counting = RecordingEncoder(encoder)
    kb = await _kb(faq, counting, query_cache=0)
    want = faq.kb.search_sync([QUESTIONS[0]], k=5, language="en")[0]
    counting.clear()

    kb.start_search(QUESTIONS[0], k=5, language="en")
    await asyncio.sleep(0.5)  # the message is stored and routed meanwhile
    assert counting.calls == [1]
    got = await kb.search(QUESTIONS[0], k=3, language="en")

    assert counting.calls == [1]  # taken over: not encoded again
    _same(got, want[:3])
    assert not kb._early


async def test_an_early_search_of_another_language_or_fewer_hits_is_not_taken_over(
    faq: Services, encoder: TextEncoder
) -> None:
    counting = RecordingEncoder(encoder)
    kb = await _kb(faq, counting, query_cache=0)
    kb.start_search(QUESTIONS[1], k=5, language="en")
    kb.start_search(QUESTIONS[2], k=1, language="en")
    await asyncio.sleep(0.5)
    counting.clear()

    await kb.search(QUESTIONS[1], k=5, language="cs")  # another fallback language: searched anew
    await kb.search(QUESTIONS[2], k=5, language="en")  # more hits wanted than were searched
    assert counting.calls == [1, 1]


async def test_early_searches_nobody_takes_over_are_dropped(
    faq: Services, encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kb.search as search_module

    kb = await _kb(faq, encoder)
    monkeypatch.setattr(search_module, "EARLY_KEPT", 3)
    for question in QUESTIONS[:5]:
        kb.start_search(question)
    assert [text for text, _ in kb._early] == QUESTIONS[2:5]  # the oldest dropped past the limit

    monkeypatch.setattr(search_module, "EARLY_SECONDS", 0.0)
    kb.start_search(QUESTIONS[5])
    assert [text for text, _ in kb._early] == [QUESTIONS[5]]  # and the stale ones when time is up
    await asyncio.sleep(0.3)


async def test_an_early_search_that_failed_is_made_again_when_asked(
    faq: Services, encoder: TextEncoder
) -> None:
    class FailingOnce(RecordingEncoder):
        failed = False

        def encode(self, texts: Sequence[str], *, kind: str = "passage") -> np.ndarray:
            if not self.failed:
                self.failed = True
                raise PoisonError("the model was busy")
            return super().encode(texts, kind=kind)

    kb = await _kb(faq, FailingOnce(encoder), query_cache=0)
    kb.start_search(QUESTIONS[0])
    await asyncio.sleep(0.3)
    hits = await kb.search(QUESTIONS[0])
    assert hits and hits[0].article_key == faq.kb.search_sync([QUESTIONS[0]], k=1)[0][0].article_key
