"""Sweep the answer threshold on a labelled set: what the bot would answer, and how often wrongly.

    .venv/bin/python benchmarks/thresholds.py ../shared/data/eval/covid-faq-stanford [--lexical-weight 0.2]

For each answer threshold (the suggest threshold and the margin come from the config): the share
of in-scope queries answered, the share of those answers that are right (top-1 is a correct
entry), and the share of out-of-scope queries answered (always wrong). Prints a table; figures go
to benchmarks/RESULTS.md by hand, with the machine they ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import numpy as np

from bot.config import load_settings
from bot.evaluation import throwaway_kb
from kb.decision import Action, Thresholds, decide
from kb.evaluation import read_queries

GRID = [round(x, 2) for x in np.arange(0.40, 0.86, 0.025)]


async def sweep(directory: Path, lexical_weight: float | None) -> None:
    settings = load_settings()
    if lexical_weight is not None:
        settings = settings.model_copy(
            update={"kb": settings.kb.model_copy(update={"lexical_weight": lexical_weight})}
        )
    queries = read_queries(directory / "queries.jsonl")
    async with throwaway_kb(settings, directory / "faqs.jsonl") as services:
        results = services.kb.search_sync([q.text for q in queries], k=10)
        base = services.thresholds
    in_scope = np.array([bool(q.expected) for q in queries])
    correct = np.array(
        [bool(hits) and hits[0].article_key in q.expected for q, hits in zip(queries, results, strict=True)]
    )
    print(
        f"{directory.name}: {in_scope.sum()} in scope, {(~in_scope).sum()} out of scope, "
        f"lexical weight {settings.kb.lexical_weight}, suggest {base.suggest}, margin {base.margin}"
    )
    print(f"{'threshold':>9} {'in-scope answered':>18} {'answers right':>14} {'out-of-scope answered':>22}")
    for threshold in GRID:
        rule = Thresholds(answer=threshold, suggest=min(base.suggest, threshold), margin=base.margin)
        answered = np.array([decide(hits, rule).action is Action.ANSWER for hits in results])
        n_in = answered[in_scope].sum()
        right = (answered & correct)[in_scope].sum()
        oos = answered[~in_scope].mean() if (~in_scope).any() else float("nan")
        precision = right / n_in if n_in else float("nan")
        print(f"{threshold:>9.3f} {n_in / in_scope.sum():>18.1%} {precision:>14.1%} {oos:>22.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--lexical-weight", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(sweep(args.directory, args.lexical_weight))


if __name__ == "__main__":
    main()
