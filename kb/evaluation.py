"""Retrieval quality of a loaded knowledge base against labelled queries.

Queries come in the ``queries.jsonl`` format of ``shared/data/eval``: ``query``, ``faq_id``
(``null`` when nothing in the KB answers it), optional ``faq_ids`` (every correct entry), ``lang``.
In-scope queries give Recall@1, Recall@3 and MRR@10; out-of-scope ones give the share the
decision would (wrongly) answer. Latency is one query at a time, end to end (encode + search).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kb.decision import Action, Decision, Thresholds, decide
from kb.search import Hit, KnowledgeBase


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
    outcomes = defaultdict(list)  # lang -> what the bot did with each in-scope query (see outcome)
    out_answered = []
    for query, hits in zip(queries, hits_per_query, strict=True):
        decision = decide(hits, thresholds, cross_lingual=kb.cross_lingual(query.text, language=query.lang))
        if query.expected:
            keys = [h.article_key for h in hits]
            rank = next((i + 1 for i, key in enumerate(keys) if key in query.expected), None)
            in_scope[query.lang].append(rank)
            outcomes[query.lang].append(outcome(decision, query.expected))
        else:
            out_answered.append(decision.action is Action.ANSWER)

    def metrics(ranks: list[int | None]) -> dict[str, float]:
        n = len(ranks) or 1
        return {
            "recall_at_1": sum(r == 1 for r in ranks) / n,
            "recall_at_3": sum(r is not None and r <= 3 for r in ranks) / n,
            "mrr_at_10": sum(1 / r for r in ranks if r is not None and r <= 10) / n,
        }

    def shares(done: list[str]) -> dict[str, float]:
        n = len(done) or 1
        return {f"{kind}_rate": round(done.count(kind) / n, 4) for kind in OUTCOMES}

    all_ranks = [r for ranks in in_scope.values() for r in ranks]
    overall = metrics(all_ranks)
    return {
        **{name: round(value, 4) for name, value in overall.items()},
        "n_in_scope": len(all_ranks),
        "in_scope": shares([o for done in outcomes.values() for o in done]),
        "out_of_scope": {
            "n": len(out_answered),
            "answered_rate": round(sum(out_answered) / len(out_answered), 4) if out_answered else None,
        },
        "by_lang": {
            lang: {
                "n": len(ranks),
                "recall_at_1": round(metrics(ranks)["recall_at_1"], 4),
                "mrr_at_10": round(metrics(ranks)["mrr_at_10"], 4),
                **shares(outcomes[lang]),
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
            "margin_floor": thresholds.floor,
            "cross_lingual_suggest": thresholds.cross_lingual_suggest,
        },
    }


# What the bot did with an in-scope query: answered it right or wrong, offered the right entry
# among its "did you mean" buttons or only wrong ones, or escalated it (no answer, no button).
OUTCOMES = ("answered_right", "answered_wrong", "offered_right", "offered_wrong", "escalated")


def outcome(decision: Decision, expected: frozenset[str]) -> str:
    if decision.action is Action.ANSWER:
        return "answered_right" if decision.chosen[0].article_key in expected else "answered_wrong"
    if decision.action is Action.SUGGEST:
        return "offered_right" if any(h.article_key in expected for h in decision.chosen) else "offered_wrong"
    return "escalated"


# -- choosing the thresholds ----------------------------------------------------------------

# The grid benchmarks/thresholds.py sweeps; the shipped defaults are one of its points.
ANSWER_GRID = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90)
MARGIN_GRID = (0.05, 0.10, 0.15, 0.20, 1.0)  # 1.0: no margin rule
FLOOR_GRID = (0.50, 0.60, 0.65, 0.70, 0.75)  # the margin rule's floor (0.50: the suggest threshold)


def threshold_grid(suggest: float) -> list[Thresholds]:
    """Every point of the grid that is a valid rule with this suggest threshold: answer x margin x
    floor, a floor only up to the answer threshold (above it the margin rule never fires), one
    point for "no margin rule" per answer threshold."""
    grid = []
    for answer in ANSWER_GRID:
        low = min(suggest, answer)
        for margin in MARGIN_GRID:
            floors = sorted({min(max(f, low), answer) for f in FLOOR_GRID}) if margin < 1.0 else [low]
            grid += [Thresholds(answer=answer, suggest=low, margin=margin, margin_floor=f) for f in floors]
    return grid


def _normalised(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" ?.!")


def verbatim_out_of_scope(queries: Sequence[LabelledQuery], kb_questions: Sequence[str]) -> list[bool]:
    """Per query: labelled out of scope, yet word for word one of the KB's questions (case, spacing
    and closing punctuation aside). Such a label is stale (the entry was written from that very
    question): answering it is right, so the trade-off reports its out-of-scope rate without them
    as well."""
    known = {_normalised(q) for q in kb_questions}
    return [not q.expected and _normalised(q.text) in known for q in queries]


@dataclass(frozen=True, slots=True)
class TradeOff:
    """What one set of thresholds does on one labelled set (rates in [0, 1]; None: no such query)."""

    answer: float
    margin: float
    margin_floor: float
    in_scope_answered: float | None
    answers_right: float | None  # of the in-scope queries answered, the share whose top hit is right
    out_of_scope_answered: float | None
    out_of_scope_answered_clean: float | None  # the same without the verbatim ones (see above)
    utility: float  # per query: +1 for a right answer, -cost for a wrong one, 0 otherwise
    # each query's utility, in order, then each held-out trial's (what the noise of a difference
    # is measured from)
    outcomes: tuple[float, ...] = field(default=(), repr=False, compare=False)
    # of the in-scope queries asked of a KB without their entries (trade_off's held_out), the
    # share answered (always wrong); None: no such trial
    held_out_answered: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "outcomes"}


def trade_off(
    queries: Sequence[LabelledQuery],
    results: Sequence[Sequence[Hit]],
    thresholds: Thresholds,
    *,
    verbatim: Sequence[bool] | None = None,
    held_out: Sequence[Sequence[Hit] | None] | None = None,
    cost: float = 2.0,
) -> TradeOff:
    """The decision ``thresholds`` would take on every query, summed up. ``results``: the hits of
    each query, best first (``search_sync`` output); ``cost``: what a wrong answer (an
    out-of-scope one included) costs, in right answers. ``held_out``: per query, its hits in a
    KB that lacks the entries it expects (``bot.evaluation.search_halves``; None: not asked):
    each is one more trial, where any answer is wrong. A set without unanswerable questions
    prices a wrong answer this way too."""
    verbatim = verbatim if verbatim is not None else [False] * len(queries)
    held_out = held_out if held_out is not None else [None] * len(queries)
    if len(held_out) != len(queries):
        raise ValueError(f"{len(held_out)} held-out hit lists for {len(queries)} queries")
    n_in = n_in_answered = n_right = n_out = n_out_answered = n_clean = n_clean_answered = 0
    outcomes = []
    for query, hits, stale in zip(queries, results, verbatim, strict=True):
        decision = decide(hits, thresholds)
        answered = decision.action is Action.ANSWER
        right = answered and bool(query.expected) and decision.chosen[0].article_key in query.expected
        outcomes.append(1.0 if right else -cost if answered else 0.0)
        if query.expected:
            n_in += 1
            n_in_answered += answered
            n_right += right
        else:
            n_out += 1
            n_out_answered += answered
            if not stale:
                n_clean += 1
                n_clean_answered += answered
    n_held = n_held_answered = 0
    for hits in held_out:
        if hits is not None:
            answered = decide(hits, thresholds).action is Action.ANSWER
            n_held += 1
            n_held_answered += answered
            outcomes.append(-cost if answered else 0.0)
    wrong = n_in_answered - n_right + n_out_answered + n_held_answered

    def rate(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    return TradeOff(
        answer=thresholds.answer,
        margin=thresholds.margin,
        margin_floor=thresholds.floor,
        in_scope_answered=rate(n_in_answered, n_in),
        answers_right=rate(n_right, n_in_answered),
        out_of_scope_answered=rate(n_out_answered, n_out),
        out_of_scope_answered_clean=rate(n_clean_answered, n_clean),
        utility=(n_right - cost * wrong) / len(outcomes) if outcomes else 0.0,
        outcomes=tuple(outcomes),
        held_out_answered=rate(n_held_answered, n_held),
    )


def _mean_utility(sweeps: Sequence[Sequence[TradeOff]], i: int) -> float:
    return sum(sweep[i].utility for sweep in sweeps) / len(sweeps)


def utility_noise(sweeps: Sequence[Sequence[TradeOff]], i: int, j: int) -> float:
    """The standard error of the difference in mean utility between grid points ``i`` and ``j``,
    paired by query (both rules see the same hits): per set, the spread of the per-query
    differences over the square root of the set's size; over the sets, as for their mean.
    0 without per-query outcomes."""
    variance = 0.0
    for sweep in sweeps:
        a, b = sweep[i].outcomes, sweep[j].outcomes
        if len(a) > 1 and len(a) == len(b):
            variance += statistics.variance([x - y for x, y in zip(a, b, strict=True)]) / len(a)
    return math.sqrt(variance) / len(sweeps)


def choose_thresholds(sweeps: Sequence[Sequence[TradeOff]]) -> TradeOff:
    """The thresholds to ship, from several labelled sets (one sweep per set, over the same grid,
    in the same order): among the grid points whose mean utility is within one standard error of
    the best one's (``utility_noise``: the sets cannot tell them apart), the one with the highest
    margin floor, then the best mean utility, then the first on the grid. The floor wins because
    the eval sets are large KBs: in a small one the top hit leads a short list far more often,
    right or not, and the margin rule fires at low scores. Only sets with out-of-scope queries
    can tell what a threshold costs in wrong answers to questions the KB does not cover: include
    one."""
    if not sweeps or not sweeps[0]:
        raise ValueError("nothing to choose from")
    points = range(len(sweeps[0]))
    best = max(points, key=lambda i: (_mean_utility(sweeps, i), -i))
    top = _mean_utility(sweeps, best)
    close = [i for i in points if top - _mean_utility(sweeps, i) <= utility_noise(sweeps, best, i) + 1e-12]
    chosen = max(close, key=lambda i: (sweeps[0][i].margin_floor, _mean_utility(sweeps, i), -i))
    return sweeps[0][chosen]
