"""Sweep the answer threshold, the margin and its floor on labelled sets; pick the defaults from the curve.

    .venv/bin/python benchmarks/thresholds.py [SET_DIR ...] [--cost 2] [--lexical-weight 0.2] [--cache DIR]
                                              [--held-out] [--scratch DIR]

(default: every set of ../shared/data/eval).

Each set is searched in a throwaway KB built by the normal ingest, with the configured encoders.
With ``--held-out``, each in-scope query is also searched in a KB of half of the set's entries,
the half without the query's own (alternately by id, ``bot.evaluation.search_halves``): a question
on the KB's subject that the KB cannot answer, so a set without unanswerable queries prices a
wrong answer too (one such trial per answerable question: as if half the traffic were questions
the KB does not hold; see RESULTS.md, 2026-12-07). With ``--cache``, the hits are kept in DIR and
a rerun with the same set and lexical weight skips the search (delete DIR after changing the
ranking). Then, for every (answer threshold, margin, margin floor) on the grid
(``kb.evaluation.threshold_grid``), with the configured suggest threshold: the share of in-scope
queries answered, the share of those answers that are right (top-1 is a correct entry), the share
of out-of-scope queries answered (always wrong), the same without out-of-scope queries that are
word for word a KB question (stale labels: see ``kb.evaluation``), the share of held-out trials
answered (always wrong), and the utility: +1 per right answer, ``-cost`` per wrong one (out of
scope and held out included), 0 for a "did you mean" or a hand-over, per query or trial. The pick
(``kb.evaluation.choose_thresholds``): among the grid points within one standard error of the best
mean utility over the sets, the highest margin floor.
Prints tables; figures go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import pickle
import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path and benchmarks/ingest.py would shadow the
# ingest package: put the repository first instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from bot.config import load_settings
from bot.evaluation import reranking_any_batch, search_halves, throwaway_kb
from kb.evaluation import (
    TradeOff,
    choose_thresholds,
    read_queries,
    threshold_grid,
    trade_off,
    utility_noise,
    verbatim_out_of_scope,
)

SETS = ["stackfaq", "covid-faq-stanford", "bitcoin-faq-xling"]


def _kb_questions(faqs: Path) -> list[str]:
    questions = []
    for line in faqs.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            questions += [record["question"], *record.get("examples", []), *record.get("alt_questions", [])]
    return questions


async def _search(directory: Path, settings, queries, cache: Path | None, scratch: Path | None):
    """Each query's hits in the set's KB, and (given ``scratch``) in the half of it without the
    query's entries (else None). A cached search without the halves is completed, not redone."""
    key = hashlib.sha256(
        b"hits, then held-out hits or None\n"  # what the pickle holds
        + (directory / "faqs.jsonl").read_bytes()
        + (directory / "queries.jsonl").read_bytes()
        + settings.kb.model_dump_json(
            include={"model", "multilingual_model", "rerank_model", "model_languages", "lexical_weight"}
        ).encode()
    ).hexdigest()[:16]
    path = cache / f"{directory.name}-{key}.pickle" if cache else None
    results, held_out = pickle.loads(path.read_bytes()) if path and path.exists() else (None, None)
    settings = reranking_any_batch(settings)  # all queries in one call, each ranked as if alone
    searched = results is None or (scratch is not None and held_out is None)
    if results is None:
        async with throwaway_kb(settings, directory / "faqs.jsonl") as services:
            texts, languages = [q.text for q in queries], [q.lang for q in queries]
            results = await asyncio.to_thread(services.kb.search_sync, texts, k=10, languages=languages)
    if scratch is not None and held_out is None:
        halves = await search_halves(settings, directory / "faqs.jsonl", queries, scratch)
        held_out = halves.held_out(queries)
    if path and searched:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps((results, held_out)))
    return results, held_out if scratch is not None else None


