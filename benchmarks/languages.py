"""Questions in other languages than the KB's: what the thresholds do with them, per language.

    .venv/bin/python benchmarks/languages.py [SET_DIR ...] [--most-escalated 0.05]

(default: ../shared/data/eval/bitcoin-faq-xling, English entries, questions in 30 languages).

A set of this kind has no question its KB cannot answer, so each set is split in two halves of
entries (alternately, by id): every question is searched in a throwaway KB of its own entry's
half (in scope) and in one of the other half (held out: its entry is missing, the bot should not
answer it). For each cross-lingual suggest threshold on a grid (the other thresholds as
configured), the decisions are summed up: in-scope questions answered (and the share of those
right), offered "did you mean" buttons (and the share of all with a right one among them),
escalated; held-out questions answered (always wrong), offered buttons, escalated; and the
languages whose answerable questions are escalated most. The pick: the highest threshold on the
grid that escalates at most ``--most-escalated`` of the answerable questions. Prints tables;
figures go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

# Run as a script, this folder comes first on sys.path and benchmarks/ingest.py would shadow the
# ingest package: put the repository first instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from bot.config import load_settings
from bot.evaluation import reranking_any_batch, search_halves
from bot.runtime import thresholds_of
from kb.decision import Thresholds, decide
from kb.evaluation import LabelledQuery, outcome, read_queries
from kb.search import Hit

GRID = (0.50, 0.45, 0.40, 0.35, 0.30, 0.25)
HITS = 10


async def _search_halves(directory: Path, settings, scratch: Path):
    """(query, told cross-lingual, hits in its own half's KB, hits in the other's) per in-scope
    query whose right entries all sit in one half."""
    queries = [q for q in read_queries(directory / "queries.jsonl") if q.expected]
    halves = await search_halves(settings, directory / "faqs.jsonl", queries, scratch, k=HITS)
    rows: list[tuple[LabelledQuery, bool, list[Hit], list[Hit]]] = []
    for qi, query in enumerate(queries):
        mine = halves.own(query)
        if mine is not None:
            rows.append((query, halves.foreign[qi], halves.hits[mine][qi], halves.hits[1 - mine][qi]))
    return rows


def _summary(rows, thresholds: Thresholds) -> dict:
    n = len(rows)
    counts: Counter[str] = Counter()
    escalated: Counter[str] = Counter()
    per_language: Counter[str] = Counter()
    for query, foreign, mine, other in rows:
        per_language[query.lang] += 1
        done = outcome(decide(mine, thresholds, cross_lingual=foreign), query.expected)
        counts[done] += 1
        escalated[query.lang] += done == "escalated"
        held_out = decide(other, thresholds, cross_lingual=foreign).action
        counts["held-out " + held_out.value] += 1
    rates = {lang: escalated[lang] / per_language[lang] for lang in per_language}
    answered = counts["answered_right"] + counts["answered_wrong"]
    return {
        "answered": answered / n,
        "right": counts["answered_right"] / max(answered, 1),
        "suggested": (counts["offered_right"] + counts["offered_wrong"]) / n,
        "offered right": (counts["answered_right"] + counts["offered_right"]) / n,
        "escalated": counts["escalated"] / n,
        "held-out answered": counts["held-out answer"] / n,
        "held-out suggested": counts["held-out suggest"] / n,
        "held-out escalated": counts["held-out escalate"] / n,
        "worst": sorted(rates.items(), key=lambda kv: (-kv[1], kv[0]))[:3],
        "escalated by language": rates,
    }


def _line(label: str, s: dict) -> str:
    worst = ", ".join(f"{lang} {rate:.0%}" for lang, rate in s["worst"])
    return (
        f"{label:>7} {s['answered']:>8.1%} {s['right']:>6.1%} {s['suggested']:>8.1%} "
        f"{s['offered right']:>10.1%} {s['escalated']:>9.1%} {s['held-out answered']:>9.1%} "
        f"{s['held-out suggested']:>9.1%} {s['held-out escalated']:>9.1%}  {worst}"
    )


async def main_async(directories: list[Path], most_escalated: float, scratch: Path) -> None:
    settings = load_settings()
    configured = thresholds_of(settings)
    for directory in directories:
        rows = await _search_halves(directory, reranking_any_batch(settings), scratch)
        print(
            f"\n{directory.name}: {len(rows)} questions ({sum(f for _, f, _, _ in rows)} told to be in "
            f"another language than the KB's), each in scope in one half's KB and held out of the "
            f"other's; answer {configured.answer}, margin {configured.margin} from "
            f"{configured.floor}, suggest {configured.suggest}"
        )
        print(
            f"{'x-suggest':>7} {'answered':>8} {'right':>6} {'suggest':>8} {'right shown':>10} "
            f"{'escalated':>9} {'HO answ.':>9} {'HO sugg.':>9} {'HO esc.':>9}  most escalated"
        )
        summaries = {}
        for threshold in GRID:
            summaries[threshold] = _summary(rows, replace(configured, cross_lingual_suggest=threshold))
            mark = "  <- configured" if threshold == configured.cross_lingual_suggest else ""
            print(_line(f"{threshold:.2f}", summaries[threshold]) + mark)
        fit = [t for t in GRID if summaries[t]["escalated"] <= most_escalated + 1e-9]
        pick = max(fit) if fit else min(GRID)
        print(
            f"\npick (the highest escalating at most {most_escalated:.0%} of answerable questions): "
            f"cross_lingual_suggest_threshold = {pick:.2f} "
            f"(configured: {configured.cross_lingual_suggest:.2f})"
        )
        before, after = summaries[GRID[0]], summaries[pick]
        print(f"escalated per language, at {GRID[0]:.2f} -> {pick:.2f}:")
        by_language = [
            f"{lang} {before['escalated by language'][lang]:.0%}->{after['escalated by language'][lang]:.0%}"
            for lang in sorted(before["escalated by language"])
        ]
        for start in range(0, len(by_language), 8):
            print("  " + "  ".join(by_language[start : start + 8]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "bitcoin-faq-xling"
    parser.add_argument("directories", type=Path, nargs="*", default=[default])
    parser.add_argument("--most-escalated", type=float, default=0.05, help="of the answerable questions")
    parser.add_argument("--scratch", type=Path, default=Path("var/benchmarks/languages"))
    args = parser.parse_args()
    missing = [d for d in args.directories if not (d / "faqs.jsonl").exists()]
    if missing:
        parser.error(f"no faqs.jsonl in {', '.join(map(str, missing))} (is ../shared/data there?)")
    args.scratch.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args.directories, args.most_escalated, args.scratch))


if __name__ == "__main__":
    main()
