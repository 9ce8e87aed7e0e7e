"""Retrieval with the real bundled model on real FAQ documents (skipped without ../shared)."""

from __future__ import annotations

import asyncio

from bot.runtime import Services
from ingest.pipeline import ingest_paths
from kb.decision import Action, decide
from kb.evaluation import evaluate, read_queries
from tests.conftest import shared_path


async def test_homebrew_uninstall_paraphrase(services: Services) -> None:
    faq = shared_path("docs", "homebrew-faq", "docs", "FAQ.md")
    report = await ingest_paths([faq], sessions=services.sessions, encoder=services.encoder)
    assert report.added == 28 and not report.failed
    await services.kb.sync(services.sessions)
    hits = await services.kb.search("how can I remove brew from my machine completely")
    decision = decide(hits, services.thresholds)
    assert decision.action is Action.ANSWER
    assert decision.chosen[0].title == "How do I uninstall Homebrew?"


async def test_stackfaq_quality_does_not_regress(services: Services) -> None:
    data = shared_path("eval", "stackfaq")
    report = await ingest_paths([data / "faqs.jsonl"], sessions=services.sessions, encoder=services.encoder)
    assert report.added == 125
    await services.kb.sync(services.sessions)
    figures = await asyncio.to_thread(
        evaluate, services.kb, read_queries(data / "queries.jsonl"), services.thresholds
    )
    assert figures["recall_at_1"] >= 0.94
    assert figures["mrr_at_10"] >= 0.96
