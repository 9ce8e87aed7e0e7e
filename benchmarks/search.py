# ruff: noqa: E402 (imports after the sys.path fix below)
"""Search-only micro-benchmark: flat vs HNSW vector index, and the lexical channel, by size.

    .venv/bin/python benchmarks/search.py [--sizes 10000 100000 200000] [--ef 64 128 256]
        [--queries 200]

For each size N (vectors), builds N generated KB vectors the way ``benchmarks/e2e.py`` does (the
real model's vector of each question pattern and answer chunk plus per-entry noise), then a flat
index and an HNSW index (``kb.index``, M and efConstruction as configured there) and prints, per
index: build, save and load seconds, per-query latency (one query per call, as at 10 messages/s,
p50 and p95), top-1 agreement and recall@10 against the flat index for real paraphrased questions
encoded by the model, and the RSS the index added. Then the lexical channel over N/2 documents:
build seconds and per-query ``LexicalIndex.top``. Finally one query encoded alone, and from the
query cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ingest.py is named like the `ingest` package; keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import gc
import importlib.util
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable

import numpy as np

from kb.encoder import SentenceEncoder
from kb.index import IndexOptions, Row, VectorIndex
from kb.lexical import LexicalIndex
from kb.query_cache import QueryCache
from kb.texts import embedding_items


def _e2e():  # the generator of benchmarks/e2e.py (a script, not a package)
    spec = importlib.util.spec_from_file_location("e2e", Path(__file__).with_name("e2e.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["e2e"] = module
    spec.loader.exec_module(module)
    return module


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(call: Callable[[int], object], repeat: int) -> tuple[float, float]:
    """p50 and p95 in ms of ``repeat`` calls (``call(0)``, ``call(1)``...)."""
    samples = []
    for n in range(repeat):
        started = time.perf_counter()
        call(n)
        samples.append(time.perf_counter() - started)
    return float(np.percentile(samples, 50)) * 1000, float(np.percentile(samples, 95)) * 1000


def reloaded(index: VectorIndex, options: IndexOptions) -> tuple[VectorIndex, float, float]:
    """``index`` saved and loaded again (with ``options``), and the seconds each took."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        index.save(Path(folder))
        saved = time.perf_counter() - started
        started = time.perf_counter()
        index = VectorIndex.load(Path(folder), model_id=index.model_id, dim=index.dim, options=options)
        return index, saved, time.perf_counter() - started


def vector_indexes(args: argparse.Namespace, patterns: object, texts: list[str], queries: np.ndarray) -> None:
    print(f"{'vectors':>8} {'index':<12} {'build s':>8} {'save s':>7} {'load s':>7} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'top-1':>6} {'rec@10':>7} {'+RSS MB':>8}")  # fmt: skip
    dim = queries.shape[1]
    for size in sorted(args.sizes):
        vectors = patterns.vectors(texts[:size])  # type: ignore[attr-defined]
        rows = [Row(i + 1, i // 2 + 1, i // 2 + 1, "en", "question") for i in range(size)]
        exact: list[list[int]] = []
        kinds = [("flat", IndexOptions(hnsw_above=size))]
        kinds += [(f"hnsw ef={ef}", IndexOptions(hnsw_above=0, ef_search=ef)) for ef in args.ef]
        hnsw: VectorIndex | None = None  # built once: efSearch is a search-time setting
        for name, options in kinds:
            gc.collect()
            before = rss_mb()
            started = time.perf_counter()
            if hnsw is None or name == "flat":
                index = VectorIndex.build(
                    model_id="m", dim=dim, vectors=vectors, rows=rows, revision=1, options=options
                )
                build = time.perf_counter() - started
            else:
                index, build = hnsw, 0.0
            index, saved, loaded = reloaded(index, options)
            if index.kind == "hnsw":
                hnsw = index
            added = rss_mb() - before
            found = [[r.embedding_id for r, _ in hits] for hits in index.search_batch(queries, 64)]
            exact = exact or found
            top1 = np.mean([f[:1] == e[:1] for f, e in zip(found, exact, strict=True)])
            recall = np.mean([len(set(f[:10]) & set(e[:10])) / 10 for f, e in zip(found, exact, strict=True)])
            p50, p95 = timed(lambda n, i=index: i.search_batch(queries[[n % len(queries)]], 64), args.queries)
            print(f"{size:>8} {name:<12} {build:>8.2f} {saved:>7.2f} {loaded:>7.2f} {p50:>7.2f} {p95:>7.2f} "
                  f"{top1:>6.3f} {recall:>7.3f} {added:>8.0f}", flush=True)  # fmt: skip
        del index, hnsw
        gc.collect()


def lexical_indexes(args: argparse.Namespace, entries: list, questions: list[str]) -> None:
    print(f"\n{'documents':>9} {'lexical build s':>16} {'top p50 ms':>11} {'top p95 ms':>11} {'+RSS MB':>8}")
    for size in sorted(args.sizes):
        documents = [f"{e.question} {e.answer}" for e in entries[: size // 2]]
        gc.collect()
        before = rss_mb()
        started = time.perf_counter()
        lexical = LexicalIndex(documents)
        build = time.perf_counter() - started
        added = rss_mb() - before
        p50, p95 = timed(lambda n, x=lexical: x.top([questions[n % len(questions)]], 20), args.queries)
        print(f"{size // 2:>9} {build:>16.2f} {p50:>11.2f} {p95:>11.2f} {added:>8.0f}", flush=True)
        del lexical


def main(args: argparse.Namespace) -> None:
    e2e = _e2e()
    model = SentenceEncoder()
    print(f"{os.cpu_count()} CPUs, load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    largest = max(args.sizes)
    entries = e2e.generate(largest // 2 + 1)
    plans = [embedding_items(question=e.question, alt_questions=[], answer=e.answer) for e in entries]
    texts = [text for plan in plans for _, _, text in plan][:largest]
    patterns = e2e.PatternVectors(model)
    patterns.prepare(texts)
    rng = random.Random(5)
    asked = entries[: min(args.sizes) // 2]  # questions about entries every size holds
    questions = [e2e.question_for(rng.choice(asked), rng) for _ in range(args.queries)]
    queries = model.encode(questions, kind="query")
    print(f"vectors generated; RSS {rss_mb():.0f} MB\n")
    vector_indexes(args, patterns, texts, queries)
    lexical_indexes(args, entries, questions)
    cache = QueryCache(model)
    alone = timed(lambda n: model.encode([questions[n % len(questions)]], kind="query"), args.queries)
    cache.encode(questions)
    cached = timed(lambda n: cache.encode([questions[n % len(questions)]]), args.queries)
    print(f"\none query encoded alone: p50 {alone[0]:.2f} ms, p95 {alone[1]:.2f} ms; "
          f"from the query cache: p50 {cached[0]:.3f} ms")  # fmt: skip
    print(f"peak RSS {peak_mb():.0f} MB; load average now {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 200_000])
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256], help="HNSW efSearch values")
    parser.add_argument("--queries", type=int, default=200)
    main(parser.parse_args())