async def sweep_set(
    directory: Path, settings, cost: float, cache: Path | None, scratch: Path | None
) -> list[TradeOff]:
    """``scratch``: where the halves' files go, for held-out trials (None: none)."""
    queries = read_queries(directory / "queries.jsonl")
    verbatim = verbatim_out_of_scope(queries, _kb_questions(directory / "faqs.jsonl"))
    results, trials = await _search(directory, settings, queries, cache, scratch)
    n_held = sum(hits is not None for hits in trials) if trials else 0
    suggest = settings.kb.suggest_threshold
    n_in = sum(bool(q.expected) for q in queries)
    print(
        f"\n{directory.name}: {n_in} in scope, {len(queries) - n_in} out of scope "
        f"({sum(verbatim)} of them word for word a KB question); {n_held} in-scope ones also asked of "
        f"the half of the KB without their entries (held-out trials); suggest {suggest}, cost {cost}"
    )
    print(
        f"{'answer':>6} {'margin':>6} {'floor':>5} {'in-scope ans':>12} {'right':>7} {'OOS ans':>8} "
        f"{'clean OOS':>9} {'held-out ans':>12} {'utility':>8}"
    )
    rows = []
    for rule in threshold_grid(suggest):
        row = trade_off(queries, results, rule, verbatim=verbatim, held_out=trials, cost=cost)
        rows.append(row)
        print(f"{_point(row)} {_figures(row)} {row.utility:>+8.3f}", flush=True)
    return rows


def _point(row: TradeOff) -> str:
    return f"{row.answer:>6.2f} {row.margin:>6.2f} {row.margin_floor:>5.2f}"


def _figures(row: TradeOff) -> str:
    return (
        f"{_pct(row.in_scope_answered):>12} {_pct(row.answers_right):>7} "
        f"{_pct(row.out_of_scope_answered):>8} {_pct(row.out_of_scope_answered_clean):>9} "
        f"{_pct(row.held_out_answered):>12}"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


async def main_async(
    directories: list[Path],
    cost: float,
    lexical_weight: float | None,
    cache: Path | None,
    scratch: Path | None,
) -> None:
    settings = load_settings()
    if lexical_weight is not None:
        settings = settings.model_copy(
            update={"kb": settings.kb.model_copy(update={"lexical_weight": lexical_weight})}
        )
    sweeps = [await sweep_set(directory, settings, cost, cache, scratch) for directory in directories]
    chosen = choose_thresholds(sweeps)
    kb = settings.kb
    means = [sum(sweep[i].utility for sweep in sweeps) / len(sweeps) for i in range(len(sweeps[0]))]
    best = max(range(len(means)), key=lambda i: (means[i], -i))
    print(f"\nmean utility (cost {cost}) over {', '.join(d.name for d in directories)}, best 20:")
    print(f"{'answer':>6} {'margin':>6} {'floor':>5} {'utility':>8} {'below best':>10} {'noise':>6}")
    for i in sorted(range(len(means)), key=lambda i: (-means[i], i))[:20]:
        mark = "  <- chosen" if sweeps[0][i] is chosen else ""
        print(
            f"{_point(sweeps[0][i])} {means[i]:>+8.3f} {means[best] - means[i]:>10.3f} "
            f"{utility_noise(sweeps, best, i):>6.3f}{mark}"
        )
    print(
        f"\nchosen (the highest margin floor within one standard error of the best): "
        f"answer_threshold = {chosen.answer:.2f}, answer_margin = {chosen.margin:.2f}, "
        f"margin_floor = {chosen.margin_floor:.2f} (configured: {kb.answer_threshold:.2f} / "
        f"{kb.answer_margin:.2f} / {kb.margin_floor or kb.suggest_threshold:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
    parser.add_argument("directories", type=Path, nargs="*", default=[default / name for name in SETS])
    parser.add_argument("--cost", type=float, default=2.0, help="a wrong answer's cost, in right answers")
    parser.add_argument("--lexical-weight", type=float, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="keep each set's hits here for reruns")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="price wrong answers also by each in-scope query asked of the half of the KB without "
        "its entries (not only by the sets' out-of-scope queries)",
    )
    parser.add_argument("--scratch", type=Path, default=Path("var/benchmarks/thresholds"))
    args = parser.parse_args()
    missing = [
        d for d in args.directories if not ((d / "faqs.jsonl").is_file() and (d / "queries.jsonl").is_file())
    ]
    if missing:
        parser.error(
            f"no faqs.jsonl and queries.jsonl in {', '.join(map(str, missing))} (is ../shared/data there?)"
        )
    logging.basicConfig(level=logging.WARNING)
    scratch = args.scratch if args.held_out else None
    if scratch:
        scratch.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args.directories, args.cost, args.lexical_weight, args.cache, scratch))


if __name__ == "__main__":
    main()
