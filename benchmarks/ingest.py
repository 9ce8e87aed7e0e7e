"""Ingest throughput: 10,000 generated entries in, then the same file again (unchanged).

    .venv/bin/python benchmarks/ingest.py [--entries 10000] [--repeat 1]

Prints, for the first ingest (parse, language, hash, embed, write, index), two times: until the
KB *answers* (every entry written with the primary model's vectors and the index synced: English
questions find them) and until it is *complete* (the other models' vectors, the multilingual
model's and the re-ranker's, which ingest embeds after the files, written too and the index
synced again), each as entries/s; then the wall time of the unchanged re-ingest. With
``HELPDESK_KB__MULTILINGUAL_MODEL="" HELPDESK_KB__RERANK_MODEL=""`` (one model) the two are the
same. Goals (issue 3): >= 150 entries/s on 2 cores; re-ingest < 10 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is named like the `ingest` package; keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import csv
import logging
import random
import statistics
import tempfile
import time
from dataclasses import dataclass

from bot.config import Settings
from bot.runtime import open_services
from ingest.pipeline import IngestOptions, ingest_paths
from kb.backlog import backfills, backlogs

SUBJECTS = [
    "password",
    "invoice",
    "subscription",
    "account",
    "order",
    "refund",
    "delivery",
    "device",
    "profile",
    "team",
    "export",
    "import",
    "report",
    "backup",
    "login",
    "payment",
    "plan",
    "API key",
]
ACTIONS = [
    "reset",
    "change",
    "cancel",
    "download",
    "delete",
    "share",
    "restore",
    "update",
    "find",
    "move",
    "rename",
    "verify",
    "recover",
    "lock",
    "transfer",
]
PLACES = ["on the web app", "on Android", "on iPhone", "from the desktop app", "for my team",
          "in the admin console", "without email access", "after the trial", "in bulk",
          "via the API"]  # fmt: skip


def generate(path: Path, count: int) -> None:
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "question", "answer"])
        for i in range(count):
            action, subject, place = rng.choice(ACTIONS), rng.choice(SUBJECTS), rng.choice(PLACES)
            steps = " ".join(
                f"Step {n}: open {rng.choice(SUBJECTS)} settings and choose {rng.choice(ACTIONS)}."
                for n in range(1, rng.randint(2, 6))
            )
            writer.writerow([f"gen-{i:05d}", f"How do I {action} my {subject} {place} (#{i})?", steps])


def probe(path: Path, row: int) -> tuple[str, str]:
    """The key and question of one generated entry."""
    with path.open(newline="", encoding="utf-8") as handle:
        for i, record in enumerate(csv.DictReader(handle)):
            if i == row:
                return record["key"], record["question"]
    raise ValueError(f"{path} has no row {row}")


@dataclass(frozen=True, slots=True)
class Run:
    answerable: float
    complete: float
    reingest: float


async def run_once(count: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="helpdesk-bench-") as tmp:
        data = Path(tmp) / "generated.csv"
        generate(data, count)
        settings = Settings(
            database={"url": f"sqlite+aiosqlite:///{tmp}/bench.db"}, kb={"index_dir": f"{tmp}/index"}
        )
        async with open_services(settings, sync=False) as services:
            sessions, encoder, kb = services.sessions, services.encoder, services.kb
            # What `helpdesk ingest` does, in two timed halves: the files, then the backlog.
            options = IngestOptions(detect_languages=True, backfill=False)
            started = time.perf_counter()
            first = await ingest_paths([data], sessions=sessions, encoder=encoder, options=options)
            await kb.sync(sessions)
            answerable = time.perf_counter() - started
            probing = time.perf_counter()
            key, question = probe(data, count // 2)
            hits = await kb.search(question)  # answerable means found: the middle entry, by its question
            assert hits and hits[0].article_key == key, (key, hits[:1])
            started += time.perf_counter() - probing
            for backfill in backfills(encoder):
                await backfill.run(sessions)
            await kb.sync(sessions)
            complete = time.perf_counter() - started
            left = await backlogs(sessions, encoder)
            started = time.perf_counter()
            second = await ingest_paths([data], sessions=sessions, encoder=encoder, options=options)
            await kb.sync(sessions)
            reingest = time.perf_counter() - started
    assert first.added == count and second.unchanged == count, (first.as_dict(), second.as_dict())
    assert not any(b.pending for b in left), left
    return Run(answerable, complete, reingest)


def describe(count: int, run: Run) -> str:
    return (
        f"answers: {count} entries in {run.answerable:.1f} s = {count / run.answerable:.0f} entries/s; "
        f"complete: {run.complete:.1f} s = {count / run.complete:.0f} entries/s; "
        f"unchanged re-ingest: {run.reingest:.2f} s"
    )


async def main(count: int, repeat: int) -> None:
    runs = []
    for _ in range(repeat):
        runs.append(await run_once(count))
        print(describe(count, runs[-1]), flush=True)
    if repeat > 1:
        median = Run(
            *(statistics.median(getattr(r, f) for r in runs) for f in ("answerable", "complete", "reingest"))
        )
        print(f"median of {repeat}: {describe(count, median)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs (each in a fresh database); prints the median"
    )
    logging.basicConfig(level=logging.WARNING)
    args = parser.parse_args()
    asyncio.run(main(args.entries, args.repeat))
