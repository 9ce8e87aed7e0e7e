"""The second stage (kb.search): a reranker re-scores the first candidates of an English query.

Hashing stubs stand for the three models where the arithmetic is the point (each salts the words
differently, so each model has its own opinion); the real models on the eval sets, where the
point is the answer quality (skipped without ../shared).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bot.config import Settings, load_settings
from bot.evaluation import reranking_any_batch, throwaway_kb
from bot.runtime import Services, open_services
from ingest.pipeline import IngestOptions, ingest_paths
from kb.encoder import RoutedEncoder, members
from kb.evaluation import evaluate, read_queries
from kb.index import IndexOptions
from kb.search import RERANK_WEIGHTS, KnowledgeBase
from kb.texts import embedding_items
from tests.conftest import StubEncoder, make_settings, shared_path


class Salted(StubEncoder):
    """A model of its own: its id, and the words hashed with a salt; counts its query calls."""

    def __init__(self, model_id: str, salt: str) -> None:
        self.model_id, self.salt, self.queries = model_id, salt, 0

    def encode(self, texts, *, kind: str = "passage") -> np.ndarray:
        if kind == "query":
            self.queries += len(texts)
        return super().encode(
            [" ".join(f"{w}{self.salt}" for w in t.split()) + " x" for t in texts], kind=kind
        )


FAQ = [
    {
        "id": "refund",
        "question": "How do I get a refund for my order?",
        "answer": "Request a refund in orders.",
    },
    {"id": "password", "question": "How do I reset my password?", "answer": "Press forgot password."},
    {"id": "delivery", "question": "How long does delivery take?", "answer": "Two to four working days."},
    {"id": "cancel", "question": "Can I cancel my order?", "answer": "Yes, before it ships, in orders."},
]


@pytest.fixture
def trio() -> RoutedEncoder:
    return RoutedEncoder(
        StubEncoder(), Salted("stub-multilingual", "m"), languages=["en"], reranker=Salted("stub-rerank", "r")
    )


@pytest.fixture
async def kb(tmp_path: Path, trio: RoutedEncoder) -> AsyncIterator[Services]:
    settings = make_settings(tmp_path, lexical_weight=0.0)
    path = tmp_path / "faq.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in FAQ), encoding="utf-8")
    async with open_services(settings, encoder=trio) as services:
        await ingest_paths([path], sessions=services.sessions, encoder=trio)
        await services.kb.sync(services.sessions)
        yield services


def _best(model, query: str, entry: dict, *, answers: bool) -> float:
    items = [
        text
        for _, _, text in embedding_items(
            question=entry["question"], alt_questions=[], answer=entry["answer"], answers=answers
        )
    ]
    return float((model.encode(items) @ model.encode([query], kind="query")[0]).max())


def _expected(trio: RoutedEncoder, query: str) -> dict[str, float]:
    """Each entry's second-stage score, worked out by hand from the three models."""
    out = {}
    for entry in FAQ:
        scores = {
            "primary": _best(trio.primary, query, entry, answers=True),
            "multilingual": _best(trio.multilingual, query, entry, answers=False),
            "rerank": _best(trio.reranker, query, entry, answers=True),
        }
        out[entry["id"]] = sum(RERANK_WEIGHTS[r] * s for r, s in scores.items()) / sum(
            RERANK_WEIGHTS.values()
        )
    return out


