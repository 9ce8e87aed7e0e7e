"""Search at scale: the HNSW index above ``kb.hnsw_above``, the query-vector cache, the lexical
channel's top documents; the real bundled model and real FAISS throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.runtime import Services
from ingest.pipeline import ingest_paths
from kb.encoder import TextEncoder
from kb.index import IndexOptions, read_meta
from kb.lexical import LexicalIndex
from kb.query_cache import QueryCache
from kb.search import KnowledgeBase
from tests.conftest import EXAMPLE_FAQ, RecordingEncoder
from tests.test_batching import QUESTIONS


async def test_hnsw_above_the_threshold_ranks_as_flat_does(services: Services) -> None:
    report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    assert report.added > 5 and not report.failed
    await services.kb.sync(services.sessions)
    index_dir = services.settings.kb.index_dir
    hnsw = KnowledgeBase(
        services.encoder, index_dir / "hnsw", batch_window=None, index_options=IndexOptions(hnsw_above=5)
    )
    await hnsw.sync(services.sessions)
    assert services.kb._snapshot.indexes[0].kind == "flat"
    assert hnsw._snapshot.indexes[0].kind == "hnsw" and hnsw.vectors[0] > 5
    meta = read_meta(index_dir / "hnsw")
    assert meta is not None and meta.kind == "hnsw"

    flat_hits = services.kb.search_sync(QUESTIONS, k=3)
    for flat, approximate in zip(flat_hits, hnsw.search_sync(QUESTIONS, k=3), strict=True):
        assert [h.article_key for h in approximate] == [h.article_key for h in flat]
        assert [h.score for h in approximate] == pytest.approx([h.score for h in flat], abs=1e-5)

    # Another threshold makes the cached index the wrong kind: the next start rebuilds it flat.
    again = KnowledgeBase(services.encoder, index_dir / "hnsw", batch_window=None)
    await again.sync(services.sessions)
    assert again._snapshot.indexes[0].kind == "flat"
    meta = read_meta(index_dir / "hnsw")
    assert meta is not None and meta.kind == "flat"


def test_query_cache_encodes_each_question_once(encoder: TextEncoder) -> None:
    counting = RecordingEncoder(encoder)
    cache = QueryCache(counting, size=2)
    first = cache.encode(["how do I reset my password", "refund", "how do I reset my password"])
    assert counting.texts == ["how do I reset my password", "refund"]
    again = cache.encode(["  how do I   reset my password ", "refund"])
    assert counting.texts == ["how do I reset my password", "refund"]  # whitespace aside, the same
    assert (cache.stats.hits, cache.stats.misses) == (2, 3)
    np.testing.assert_allclose(again, first[:2], atol=1e-6)
    np.testing.assert_allclose(first[1], encoder.encode(["refund"], kind="query")[0], atol=1e-5)

    cache.encode(["where is my invoice"])  # the least recently used one goes: the password
    assert len(cache) == 2
    cache.encode(["refund", "how do I reset my password"])
    assert counting.texts[-1] == "how do I reset my password"

    off = QueryCache(counting, size=0)
    off.encode(["refund"])
    off.encode(["refund"])
    assert counting.texts[-2:] == ["refund", "refund"] and len(off) == 0


async def test_a_cached_question_sees_the_new_kb_revision(
    services: Services, encoder: TextEncoder, tmp_path: Path
) -> None:
    await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=services.encoder)
    counting = RecordingEncoder(encoder)
    kb = KnowledgeBase(counting, services.settings.kb.index_dir, batch_window=None)
    await kb.sync(services.sessions)
    question = "can I pay for the subscription with bitcoin"
    before = kb.search_sync([question])[0]
    assert all("bitcoin" not in h.title.lower() for h in before)

    extra = tmp_path / "crypto.md"
    extra.write_text(
        "# Payments\n\n### Can I pay with bitcoin?\n\nYes: choose *Crypto* at checkout; we accept bitcoin.\n"
    )
    report = await ingest_paths([extra], sessions=services.sessions, encoder=services.encoder)
    assert report.added == 1
    revision = kb.revision
    assert await kb.sync(services.sessions) and kb.revision > revision
    counting.clear()

    after = kb.search_sync([question])[0]
    assert counting.texts == []  # the query's vector came from the cache...
    assert after[0].title == "Can I pay with bitcoin?"  # ...the hits from the new revision


def test_lexical_top_matches_a_full_sort() -> None:
    documents = [
        "reset the password of your account",
        "reset your password on the web app",
        "cancel a subscription",
        "refund of a subscription payment",
        "password password reset",
        "the web app and the desktop app",
    ] * 3
    lexical = LexicalIndex(documents)
    queries = ["how do I reset my password", "subscription refund", "desktop app", "nothing matches xyz"]
    scores = lexical.scores(queries)
    for query, row, top in zip(queries, scores, lexical.top(queries, 4), strict=True):
        expected = [int(d) for d in np.lexsort((np.arange(len(row)), -row)) if row[d] > 0][:4]
        assert [doc for doc, _ in top] == expected, query
        assert [value for _, value in top] == pytest.approx([float(row[d]) for d in expected])
    assert lexical.top(["nothing matches xyz"], 4) == [[]]
    assert LexicalIndex([]).top(["password"], 4) == [[]]
