"""Retrieval quality of a loaded knowledge base against labelled queries.

Queries come in the ``queries.jsonl`` format of ``shared/data/eval``: ``query``, ``faq_id``
(``null`` when nothing in the KB answers it), optional ``faq_ids`` (every correct entry), ``lang``.
In-scope queries give Recall@1, Recall@3 and MRR@10; out-of-scope ones give the share the
decision would (wrongly) answer. Latency is one query at a time, end to end (encode + search).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb.decision import Action, Thresholds, decide
from kb.search import KnowledgeBase


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    text: str
    expected: frozenset[str]  # empty: out of scope
    lang: str


def read_queries(path: Path) -> list[LabelledQuery]:
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ids = record.get("faq_ids") or ([record["faq_id"]] if record.get("faq_id") is not None else [])
            queries.append(
                LabelledQuery(
                    str(record["query"]), frozenset(str(i) for i in ids), record.get("lang") or "en"
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a query record ({exc})") from exc
    return queries


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def evaluate(kb: KnowledgeBase, queries: Sequence[LabelledQuery], thresholds: Thresholds) -> dict[str, Any]:
    hits_per_query = []
    latencies = []
    for query in queries:
        started = time.perf_counter()
        hits_per_query.append(kb.search_sync([query.text], k=10, language=query.lang)[0])
        latencies.append((time.perf_counter() - started) * 1000)

    in_scope = defaultdict(list)  # lang -> [(rank or None)]
    out_answered = []
    for query, hits in zip(queries, hits_per_query, strict=True):
        if query.expected:
            keys = [h.article_key for h in hits]
            rank = next((i + 1 for i, key in enumerate(keys) if key in query.expected), None)
            in_scope[query.lang].append(rank)
        else:
            out_answered.append(decide(hits, thresholds).action is Action.ANSWER)

    def metrics(ranks: list[int | None]) -> dict[str, float]:
        n = len(ranks) or 1
        return {
            "recall_at_1": sum(r == 1 for r in ranks) / n,
            "recall_at_3": sum(r is not None and r <= 3 for r in ranks) / n,
            "mrr_at_10": sum(1 / r for r in ranks if r is not None and r <= 10) / n,
        }

    all_ranks = [r for ranks in in_scope.values() for r in ranks]
    overall = metrics(all_ranks)
    return {
        **{name: round(value, 4) for name, value in overall.items()},
        "n_in_scope": len(all_ranks),
        "out_of_scope": {
            "n": len(out_answered),
            "answered_rate": round(sum(out_answered) / len(out_answered), 4) if out_answered else None,
        },
        "by_lang": {
            lang: {
                "n": len(ranks),
                "recall_at_1": round(metrics(ranks)["recall_at_1"], 4),
                "mrr_at_10": round(metrics(ranks)["mrr_at_10"], 4),
            }
            for lang, ranks in sorted(in_scope.items())
        },
        "latency_ms": {
            "p50": round(statistics.median(latencies), 2) if latencies else 0.0,
            "p95": round(_percentile(latencies, 0.95), 2),
        },
        "thresholds": {
            "answer": thresholds.answer,
            "suggest": thresholds.suggest,
            "margin": thresholds.margin,
        },
    }