async def test_an_unsure_english_query_is_scored_by_all_three_models(
    kb: Services, trio: RoutedEncoder
) -> None:
    query = "how do I get money back for an order"
    hits = kb.kb.search_sync([query], k=4, language="en")[0]
    assert trio.reranker.queries == 1 and trio.multilingual.queries == 1
    expected = _expected(trio, query)
    # (the reranker's vectors are kept in float16: scores within ~1e-3)
    assert {h.article_key: h.score for h in hits} == pytest.approx(expected, abs=2e-3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_a_sure_first_stage_a_big_batch_and_other_languages_skip_the_second(
    kb: Services, trio: RoutedEncoder
) -> None:
    # The question itself: the primary model is sure (score 1.0, far ahead): its scores stand.
    (hit, *_) = kb.kb.search_sync(["How do I reset my password?"], k=4, language="en")[0]
    assert hit.article_key == "password" and hit.score == pytest.approx(1.0)
    # Nine at once (a saturated bot; kb.rerank_max_batch 8): the first stage's ranking.
    many = kb.kb.search_sync([f"how do I get money back {i}" for i in range(9)], k=4, language="en")
    assert len(many) == 9
    assert trio.reranker.queries == 0
    kb.kb.search_sync(["how do I get money back 0"], k=4, language="en")  # alone, it is re-ranked
    assert trio.reranker.queries == 1
    # A Czech question goes to the multilingual model and is not re-ranked.
    before = trio.multilingual.queries
    kb.kb.search_sync(["Jak dlouho trvá doručení zásilky?"], k=4)
    assert trio.reranker.queries == 1 and trio.multilingual.queries == before + 1


async def test_a_reranker_being_made_ready_is_skipped_until_it_is(kb: Services, trio: RoutedEncoder) -> None:
    """A first start exports the re-ranker for ONNX Runtime on a thread (kb.encoder.building):
    meanwhile an unsure question keeps the first stage's ranking instead of waiting for it."""
    exporting = True
    trio.reranker.building = lambda: exporting  # type: ignore[attr-defined]
    query = "how do I get money back for an order"
    expected = _expected(trio, query)  # (the reranker's query count starts after this)
    trio.reranker.queries = 0
    first = kb.kb.search_sync([query], k=4, language="en")[0]
    assert trio.reranker.queries == 0, "no second stage"
    assert first[0].article_key == "refund" and first[0].score != pytest.approx(expected["refund"], abs=2e-3)
    exporting = False
    again = kb.kb.search_sync([query], k=4, language="en")[0]
    assert trio.reranker.queries == 1
    assert {h.article_key: h.score for h in again} == pytest.approx(expected, abs=2e-3)


async def test_an_article_the_reranker_has_not_embedded_yet_sits_it_out(
    tmp_path: Path, trio: RoutedEncoder
) -> None:
    settings = make_settings(tmp_path, lexical_weight=0.0)
    path = tmp_path / "faq.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in FAQ), encoding="utf-8")
    async with open_services(settings, encoder=trio) as services:
        await ingest_paths(
            [path], sessions=services.sessions, encoder=trio, options=IngestOptions(backfill=False)
        )
        await services.kb.sync(services.sessions)
        query = "how do I get money back for an order"
        before = {h.article_key: h.score for h in services.kb.search_sync([query], k=4, language="en")[0]}
        # Only the primary model's vectors exist: its own score is the mean of one.
        alone = {e["id"]: _best(trio.primary, query, e, answers=True) for e in FAQ}
        assert before == pytest.approx(alone)
        await services.kb.catch_up(services.sessions, budget=10)
        await services.kb.sync(services.sessions, force=True)
        after = {h.article_key: h.score for h in services.kb.search_sync([query], k=4, language="en")[0]}
        assert after == pytest.approx(_expected(trio, query), abs=2e-3)
        assert after != pytest.approx(before, abs=0.01)


def test_the_reranker_has_an_index_folder_of_its_own(tmp_path: Path, trio: RoutedEncoder) -> None:
    knowledge = KnowledgeBase(trio, tmp_path / "index", index_options=IndexOptions(hnsw_above=0))
    # Searched, the others go HNSW past hnsw_above; the reranker's, only read, stays exact, in
    # float16.
    assert [knowledge._options(i).kind_for(10**6) for i in range(3)] == ["hnsw", "hnsw", "half"]
    assert [m.model_id for m, _ in members(trio)] == ["stub-hashing-64", "stub-multilingual", "stub-rerank"]
    assert [knowledge.index_path(i).name for i in range(3)] == ["index", "multilingual", "rerank"]
    assert trio.route("en") == (True, False, False) and trio.route("cs") == (False, True, False)
    alone = RoutedEncoder(StubEncoder(), None, reranker=Salted("stub-rerank", "r"))
    assert alone.route("cs") == (True, False)  # no multilingual model: the primary searches all


# -- the real models on the eval sets (slow; skipped without ../shared) ------------------------------


@pytest.mark.slow
async def test_the_default_encoders_meet_the_ranking_goals(tmp_path: Path) -> None:
    covid, stackfaq = shared_path("eval", "covid-faq-stanford"), shared_path("eval", "stackfaq")
    settings: Settings = load_settings()
    settings = reranking_any_batch(settings)
    settings = settings.model_copy(
        update={"kb": settings.kb.model_copy(update={"index_dir": tmp_path / "index"})}
    )
    async with throwaway_kb(settings, covid / "faqs.jsonl") as services:
        assert services.kb.roles == ("primary", "multilingual", "rerank")
        figures = await asyncio.to_thread(
            evaluate, services.kb, read_queries(covid / "queries.jsonl"), services.thresholds
        )
        assert figures["mrr_at_10"] >= 0.75
    async with throwaway_kb(settings, stackfaq / "faqs.jsonl") as services:
        queries = read_queries(stackfaq / "queries.jsonl")
        # One batch (the re-ranker takes any batch here): the same vectors, one query at a time.
        results = await asyncio.to_thread(services.kb.search_sync, [q.text for q in queries], k=1)
        right = sum(
            bool(hits) and hits[0].article_key in q.expected for q, hits in zip(queries, results, strict=True)
        )
        assert right / len(queries) >= 0.96
